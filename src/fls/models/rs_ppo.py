"""RS-PPO: the Region-Sensitive module of Yang et al. 2018 ("Learn to interpret Atari agents")
trained with PPO. The input padded by 1 pixel (not in rs_ppo_nopad), the sparse block,
L2-normalised positions, two softmax heads over the 49 positions summed into one map;
weighted features flattened."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fls.models.actor_critic import Encoder
from fls.models.layers import conv, sparse_block
from fls.models.saliency import SPARSE_7X7

NUM_HEADS = 2


def l2_normalize_channels(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    # tf.nn.l2_normalize's form: eps bounds the squared norm, so all-zero positions (after
    # the last ReLU) stay zero with finite gradients.
    return x * torch.rsqrt(torch.clamp_min(x.square().sum(dim=1, keepdim=True), eps))


class RSPPO(Encoder):
    num_features = 64 * 7 * 7
    # The padded input gives a 20 x 20 first grid too (floor((86 - 8) / 4) + 1), so the map is
    # drawn like the other sparse models' (the authors' make_params does the same).
    saliency_geometry = SPARSE_7X7

    def __init__(self, pad_input: bool = True):
        super().__init__()
        self.pad_input = pad_input
        self.block = sparse_block()
        self.attend = nn.Sequential(conv(64, 512, 1), nn.ELU(), conv(512, NUM_HEADS, 1))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features and the per-head maps (N x 2 x 7 x 7, each head sums to 1)."""
        if self.pad_input:
            x = F.pad(x, (1, 1, 1, 1))
        x = l2_normalize_channels(self.block(x))
        scores = self.attend(x)
        maps = torch.softmax(scores.flatten(2), dim=2).view_as(scores)
        return x, maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, maps = self.heads(x)
        h = maps.sum(dim=1)  # sums to NUM_HEADS over positions, as the authors' map does
        return (x * h.unsqueeze(1)).flatten(1), h
