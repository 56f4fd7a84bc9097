"""An Atari-HEAD trial as an agent sees it, with the gaze behind each view (docs/protocol.md#saliency-metrics).

The recorded frames go through the training preprocessing itself (`fls.envs.max_frames`,
`warp_frame`, `FrameStacker`), with the agent's actions ignored and no no-op or fire
start. Raw frames are counted from 0 (raw frame i is the PNG numbered i + 1). Processed
frame i (i = 0, 4, 8, ...) is the agent's view once raw frame i is on screen:

- i = 0, the reset: raw frame 0, alone, stacked 4 times;
- i = 4k, after the k-th step of 4 frames: max(raw 4k - 1, raw 4k), stacked after the
  3 images before it.

Its ground truth is every gaze point of the 8 raw frames behind those 4 images,
i - j for j in `GAZE_OFFSETS` (j mod 4 in {0, 1}, j <= 13) with i - j >= 0.

``frame_alignment="paper"`` reproduces what the authors' benchmark_atari_head.py computed
instead. It differs in two ways, both from indexing:

1. Gaze one raw frame early. It selects label rows with
   ``df_gazes['frame_idx'].isin(idx_for_framestack(i))``, where ``frame_idx`` is the
   1-based PNG number parsed from ``frame_id`` and ``idx_for_framestack(i)`` returns the
   0-based ``i - j``. So processed frame i gets the gaze of raw frames i - j - 1 (PNG
   i - j): i - 1, i - 2, i - 5, ..., i - 14 instead of i, i - 1, i - 4, ..., i - 13,
   missing the frame on screen and taking one older than the stack; processed frame 0
   (PNG 0 does not exist) gets none, so it never has a metric.
2. No processed frame for the last raw frame when it falls on a step boundary: their
   StreamingImageEnv reports done on the step that returns the last raw frame, and the
   benchmark records observations before each step and stops at the episode's end, so
   processed frames are the multiples of 4 up to N - 2 for N raw frames (their
   ``last_frame`` arithmetic). The default keeps every multiple of 4 up to N - 1.

The stacks themselves are the same under both alignments. Separately, ``stack_fill``
chooses what fills the stack at reset: ``"repeat"`` (docs/protocol.md#saliency-metrics and our FrameStacker, raw
frame 0 four times) or ``"zeros"`` (what the authors' agents saw: Baselines'
VecFrameStack zeroes the stack and puts the first frame last), which changes processed
frames 0, 4 and 8 only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from fls.envs import FrameStacker, max_frames, warp_frame

if TYPE_CHECKING:
    from fls.saliency.atari_head import Trial

RAW_SHAPE = (210, 160)  # rows (y), columns (x) of a recorded frame
PROCESSED_SHAPE = (84, 84)
FRAME_SKIP = 4
STACK = 4
# j of the raw frames i - j behind processed frame i: the two frames (4k - 1, 4k) whose max
# is each of the 4 stacked images.
GAZE_OFFSETS = tuple(j for j in range(FRAME_SKIP * STACK - 2) if j % FRAME_SKIP in (0, 1))
ALIGNMENTS = ("spec", "paper")
STACK_FILLS = ("repeat", "zeros")

Alignment = Literal["spec", "paper"]


def _check(frame_alignment: str, stack_fill: str = "repeat") -> None:
    if frame_alignment not in ALIGNMENTS:
        raise ValueError(f"frame_alignment={frame_alignment!r}: expected one of {ALIGNMENTS}")
    if stack_fill not in STACK_FILLS:
        raise ValueError(f"stack_fill={stack_fill!r}: expected one of {STACK_FILLS}")


def processed_indices(n_raw: int, frame_alignment: Alignment = "spec") -> range:
    """Raw frame indices i of the processed frames of an n_raw-frame trial."""
    _check(frame_alignment)
    return range(0, n_raw if frame_alignment == "spec" else n_raw - 1, FRAME_SKIP)


def gaze_frames(i: int, frame_alignment: Alignment = "spec") -> list[int]:
    """0-based raw frames whose gaze is the ground truth of processed frame i, oldest first."""
    _check(frame_alignment)
    shift = 0 if frame_alignment == "spec" else 1
    return sorted(i - j - shift for j in GAZE_OFFSETS if i - j - shift >= 0)


def fixation_map(points: np.ndarray, shape: tuple[int, int] = RAW_SHAPE) -> np.ndarray:
    """Integer counts of gaze points (x, y in 160 x 210 frame pixels) on a grid of `shape`.

    Point (x, y) adds 1 at row round(y), column round(x); on another grid (84 x 84) the
    coordinates are first scaled, row round(y / 210 * H), column round(x / 160 * W): the
    authors' mapping. Mapping pixel areas onto pixel areas, as the 84 x 84 area resize
    does, would give (x + 0.5) * W / 160 - 0.5; the authors' sits 0.24 of an 84 x 84 pixel
    right and 0.3 down of that. Rounding is half to even, as Python's round() the authors
    used. Points off the grid are dropped.
    """
    h, w = shape
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    if (h, w) != RAW_SHAPE:
        x, y = x / RAW_SHAPE[1] * w, y / RAW_SHAPE[0] * h
    rows, cols = np.rint(y), np.rint(x)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = rows[inside].astype(np.int64) * w + cols[inside].astype(np.int64)
    return np.bincount(flat, minlength=h * w).reshape(h, w)


def _union(gaze: Sequence[np.ndarray], frames: Sequence[int]) -> np.ndarray:
    parts = [np.asarray(gaze[k], dtype=np.float64).reshape(-1, 2) for k in frames]
    return np.concatenate(parts) if parts else np.empty((0, 2))


def fixation_points(gaze: Sequence[np.ndarray], frame_alignment: Alignment = "spec") -> list[np.ndarray]:
    """Gaze points (n, 2) behind every processed frame of a trial, in order.

    Cheap to keep for a whole trial (about twice its samples: raw frames 4k and 4k - 1
    feed 4 processed frames each, 4k + 1 and 4k + 2 none), unlike its fixation maps. Sum
    other frames' maps, as shuffled AUC needs, by mapping the concatenation of their
    points (`fixation_map` counts add up).
    """
    indices = processed_indices(len(gaze), frame_alignment)
    return [_union(gaze, gaze_frames(i, frame_alignment)) for i in indices]


@dataclass(frozen=True)
class ProcessedFrame:
    """One agent view of a recorded trial and the gaze behind it."""

    index: int  # the raw frame i it stands for (0, 4, 8, ...)
    stack: np.ndarray  # uint8 (4, 84, 84), oldest image first: the agent's input
    raw: np.ndarray  # uint8 (210, 160, 3) RGB raw frame i, for work at 210 x 160
    gaze: np.ndarray  # float (n, 2) x, y of the raw frames `gaze_frames(i)`
    fixations: np.ndarray  # int64 (210, 160) counts of `gaze`
    fixations_84: np.ndarray  # int64 (84, 84) counts of `gaze`, scaled


def play(
    frames: Iterable[np.ndarray],
    gaze: Sequence[np.ndarray],
    *,
    frame_alignment: Alignment = "spec",
    stack_fill: Literal["repeat", "zeros"] = "repeat",
) -> Iterator[ProcessedFrame]:
    """Stream the processed frames of a recording: `frames` are its raw RGB frames in order,
    `gaze[k]` the (n, 2) gaze points of raw frame k (one entry per raw frame).

    Holds two raw frames at a time, so a full trial (17k frames) streams in constant memory.
    """
    _check(frame_alignment, stack_fill)  # now, not at the first next()
    return _play(frames, gaze, frame_alignment, stack_fill)


def _play(
    frames: Iterable[np.ndarray], gaze: Sequence[np.ndarray], frame_alignment: Alignment, stack_fill: str
) -> Iterator[ProcessedFrame]:
    n_raw = len(gaze)
    wanted = processed_indices(n_raw, frame_alignment)
    stacker = FrameStacker(1, k=STACK, shape=PROCESSED_SHAPE, fill=stack_fill)
    previous = None
    count = 0
    for r, rgb in enumerate(frames):
        if r >= n_raw:
            raise ValueError(f"more frames than gaze entries ({n_raw})")
        count = r + 1
        if r % FRAME_SKIP == 0:
            if r == 0:
                stacker.reset(warp_frame(rgb)[None])
            else:
                stacker.push(warp_frame(max_frames(previous, rgb))[None])
            if r in wanted:
                points = _union(gaze, gaze_frames(r, frame_alignment))
                yield ProcessedFrame(
                    index=r,
                    stack=stacker.frames[0].copy(),
                    raw=rgb,
                    gaze=points,
                    fixations=fixation_map(points, RAW_SHAPE),
                    fixations_84=fixation_map(points, PROCESSED_SHAPE),
                )
        previous = rgb
    if count != n_raw:
        raise ValueError(f"{count} frames for {n_raw} gaze entries")


def play_trial(
    trial: Trial,
    *,
    frame_alignment: Alignment = "spec",
    stack_fill: Literal["repeat", "zeros"] = "repeat",
) -> Iterator[ProcessedFrame]:
    """`play` on an Atari-HEAD trial (`fls.saliency.atari_head.AtariHead.load`)."""
    return play(trial.frames(), trial.labels.gaze, frame_alignment=frame_alignment, stack_fill=stack_fill)
