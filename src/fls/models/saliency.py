"""Drawing an attention map back onto the 84 x 84 input (docs/protocol.md#saliency-map-of-a-frame).

Each cell of the map spreads its value uniformly over its receptive field: a transposed
convolution with a kernel of ones, then a clamp at 0 (as the authors' visualization.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INPUT_SIZE = 84


@dataclass(frozen=True)
class SaliencyGeometry:
    """Where one cell of an attention grid lies on the input: its receptive field."""

    kernel: int
    stride: int
    padding: int

    @property
    def grid_size(self) -> int:
        """Side of the attention grid that covers the whole 84 x 84 input."""
        return (INPUT_SIZE + 2 * self.padding - self.kernel) // self.stride + 1


# The receptive fields of docs/protocol.md#saliency-map-of-a-frame (tests/test_models.py checks them against the convs).
SPARSE_7X7 = SaliencyGeometry(kernel=36, stride=8, padding=0)  # the sparse block's output
FIRST_CONV_20X20 = SaliencyGeometry(kernel=8, stride=4, padding=0)  # the first conv's output
DENSE_84X84 = SaliencyGeometry(kernel=13, stride=1, padding=6)  # the dense block's output


class NoAttentionError(NotImplementedError):
    """The model has no attention map (nature_cnn), so no saliency map either."""


def _spread(grid: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    """Transposed conv of an N x h x w grid with a kernel of ones, in fp32 even under autocast."""
    with torch.autocast(grid.device.type, enabled=False):
        grid = grid.float().unsqueeze(1)
        ones = grid.new_ones(1, 1, kernel, kernel)
        return F.conv_transpose2d(grid, ones, stride=stride, padding=padding).squeeze(1)


def render_saliency(grid: torch.Tensor, geometry: SaliencyGeometry) -> torch.Tensor:
    """An N x h x w attention grid drawn onto the input: N x 84 x 84, float32, >= 0."""
    if grid.dim() != 3 or grid.shape[-2:] != (geometry.grid_size, geometry.grid_size):
        raise ValueError(
            f"attention grid of shape {tuple(grid.shape)}: expected N x {geometry.grid_size} x "
            f"{geometry.grid_size} for {geometry}"
        )
    return _spread(grid, geometry.kernel, geometry.stride, geometry.padding).clamp(min=0)


def compose_each_conv(h1: torch.Tensor, h2: torch.Tensor, h3: torch.Tensor) -> torch.Tensor:
    """sparse_fls_each_conv's three maps (20 x 20, 9 x 9, 7 x 7) as one 20 x 20 map.

    The 9 x 9 and 7 x 7 cells are drawn onto the first conv's grid by their receptive
    fields there (4 x 4 and 8 x 8, stride 2), as the authors' cnn_sparse_fls_x3 does.
    """
    return h1.float() + _spread(h2, kernel=4, stride=2) + _spread(h3, kernel=8, stride=2)
