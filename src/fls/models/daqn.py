"""DAQN: DARQN (Sorokin et al. 2015) without its recurrence. A softmax over the 49 positions
of the sparse block's output; features = the attention-weighted sum over positions (64)."""

from __future__ import annotations

import torch
import torch.nn as nn

from fls.models.actor_critic import Encoder
from fls.models.layers import conv, sparse_block
from fls.models.saliency import SPARSE_7X7


class DAQN(Encoder):
    num_features = 64
    saliency_geometry = SPARSE_7X7

    def __init__(self):
        super().__init__()
        self.block = sparse_block()
        self.attend = nn.Sequential(conv(64, 256, 1), nn.Tanh(), conv(256, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block(x)
        scores = self.attend(x).flatten(1)
        h = torch.softmax(scores, dim=1).view(-1, *x.shape[2:])
        return torch.einsum("nchw,nhw->nc", x, h), h
