"""Layers every model shares (docs/protocol.md#architectures): Baselines' initialisation, SoftPlus2, the sparse
(Nature CNN) and dense conv blocks, and the uint8 -> [0, 1] input scaling."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2)
LN2 = math.log(2)


def layer_init(layer: nn.Module, std: float = SQRT2, bias_const: float = 0.0) -> nn.Module:
    """Baselines' ortho_init: orthogonal weight of gain `std`, constant bias."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    # Every conv gets gain sqrt(2), attention convs included: the authors' release does so.
    return layer_init(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding))


class SoftPlus2(nn.Module):
    """SoftPlus in base 2: log2(1 + 2^x) = SoftPlus(x ln 2) / ln 2, so SoftPlus2(0) = 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=LN2)


def sparse_block(relu_last: bool = True) -> nn.Sequential:
    """Nature CNN's convs: 4 x 84 x 84 -> 64 x 7 x 7 (86 x 86, RS-PPO's padded input, too)."""
    layers = [
        conv(4, 32, 8, stride=4), nn.ReLU(),
        conv(32, 64, 4, stride=2), nn.ReLU(),
        conv(64, 64, 3, stride=1),
    ]
    if relu_last:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def dense_block(relu_last: bool = True) -> nn.Sequential:
    """Stride-1 convs with 'same' padding: 4 x 84 x 84 -> 64 x 84 x 84."""
    layers = [
        conv(4, 32, 7, padding=3), nn.ReLU(),
        conv(32, 64, 5, padding=2), nn.ReLU(),
        conv(64, 64, 3, padding=1),
    ]
    if relu_last:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def scale_obs(obs: torch.Tensor) -> torch.Tensor:
    """uint8 frames to float in [0, 1]; refuses anything else, which would be scaled twice."""
    if obs.dtype != torch.uint8:
        raise TypeError(f"observations must be uint8 frames (N x 4 x 84 x 84), got {obs.dtype}")
    return obs.float() / 255.0
