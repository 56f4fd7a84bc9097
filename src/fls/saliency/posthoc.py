"""Saliency maps of any trained cell: the model's own attention map, or a post-hoc method.

Every method answers the same question for a batch of uint8 stacks N x 4 x 84 x 84: how
much does each pixel of the 84 x 84 input matter to the policy? The answer is an
N x 84 x 84 map, float32, >= 0, on the grid of the agent's input, so the Atari-HEAD
scoring (fls.gaze_scores) and the videos (fls.video) treat them all alike.

- `model`: the attention map the model draws for free (FLS, DAQN, RS-PPO; not nature_cnn);
- `jacobian`: |d logit of the chosen action / d input| (Simonyan et al. 2014), max over the
  four frames of the stack; Captum's Saliency;
- `integrated_gradients`: Captum's IntegratedGradients of the chosen action's logit from a
  black stack, |attribution| max over the stack, like the Jacobian;
- `gradcam`: Captum's LayerGradCam of the chosen action's logit at the feature trunk's last
  conv (7 x 7 for the sparse models), ReLU'd, upsampled bilinearly to 84 x 84;
- `greydanus` / `greydanus_value`: the perturbation saliency of Greydanus et al. 2018 on the
  policy logits / on the value (written here, see `greydanus`).

The chosen action is the greedy one (argmax of the logits on the unperturbed stack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from fls.models import ActorCritic

INPUT = 84
GRADIENT_METHODS = ("jacobian", "integrated_gradients", "gradcam")
PERTURBATION_METHODS = ("greydanus", "greydanus_value")
METHODS = (*GRADIENT_METHODS, *PERTURBATION_METHODS)
MAPS = ("model", *METHODS)
LABELS = {"model": "own map", "jacobian": "Jacobian", "integrated_gradients": "Integrated Gradients",
          "gradcam": "Grad-CAM", "greydanus": "Greydanus", "greydanus_value": "Greydanus (value)"}


@dataclass(frozen=True)
class PostHocSettings:
    """What a post-hoc map depends on besides the model and the frame (conf/saliency/default.yaml)."""

    ig_steps: int = 32
    greydanus_stride: int = 5
    greydanus_mask_sigma: float = 5.0
    greydanus_blur_sigma: float = 3.0
    # perturbed stacks per forward pass: a Greydanus map is (84 / stride)^2 forwards per frame
    perturbation_batch: int = 1024

    def key(self) -> dict:
        """The settings that change a map's values (the batch changes only the speed)."""
        return {k: v for k, v in self.__dict__.items() if k != "perturbation_batch"}

    @classmethod
    def from_config(cls, cfg) -> PostHocSettings:
        return cls(ig_steps=int(cfg.ig_steps), greydanus_stride=int(cfg.greydanus.stride),
                   greydanus_mask_sigma=float(cfg.greydanus.mask_sigma),
                   greydanus_blur_sigma=float(cfg.greydanus.blur_sigma),
                   perturbation_batch=int(cfg.perturbation_batch))


def check_posthoc_config(cfg, prefix: str = "saliency.posthoc") -> None:
    """ValueError naming the first setting of conf/posthoc/ (at `prefix`) that cannot work."""
    checks = [("ig_steps", cfg.ig_steps, 2), ("greydanus.stride", cfg.greydanus.stride, 1),
              ("perturbation_batch", cfg.perturbation_batch, 1)]
    for key, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{prefix}.{key}={value}: expected an integer >= {low}")
    for key in ("mask_sigma", "blur_sigma"):
        value = cfg.greydanus[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{prefix}.greydanus.{key}={value}: expected a positive number of pixels")


def needs(method: str, model: ActorCritic) -> str | None:
    """Why `method` cannot draw a map of `model` (None: it can)."""
    if method not in MAPS:
        return f"{method} is not a saliency map; expected one of {', '.join(MAPS)}"
    if method == "model" and not model.has_saliency:
        return f"{model.name} has no attention map"
    return None


def draw(model: ActorCritic, obs: torch.Tensor, method: str,
         settings: PostHocSettings = PostHocSettings()) -> torch.Tensor:
    """The `method` map of each stack of `obs` (uint8 N x 4 x 84 x 84): N x 84 x 84, float32, >= 0."""
    why = needs(method, model)
    if why:
        raise ValueError(why)
    if method == "model":
        with torch.no_grad():
            return model.saliency(obs).float()
    frames = obs.to(next(model.parameters()).dtype) / 255.0
    if method in PERTURBATION_METHODS:
        head = "value" if method == "greydanus_value" else "policy"
        return greydanus(lambda x: model.forward_frames(x)[:2], frames, head, settings).float()
    return gradient_map(model, frames, method, settings).float()


# ---------------------------------------------------------------------------------------
# Gradient methods (Captum)
# ---------------------------------------------------------------------------------------


def gradient_map(model: ActorCritic, frames: torch.Tensor, method: str, settings: PostHocSettings) -> torch.Tensor:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    def logits(x: torch.Tensor) -> torch.Tensor:
        return model.forward_frames(x)[0]

    with torch.no_grad():
        actions = logits(frames).argmax(-1)
    # Captum differentiates with respect to the inputs: turn autograd on even when the
    # caller (an evaluation loop) has it off
    with torch.enable_grad():
        frames = frames.detach().requires_grad_()
        if method == "jacobian":
            attribution = Saliency(logits).attribute(frames, target=actions, abs=True)
            return attribution.detach().amax(dim=1)
        if method == "integrated_gradients":
            attribution = IntegratedGradients(logits).attribute(
                frames, baselines=torch.zeros_like(frames), target=actions, n_steps=settings.ig_steps,
                internal_batch_size=max(len(frames), 1) * settings.ig_steps)
            return attribution.detach().abs().amax(dim=1)
        if method == "gradcam":
            cam = LayerGradCam(logits, model.encoder.last_conv()).attribute(frames, target=actions,
                                                                            relu_attributions=True)
            up = LayerAttribution.interpolate(cam.detach(), (INPUT, INPUT), interpolate_mode="bilinear")
            return up.squeeze(1).clamp(min=0)
    raise ValueError(f"{method} is not a gradient method; expected one of {', '.join(GRADIENT_METHODS)}")


# ---------------------------------------------------------------------------------------
# Greydanus et al. 2018, "Visualizing and Understanding Atari Agents"
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def perturbation_masks(stride: int, sigma: float, size: int = INPUT) -> np.ndarray:
    """One mask per grid point (rows, then columns, every `stride` pixels from 0):
    a one-pixel disk blurred with `sigma` and scaled to a peak of 1, as their get_mask.
    scipy's gaussian_filter truncates at 4 sigma, so a mask is exactly 0 beyond that."""
    centres = range(0, size, stride)
    y, x = np.ogrid[:size, :size]
    masks = []
    for cy in centres:
        for cx in centres:
            disk = ((y - cy) ** 2 + (x - cx) ** 2 <= 1).astype(np.float64)
            mask = ndimage.gaussian_filter(disk, sigma=sigma)
            masks.append(mask / mask.max())
    return np.stack(masks).astype(np.float32)


def blurred(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each frame of each stack blurred with a Gaussian of `sigma` pixels (their gaussian_filter)."""
    out = ndimage.gaussian_filter(frames.detach().cpu().double().numpy(), sigma=(0, 0, sigma, sigma))
    return torch.from_numpy(out).to(frames)


def greydanus(forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], frames: torch.Tensor,
              head: str, settings: PostHocSettings = PostHocSettings()) -> torch.Tensor:
    """Perturbation saliency: S(i, j) = 0.5 * ||f(I) - f(I'_ij)||^2, I'_ij = I blurred inside
    a Gaussian mask at grid point (i, j), f the policy logits (or the value), on a grid of
    every `stride` pixels, upsampled bilinearly to 84 x 84 (grid point k at pixel k * stride).

    No library has it: Captum's Occlusion slides a constant patch, not a blur, and its
    windows are boxes, not Gaussians. It is hundreds of forward passes per frame, so all
    masks of several frames go through the model together (settings.perturbation_batch
    stacks per pass). The same mask blurs all four frames of the stack, so motion inside the
    region is perturbed too; their recurrent agent saw one frame at a time.
    `forward(frames in [0, 1]) -> (logits, value)`.
    """
    if head not in ("policy", "value"):
        raise ValueError(f"head={head!r}: expected policy or value")
    stride = settings.greydanus_stride
    masks = torch.from_numpy(perturbation_masks(stride, settings.greydanus_mask_sigma)).to(frames)
    grid = len(range(0, INPUT, stride))
    m = len(masks)
    blur = blurred(frames, settings.greydanus_blur_sigma)
    pick = 0 if head == "policy" else 1
    scores = torch.empty(len(frames), m, dtype=frames.dtype, device=frames.device)
    per_pass = max(1, settings.perturbation_batch // m)  # whole frames per forward pass
    with torch.no_grad():
        for start in range(0, len(frames), per_pass):
            x, b = frames[start:start + per_pass], blur[start:start + per_pass]
            clean = forward(x)[pick].reshape(len(x), 1, -1)
            w = masks[None, :, None]  # 1 x M x 1 x 84 x 84
            perturbed = x[:, None] * (1 - w) + b[:, None] * w  # n x M x 4 x 84 x 84
            out = torch.cat([forward(chunk)[pick] for chunk in perturbed.flatten(0, 1).split(settings.perturbation_batch)])
            out = out.reshape(len(x), m, -1)
            scores[start:start + len(x)] = 0.5 * (clean - out).square().sum(-1)
    scores = scores.reshape(len(frames), 1, grid, grid)
    span = (grid - 1) * stride + 1  # pixels from the first grid point to the last
    up = F.interpolate(scores, size=(span, span), mode="bilinear", align_corners=True)
    up = F.pad(up, (0, INPUT - span, 0, INPUT - span), mode="replicate")
    return up.squeeze(1).clamp(min=0)
