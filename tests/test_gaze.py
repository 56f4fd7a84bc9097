"""docs/protocol.md#saliency-metrics's frame protocol: which raw frames feed each processed frame, the gaze union
behind it, fixation maps, and that the stacks are the training preprocessing itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fls.envs
import fls.saliency.gaze
from fls.saliency.atari_head import AtariHead
from fls.saliency.gaze import (
    GAZE_OFFSETS,
    fixation_map,
    fixation_points,
    gaze_frames,
    play,
    play_trial,
    processed_indices,
)


def uniform_frames(values: list[int]) -> list[np.ndarray]:
    """Raw frames whose every pixel is gray `value` (gray and area resize keep it exactly)."""
    return [np.full((210, 160, 3), v, np.uint8) for v in values]


def image_values(stack: np.ndarray) -> list[int]:
    assert all((image == image[0, 0]).all() for image in stack)
    return [int(image[0, 0]) for image in stack]


def one_point_per_frame(n: int) -> list[np.ndarray]:
    """Raw frame k's only gaze point is at column k, row 0 (x = k, y = 0)."""
    return [np.array([[k, 0.0]]) for k in range(n)]


def test_offsets_are_the_8_frames_behind_4_images():
    assert GAZE_OFFSETS == (0, 1, 4, 5, 8, 9, 12, 13)


def test_processed_indices_and_tail():
    assert list(processed_indices(400)) == list(range(0, 397, 4))
    assert list(processed_indices(9)) == [0, 4, 8]
    assert list(processed_indices(10)) == [0, 4, 8]
    # The authors' env ends on the step that returns the last raw frame, unseen.
    assert list(processed_indices(9, "paper")) == [0, 4]
    assert list(processed_indices(10, "paper")) == [0, 4, 8]
    assert list(processed_indices(1, "paper")) == []
    with pytest.raises(ValueError, match="frame_alignment"):
        processed_indices(9, "off-by-one")


def test_stack_alignment_max_of_last_two():
    n = 30
    # Values in shuffled order, so the max tells exactly which two raw frames met.
    values = list(np.random.default_rng(0).permutation(np.arange(10, 10 + 8 * n, 8))[:n])
    frames = uniform_frames(values)
    out = list(play(frames, one_point_per_frame(n)))
    assert [p.index for p in out] == list(range(0, n, 4))

    def step(k: int) -> int:  # the image after the k-th step
        return values[0] if k == 0 else max(values[4 * k - 1], values[4 * k])

    for p in out:
        k = p.index // 4
        expected = [step(max(k - back, 0)) for back in (3, 2, 1, 0)]
        assert image_values(p.stack) == expected, p.index
        assert p.stack.dtype == np.uint8 and p.stack.shape == (4, 84, 84)
        assert p.raw is frames[p.index]
    assert image_values(out[0].stack) == [values[0]] * 4


def test_stack_fill_zeros_is_baselines_vecframestack():
    values = list(range(50, 50 + 20))
    repeat = list(play(uniform_frames(values), one_point_per_frame(20)))
    zeros = list(play(uniform_frames(values), one_point_per_frame(20), stack_fill="zeros"))
    assert image_values(zeros[0].stack) == [0, 0, 0, 50]
    assert image_values(zeros[1].stack) == [0, 0, 50, 54]
    assert image_values(zeros[2].stack) == [0, 50, 54, 58]
    for a, b in zip(repeat[3:], zeros[3:]):
        assert np.array_equal(a.stack, b.stack)


def test_gaze_frames_spec():
    assert gaze_frames(0) == [0]
    assert gaze_frames(4) == [0, 3, 4]
    assert gaze_frames(8) == [0, 3, 4, 7, 8]
    assert gaze_frames(12) == [0, 3, 4, 7, 8, 11, 12]
    assert gaze_frames(16) == [3, 4, 7, 8, 11, 12, 15, 16]
    # Exactly the raw frames behind the stack: frame 0, and the two maxed into each step.
    for i in range(0, 60, 4):
        behind = {0} if i <= 12 else set()
        for k in range(max(i // 4 - 3, 1), i // 4 + 1):
            behind |= {4 * k - 1, 4 * k}
        assert gaze_frames(i) == sorted(behind), i


def test_gaze_frames_paper_is_the_authors_selection():
    def idx_for_framestack(i):  # benchmark_atari_head.py, as released
        return [i - j for j in reversed(range(14)) if (0 <= (j % 4) <= 1) and (i - j >= 0)]

    n = 100
    frame_idx = np.arange(1, n + 1)  # 1-based, parsed from frame_id as they did
    for i in range(0, n, 4):
        rows = np.flatnonzero(np.isin(frame_idx, idx_for_framestack(i)))  # 0-based raw frames
        assert gaze_frames(i, "paper") == rows.tolist()
        assert gaze_frames(i, "paper") == [k - 1 for k in gaze_frames(i) if k >= 1]
    assert gaze_frames(0, "paper") == []


def test_fixation_union_through_play():
    n = 23
    out = list(play(uniform_frames([1] * n), one_point_per_frame(n)))
    for p in out:
        assert np.flatnonzero(p.fixations[0]).tolist() == gaze_frames(p.index)
        assert p.fixations.sum() == len(gaze_frames(p.index))
        assert p.fixations.shape == (210, 160) and p.fixations.dtype.kind == "i"
    paper = list(play(uniform_frames([1] * n), one_point_per_frame(n), frame_alignment="paper"))
    assert [p.index for p in paper] == [0, 4, 8, 12, 16, 20]
    for p in paper:
        assert np.flatnonzero(p.fixations[0]).tolist() == gaze_frames(p.index, "paper")
    points = fixation_points(one_point_per_frame(n))
    assert [pts[:, 0].tolist() for pts in points] == [[float(k) for k in gaze_frames(i)] for i in range(0, n, 4)]


def test_fixation_map_rounding_and_dropping():
    points = np.array([
        [0.5, 0.5],  # half to even: (0, 0)
        [1.5, 2.5],  # (row 2, col 2)
        [-0.4, 3.0],  # rounds onto column 0: kept
        [-0.6, 3.0],  # column -1: dropped
        [159.4, 209.4],  # last pixel
        [159.6, 5.0],  # column 160: dropped
        [10.0, 209.6],  # row 210: dropped
        [10.0, -0.7],  # row -1: dropped
        [1.5, 2.5],  # counts add
    ])
    fmap = fixation_map(points)
    assert fmap.shape == (210, 160) and fmap.dtype == np.int64
    assert fmap.sum() == 5
    assert fmap[0, 0] == 1 and fmap[2, 2] == 2 and fmap[3, 0] == 1 and fmap[209, 159] == 1
    assert fixation_map(np.empty((0, 2))).sum() == 0


def test_fixation_map_84():
    points = np.array([
        [10 * 160 / 84, 20 * 210 / 84],  # pixel (20, 10) exactly
        [159.9, 209.9],  # scales to 83.95: rounds off the grid, dropped (the authors' mapping)
        [0.0, 0.0],
        [80.0, 105.0],  # centre: 42, 42
    ])
    fmap = fixation_map(points, (84, 84))
    assert fmap.shape == (84, 84)
    assert fmap.sum() == 3 and fmap[20, 10] == 1 and fmap[0, 0] == 1 and fmap[42, 42] == 1
    # Every point: row round(y / 210 * 84), column round(x / 160 * 84), as the authors did.
    rng = np.random.default_rng(1)
    pts = rng.uniform([-5, -5], [165, 215], size=(500, 2))
    expected = np.zeros((84, 84), int)
    for x, y in pts:
        r, c = round(y / 210 * 84), round(x / 160 * 84)
        if 0 <= r < 84 and 0 <= c < 84:
            expected[r, c] += 1
    assert np.array_equal(fixation_map(pts, (84, 84)), expected)


def test_stacks_are_fls_envs_preprocessing(atari_head_sample: Path):
    # Imported, not copied: the same function objects.
    assert fls.saliency.gaze.warp_frame is fls.envs.warp_frame
    assert fls.saliency.gaze.max_frames is fls.envs.max_frames
    assert fls.saliency.gaze.FrameStacker is fls.envs.FrameStacker

    trial = AtariHead(atari_head_sample).load(593)
    frames = list(trial.frames())[:41]
    stacker = fls.envs.FrameStacker(1, 4, fill="repeat")  # docs/protocol.md#saliency-metrics's default
    expected = [stacker.reset(fls.envs.warp_frame(frames[0])[None])[0].copy()]
    for k in range(1, 11):
        image = fls.envs.warp_frame(fls.envs.max_frames(frames[4 * k - 1], frames[4 * k]))
        expected.append(stacker.push(image[None])[0].copy())
    gaze = trial.labels.gaze
    out = list(play(frames, [gaze[k] for k in range(41)]))
    assert len(out) == len(expected) == 11
    for p, stack in zip(out, expected):
        assert np.array_equal(p.stack, stack)
    assert len({p.stack.tobytes() for p in out}) == 11  # Ms. Pac-Man moves: all differ


def test_play_trial_on_the_sample(atari_head_sample: Path):
    trial = AtariHead(atari_head_sample).load(593)
    frames = list(trial.frames())
    gaze = trial.labels.gaze
    out = list(play_trial(trial))
    assert [p.index for p in out] == list(range(0, 400, 4))
    total = 0
    for p in out:
        assert np.array_equal(p.raw, frames[p.index])
        pts = np.concatenate([gaze[k] for k in gaze_frames(p.index)])
        inside = sum(0 <= round(y) < 210 and 0 <= round(x) < 160 for x, y in pts)
        assert p.fixations.sum() == inside
        assert p.fixations_84.sum() <= len(pts)
        total += inside
    assert total == sum(p.fixations.sum() for p in out) > 40000


def test_play_checks_lengths_and_options():
    with pytest.raises(ValueError, match="stack_fill"):
        play([], [], stack_fill="noise")  # at the call, not at the first frame
    with pytest.raises(ValueError, match="3 frames for 5 gaze"):
        list(play(uniform_frames([1, 2, 3]), one_point_per_frame(5)))
    with pytest.raises(ValueError, match="more frames"):
        list(play(uniform_frames([1, 2, 3]), one_point_per_frame(2)))


class AuthorsLoop:
    """The authors' evaluation of a trial, re-enacted without gym: StreamingImageEnv (reset
    reads 2 frames ahead, done on the step returning the last frame), Baselines'
    MaxAndSkipEnv and WarpFrame, VecFrameStack (zeroes, newest last) and run_baselines'
    run_model (record observation and rendered raw frame, then step; stop at the episode's
    end). No no-op / fire start; the fixed lives counter makes EpisodicLifeEnv inert."""

    def __init__(self, frames):
        self.frames = frames

    def _advance(self):
        self.last = self.next
        try:
            self.next = next(self.stream)
            return False
        except StopIteration:
            self.next = None
            return True

    def run(self):
        self.stream, self.next = iter(self.frames), None
        assert not self._advance() and not self._advance()
        stack = np.zeros((4, 84, 84), np.uint8)
        stack[-1] = fls.envs.warp_frame(self.last)
        buffer = np.zeros((2, 210, 160, 3), np.uint8)
        recorded = []
        while True:
            recorded.append((self.last, stack.copy()))
            for i in range(4):
                done = self._advance()
                if i == 2:
                    buffer[0] = self.last
                if i == 3:
                    buffer[1] = self.last
                if done:
                    break
            if done:
                return recorded
            stack = np.roll(stack, -1, axis=0)
            stack[-1] = fls.envs.warp_frame(buffer.max(axis=0))


@pytest.mark.parametrize("n", [2, 5, 8, 9, 10, 11, 12, 13, 21])
def test_paper_alignment_and_zero_fill_match_the_authors_loop(n):
    values = [3 + 7 * k for k in range(n)]
    frames = uniform_frames(values)
    theirs = AuthorsLoop(frames).run()
    ours = list(play(frames, one_point_per_frame(n), frame_alignment="paper", stack_fill="zeros"))
    assert [values.index(int(raw[0, 0, 0])) for raw, _ in theirs] == [p.index for p in ours]
    assert [p.index for p in ours] == list(processed_indices(n, "paper"))
    for (raw, stack), p in zip(theirs, ours):
        assert np.array_equal(raw, p.raw) and np.array_equal(stack, p.stack)
