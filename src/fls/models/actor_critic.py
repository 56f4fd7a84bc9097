"""The one agent class: an encoder (the part that differs between the paper's rows, see
nature_cnn.py, fls.py, daqn.py, rs_ppo.py), then Baselines' head: fc 512 + ReLU, a policy
layer and a value layer (docs/protocol.md#architectures)."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions.categorical import Categorical

from fls.models.layers import layer_init, scale_obs
from fls.models.saliency import NoAttentionError, SaliencyGeometry, render_saliency

# One map at its native grid (N x h x w), or sparse_fls_each_conv's three.
Attention = Union[torch.Tensor, tuple[torch.Tensor, ...]]


class Encoder(nn.Module):
    """Frames in [0, 1] -> (features N x num_features, attention or None)."""

    num_features: int
    saliency_geometry: SaliencyGeometry | None = None

    def saliency_grid(self, attention: Attention) -> torch.Tensor:
        """The single map that is drawn onto the input (only each_conv has several)."""
        return attention

    def last_conv(self) -> nn.Conv2d:
        """The feature trunk's last convolution (Grad-CAM's layer): the conv block's, not an
        attention module's."""
        return [m for m in self.block.modules() if isinstance(m, nn.Conv2d)][-1]


class ActorCritic(nn.Module):
    """model(obs) -> (logits N x A, value N); obs are uint8 frames N x 4 x 84 x 84."""

    def __init__(self, name: str, encoder: Encoder, num_actions: int):
        super().__init__()
        self.name = name
        self.num_actions = num_actions
        self.encoder = encoder
        self.fc = layer_init(nn.Linear(encoder.num_features, 512))
        self.policy = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.value = layer_init(nn.Linear(512, 1), std=1.0)

    @property
    def has_saliency(self) -> bool:
        return self.encoder.saliency_geometry is not None

    @property
    def saliency_geometry(self) -> SaliencyGeometry | None:
        return self.encoder.saliency_geometry

    def forward(self, obs: torch.Tensor, return_attention: bool = False):
        """(logits, value), plus the attention map(s) when asked (None for nature_cnn).

        Logits and value are float32 even under bf16 autocast, so the PPO loss is not
        computed in bf16.
        """
        logits, value, attention = self.forward_frames(scale_obs(obs))
        if return_attention:
            return logits, value, attention
        return logits, value

    def forward_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Attention | None]:
        """(logits, value, attention) of frames already scaled to [0, 1] floats: the
        differentiable path that post-hoc saliency methods perturb (fls.saliency.posthoc)."""
        features, attention = self.encoder(frames)
        hidden = F.relu(self.fc(features))
        # float32 at least (bf16 autocast), float64 kept (the gradient checks of the tests)
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        return self.policy(hidden).to(dtype), self.value(hidden).squeeze(-1).to(dtype), attention

    # Acting: the one place actions are drawn (training, evaluation, videos)

    @staticmethod
    def distribution(logits: torch.Tensor) -> Categorical:
        # argument checks would sync with a GPU on every call; logits are always finite here
        return Categorical(logits=logits, validate_args=False)

    @staticmethod
    def sample(probs: Categorical, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per row, drawn exactly as Categorical.sample draws it, from `generator`
        (None: torch's global RNG). Packed seeds each draw from their own (fls.seed_pack)."""
        flat = probs.probs.reshape(-1, probs.param_shape[-1])
        return torch.multinomial(flat, 1, True, generator=generator).reshape(probs.batch_shape)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None,
                             generator: torch.Generator | None = None):
        """CleanRL's agent call: (action, its log-probability, entropy, value); samples the
        action unless given (the PPO update passes the rollout's)."""
        logits, value = self(obs)
        probs = self.distribution(logits)
        if action is None:
            action = self.sample(probs, generator)
        return action, probs.log_prob(action), probs.entropy(), value

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)[1]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for a batch of uint8 frames: sampled from the policy, or its argmax."""
        logits, _ = self(obs)
        return logits.argmax(-1) if greedy else self.sample(self.distribution(logits), generator)

    def _require_attention(self) -> None:
        if not self.has_saliency:
            raise NoAttentionError(f"{self.name} has no attention map, hence no saliency map")

    def attention(self, obs: torch.Tensor) -> Attention:
        """The raw attention map(s) at their native grid (FLS output or softmax map)."""
        self._require_attention()
        return self.encoder(scale_obs(obs))[1]

    def saliency_from_attention(self, attention: Attention) -> torch.Tensor:
        """Attention from forward(obs, return_attention=True) drawn onto the input: N x 84 x 84."""
        self._require_attention()
        return render_saliency(self.encoder.saliency_grid(attention), self.encoder.saliency_geometry)

    def saliency(self, obs: torch.Tensor) -> torch.Tensor:
        """Saliency map of each frame (docs/protocol.md#saliency-map-of-a-frame): N x 84 x 84, float32, >= 0."""
        return self.saliency_from_attention(self.attention(obs))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
