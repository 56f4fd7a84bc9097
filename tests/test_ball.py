"""fls.saliency.ball: the ball found on real Breakout screens, and the on-the-ball count of a
map that follows it against one that does not."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from fls.envs import make_vec_env
from fls.saliency.ball import ball_position, map_at_ball

from conftest import REPO

BREAKOUT = OmegaConf.load(REPO / "conf" / "game" / "breakout.yaml")


def screen_with_ball(row: int, col: int) -> np.ndarray:
    raw = np.zeros((210, 160, 3), dtype=np.uint8)
    raw[row:row + 4, col:col + 2] = BREAKOUT.ball.rgb
    raw[190:194, 60:76] = BREAKOUT.ball.rgb  # the paddle has the ball's colour: it must not count
    return raw


def test_the_ball_is_found_on_real_screens_and_moves():
    env_cfg = OmegaConf.load(REPO / "conf" / "env" / "atari.yaml")
    env_cfg.backend = "gymnasium"
    found = []
    with make_vec_env(BREAKOUT, env_cfg, 1) as envs:
        envs.reset(seed=3)
        for _ in range(60):
            found.append(ball_position(envs.screen(0), BREAKOUT.ball, 84))
            envs.step(np.zeros(1, dtype=np.int64))
    seen = [p for p in found if p is not None]
    assert len(seen) > 20  # FireReset serves the ball; it falls through the play area
    assert all(93 * 84 // 210 <= r < 189 * 84 // 210 + 1 for r, _ in seen)
    assert len(set(seen)) > 10
    steps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(found, found[1:]) if a and b]
    assert max(steps) <= 6  # one agent step moves the ball a few 84 x 84 pixels


def test_a_map_on_the_ball_counts_and_a_fixed_map_scores_its_control():
    positions = [(100 + 3 * t, 20 + 4 * t) for t in range(20)]
    raws = [screen_with_ball(r, c) for r, c in positions]
    assert ball_position(screen_with_ball(200, 80), BREAKOUT.ball, 84) is None  # behind the paddle row
    following = []
    for r, c in positions:
        m = np.zeros((84, 84), dtype=np.float32)
        m[int((r + 2) * 84 / 210), int((c + 1) * 84 / 160)] = 1.0
        following.append(m)
    out = map_at_ball(following, raws, BREAKOUT.ball)
    assert out["frames"] == 20 and out["on_ball"] == 1.0 and out["on_ball_control"] == 0.0
    fixed = np.zeros((84, 84), dtype=np.float32)
    fixed[55:65, 30:50] = 1.0  # a fixed bright patch that half the ball's path crosses
    out = map_at_ball([fixed] * 20, raws, BREAKOUT.ball)
    assert 0 < out["on_ball"] < 1 and out["on_ball"] == out["on_ball_control"]
    assert map_at_ball([None] * 20, raws, BREAKOUT.ball) is None
