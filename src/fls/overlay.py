"""A saliency map drawn over a screen: one colour scale for every picture of a map (the
videos and contact sheets of fls.video, Figures 4 and 5, the maps a cell's W&B run shows).
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from fls.saliency.metrics import upscale_saliency

HEAT = colormaps["jet"]
ALPHA = 0.6


def overlay(rgb: np.ndarray, heat: np.ndarray | None) -> np.ndarray:
    """Blend a [0, 1] map onto an RGB image: more saliency, more colour."""
    if heat is None:
        return rgb
    colour = HEAT(np.clip(heat, 0, 1))[..., :3] * 255
    weight = ALPHA * np.clip(heat, 0, 1)[..., None]
    return (rgb * (1 - weight) + colour * weight).astype(np.uint8)


def overlay_on_screen(raw: np.ndarray, map84: np.ndarray | None, scale: float) -> np.ndarray:
    """The raw screen with an 84 x 84 map, divided by `scale`, resized onto it (bilinear)."""
    return overlay(raw, None if map84 is None else np.clip(upscale_saliency(map84, raw.shape[:2]), 0, None) / scale)
