"""Nature CNN (Mnih et al. 2015), the paper's baseline: the sparse block, flattened."""

from __future__ import annotations

import torch

from fls.models.actor_critic import Encoder
from fls.models.layers import sparse_block


class NatureCNN(Encoder):
    num_features = 64 * 7 * 7
    saliency_geometry = None  # no attention map

    def __init__(self):
        super().__init__()
        self.block = sparse_block()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.block(x).flatten(1), None
