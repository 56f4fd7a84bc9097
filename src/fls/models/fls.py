"""Free-Lunch Saliency (the paper's section 3): a small conv module turns features into a
non-negative map, and the features are multiplied by it, so the map is what the policy
sees through. Sparse, dense, and inside-the-block variants (docs/protocol.md#architectures)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fls.models.actor_critic import Attention, Encoder
from fls.models.layers import SoftPlus2, conv, dense_block, sparse_block
from fls.models.saliency import DENSE_84X84, FIRST_CONV_20X20, SPARSE_7X7, compose_each_conv


class FLS(nn.Module):
    """C x h x w features -> 1 x h x w map: conv 256, ReLU, conv 1, SoftPlus."""

    def __init__(self, in_channels: int, kernel_size: int = 3, softplus2: bool = False, normalize: bool = False):
        super().__init__()
        padding = kernel_size // 2
        self.hidden = conv(in_channels, 256, kernel_size, padding=padding)
        self.out = conv(256, 1, kernel_size, padding=padding)
        self.softplus = SoftPlus2() if softplus2 else nn.Softplus()
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.softplus(self.out(F.relu(self.hidden(x))))
        if self.normalize:
            h = h / h.sum(dim=(1, 2, 3), keepdim=True)
        return h


class SparseFLS(Encoder):
    """Sparse block, FLS on its 7 x 7 output; weighted features flattened (3136) or sum-pooled (64)."""

    saliency_geometry = SPARSE_7X7

    def __init__(self, pool: bool = False, relu_last: bool = True, kernel_size: int = 3,
                 softplus2: bool = False, normalize: bool = False):
        super().__init__()
        self.num_features = 64 if pool else 64 * 7 * 7
        self.pool = pool
        self.block = sparse_block(relu_last)
        self.fls = FLS(64, kernel_size, softplus2, normalize)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block(x)
        h = self.fls(x)
        x = x * h
        features = x.sum(dim=(2, 3)) if self.pool else x.flatten(1)
        return features, h.squeeze(1)


class DenseFLS(Encoder):
    """Dense block, FLS on its 84 x 84 output, weighted features sum-pooled (64)."""

    num_features = 64
    saliency_geometry = DENSE_84X84

    def __init__(self, relu_last: bool = True):
        super().__init__()
        self.block = dense_block(relu_last)
        self.fls = FLS(64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block(x)
        h = self.fls(x)
        return (x * h).sum(dim=(2, 3)), h.squeeze(1)


class SparseFLSInsideBlock(Encoder):
    """The sparse block with FLS after the first conv's ReLU (one 20 x 20 map), or after
    each conv's ReLU (20 x 20, 9 x 9 and 7 x 7 maps); then flattened (3136)."""

    num_features = 64 * 7 * 7
    saliency_geometry = FIRST_CONV_20X20

    def __init__(self, each_conv: bool):
        super().__init__()
        self.convs = nn.ModuleList([conv(4, 32, 8, stride=4), conv(32, 64, 4, stride=2), conv(64, 64, 3)])
        self.fls = nn.ModuleList(FLS(c) for c in ((32, 64, 64) if each_conv else (32,)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Attention]:
        maps = []
        for i, layer in enumerate(self.convs):
            x = F.relu(layer(x))
            if i < len(self.fls):
                h = self.fls[i](x)
                x = x * h
                maps.append(h.squeeze(1))
        return x.flatten(1), maps[0] if len(maps) == 1 else tuple(maps)

    def last_conv(self) -> nn.Conv2d:
        return self.convs[-1]

    def saliency_grid(self, attention: Attention) -> torch.Tensor:
        return compose_each_conv(*attention) if isinstance(attention, tuple) else attention
