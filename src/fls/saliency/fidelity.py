"""Does the policy use what a map highlights? Deletion and insertion (Petsiuk et al. 2018,
"RISE"), as Puri et al. ("Explain your move", ICLR 2020) and Atrey et al. (ICLR 2020) use
them on Atari agents, for any map of fls.saliency.posthoc or a baseline order.

The 84 x 84 pixels of each stack are ranked by the map, most salient first, and perturbed in
that order in `steps` equal steps of the fraction of pixels (0, 1/steps, ..., 1):
- deletion: the most salient pixels are replaced first by the same pixels of the stack blurred
  with a Gaussian of `blur_sigma` pixels (fls.saliency.posthoc.blurred, the blur Greydanus et
  al. perturb with, sigma 3 by default as theirs), so the frame stays close to what the agent
  saw in training instead of turning black;
- insertion: the stack starts fully blurred and its most salient pixels are restored first.
All four frames of a stack share the ranking (the map is one 84 x 84 plane, as Greydanus'
masks blur all four).

At each step: the KL divergence KL(pi(.|s) || pi(.|s')) of the perturbed stack's action
distribution from the unperturbed one's, and the probability of the action the agent chose on
the unperturbed stack (its greedy action). The area under each curve is the trapezoid over
the fraction axis. A map that finds what the policy uses gives a fast-rising deletion KL (a
large area) and a fast-falling insertion KL (a small area); the probability of the chosen
action falls fast under deletion (small area) and returns fast under insertion (large area).

Baselines (BASELINES): `random`, a seeded random order; `center`, the centre-bias Gaussian of
the gaze scoring (fls.saliency.metrics.center_bias at 84 x 84, std `center_sigma` of the side).
Ties in a map's ranking are broken by a seeded permutation of the pixels (sanity.ranking).
All perturbed stacks of a batch of frames and steps go through the model in one forward pass
(`batch` stacks at most).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.integrate import trapezoid

from fls.saliency.metrics import center_bias
from fls.saliency.posthoc import INPUT, blurred
from fls.saliency.sanity import ranking

MODES = ("deletion", "insertion")
BASELINES = ("random", "center")


@dataclass(frozen=True)
class FidelitySettings:
    """What a deletion or insertion curve depends on besides the model, the frames and the map."""

    steps: int = 20
    """equal steps of the fraction of pixels perturbed: the curve has steps + 1 points, 0 to 1"""
    blur_sigma: float = 3.0
    """std in pixels of the Gaussian blur that replaces (deletion) or starts (insertion) the frame"""
    seed: int = 0
    """seeds the order of tied pixels and the random baseline"""
    batch: int = 256
    """perturbed stacks per forward pass (speed only)"""

    def __post_init__(self):
        for name, value, low in (("steps", self.steps, 1), ("batch", self.batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value}: expected an integer >= {low}")
        if isinstance(self.blur_sigma, bool) or not isinstance(self.blur_sigma, (int, float)) or not self.blur_sigma > 0:
            raise ValueError(f"blur_sigma={self.blur_sigma}: expected a positive number of pixels")

    @property
    def fractions(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.steps + 1)

    def key(self) -> dict:
        """The settings that change a curve's values (the batch changes only the speed)."""
        return {k: v for k, v in self.__dict__.items() if k != "batch"}


@dataclass
class Curves:
    """Deletion or insertion curves of N frames at S = steps + 1 fractions."""

    mode: str
    fractions: np.ndarray
    """S fractions of the pixels perturbed"""
    actions: np.ndarray
    """N greedy actions on the unperturbed stacks"""
    kl: np.ndarray
    """N x S: KL(pi(.|s) || pi(.|s perturbed))"""
    prob: np.ndarray
    """N x S: probability of the greedy action on the perturbed stack"""

    @property
    def kl_auc(self) -> np.ndarray:
        return trapezoid(self.kl, self.fractions, axis=1)

    @property
    def prob_auc(self) -> np.ndarray:
        return trapezoid(self.prob, self.fractions, axis=1)


def baseline_map(name: str, n: int, seed: int = 0, center_sigma: float = 0.25) -> np.ndarray:
    """N x 84 x 84 maps of a baseline order: `random` (seeded uniform noise, a random order
    per frame) or `center` (the centre-bias Gaussian, the same for every frame)."""
    if name == "random":
        return np.random.default_rng(seed).random((n, INPUT, INPUT))
    if name == "center":
        return np.broadcast_to(center_bias((INPUT, INPUT), center_sigma), (n, INPUT, INPUT)).copy()
    raise ValueError(f"{name} is not a baseline order; expected one of {', '.join(BASELINES)}")


def _policy(model, frames: torch.Tensor) -> torch.Tensor:
    return model.forward_frames(frames)[0].double()


def curves(model, obs: torch.Tensor, saliency: np.ndarray | torch.Tensor, mode: str,
           settings: FidelitySettings = FidelitySettings()) -> Curves:
    """Deletion or insertion curves of the stacks `obs` (uint8 N x 4 x 84 x 84) in the order of
    `saliency` (N x 84 x 84, larger first). `model`: anything with ActorCritic's
    forward_frames (frames in [0, 1] -> (logits, value, attention))."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if obs.dtype != torch.uint8 or obs.dim() != 4 or tuple(obs.shape[1:]) != (4, INPUT, INPUT):
        raise ValueError(f"observations of {tuple(obs.shape)} {obs.dtype}: expected uint8 N x 4 x 84 x 84")
    saliency = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if saliency.shape != (len(obs), INPUT, INPUT):
        raise ValueError(f"maps of shape {saliency.shape}: expected {len(obs)} x 84 x 84, one per stack")
    if not np.isfinite(saliency).all():
        raise ValueError("maps hold NaN or infinite values")
    p = next(model.parameters())
    frames = obs.to(p.device).to(p.dtype) / 255.0
    blur = blurred(frames, settings.blur_sigma)
    fractions = settings.fractions
    counts = torch.from_numpy(np.rint(fractions * INPUT * INPUT).astype(np.int64)).to(p.device)
    # rank[n, y, x]: where pixel (y, x) comes in frame n's order (0 = most salient)
    order = torch.from_numpy(ranking(saliency, settings.seed)).to(p.device)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=p.device).expand_as(order))
    rank = rank.view(-1, INPUT, INPUT)
    n, s = len(obs), len(fractions)
    kl = torch.empty(n * s, dtype=torch.float64)
    prob = torch.empty(n * s, dtype=torch.float64)
    with torch.no_grad():
        clean = torch.cat([_policy(model, x) for x in frames.split(settings.batch)])
        actions = clean.argmax(-1)
        clean_log = F.log_softmax(clean, -1)
        pairs = torch.arange(n * s, device=p.device)
        for chunk in pairs.split(settings.batch):
            i, j = chunk // s, chunk % s
            chosen = (rank[i] < counts[j, None, None]).unsqueeze(1)  # B x 1 x 84 x 84
            x, b = frames[i], blur[i]
            perturbed = torch.where(chosen, b, x) if mode == "deletion" else torch.where(chosen, x, b)
            log_q = F.log_softmax(_policy(model, perturbed), -1)
            log_p = clean_log[i]
            kl[chunk.cpu()] = (log_p.exp() * (log_p - log_q)).sum(-1).clamp(min=0).cpu()
            prob[chunk.cpu()] = log_q.gather(1, actions[i, None]).squeeze(1).exp().cpu()
    return Curves(mode, fractions, actions.cpu().numpy(), kl.view(n, s).numpy(), prob.view(n, s).numpy())


def deletion(model, obs: torch.Tensor, saliency, settings: FidelitySettings = FidelitySettings()) -> Curves:
    return curves(model, obs, saliency, "deletion", settings)


def insertion(model, obs: torch.Tensor, saliency, settings: FidelitySettings = FidelitySettings()) -> Curves:
    return curves(model, obs, saliency, "insertion", settings)
