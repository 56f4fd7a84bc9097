"""Is a map on the ball? A question a Breakout video can answer without labels: the ball is
found on the raw screen by its colour (conf/game: `ball`), between the bricks and the paddle,
and the map is read where it is.

A frame's map is "on the ball" when its largest value within one 84 x 84 pixel of the ball is
in the top 10% of the whole map. The same count with each frame's map read at another frame's
ball position (half a game away) is the control: a map that does not follow the ball, one
fixed on the lower play area say, scores about the same on both.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TOP = 0.9  # the share of the map a value must lie above to count as on the ball


def ball_position(raw: np.ndarray, ball: Any, size: int) -> tuple[int, int] | None:
    """(row, column) of the ball on a size x size map of the 210 x 160 RGB `raw`, or None where
    the ball is not in the searched area (above the bricks, behind the paddle, between lives)."""
    (r0, r1), (c0, c1) = ball.rows, ball.cols
    hit = (raw[r0:r1, c0:c1] == np.asarray(ball.rgb, dtype=raw.dtype)).all(axis=2)
    ys, xs = np.nonzero(hit)
    if not len(ys):
        return None
    row = min(int((ys.mean() + r0 + 0.5) * size / raw.shape[0]), size - 1)
    col = min(int((xs.mean() + c0 + 0.5) * size / raw.shape[1]), size - 1)
    return row, col


def percentile_at(saliency: np.ndarray, row: int, col: int) -> float:
    """The share of the map below its largest value in the 3 x 3 pixels around (row, col)."""
    value = saliency[max(0, row - 1):row + 2, max(0, col - 1):col + 2].max()
    return float((saliency < value).mean())


def map_at_ball(maps: Sequence[np.ndarray | None], raws: Sequence[np.ndarray], ball: Any) -> dict[str, Any] | None:
    """How often the maps of one game are on the ball, and the control; None without a map or a ball."""
    pairs = [(m, p) for m, r in zip(maps, raws) if m is not None
             for p in [ball_position(r, ball, m.shape[0])] if p is not None]
    if not pairs:
        return None
    n = len(pairs)
    at_ball = np.array([percentile_at(m, *p) for m, p in pairs])
    control = np.array([percentile_at(m, *pairs[(i + n // 2) % n][1]) for i, (m, _) in enumerate(pairs)])
    return {"frames": n, "on_ball": round(float((at_ball >= TOP).mean()), 3),
            "on_ball_control": round(float((control >= TOP).mean()), 3),
            "median_percentile": round(float(np.median(at_ball)), 3)}
