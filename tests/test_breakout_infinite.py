"""BreakoutInfinite (docs/protocol.md#breakoutinfinite) on the real emulator, and Table 5's evaluation path.

To reach 864 in seconds, the RAM is set up like a game near its end: after the first
serve every brick is removed but one row, and the score is set so that clearing that row
makes exactly 864. A scripted paddle (it follows the ball through RAM) clears it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from fls.breakout_infinite import LIMIT, WALL, BreakoutInfinite, bcd_score, write_score
from fls.rundir import RunLayout

from conftest import PYTHON, REPO

BRICKS = slice(0, 36)  # 6 rows x 6 bytes, row = index % 6 (row 2: the 4-point bricks)
ROW = 2
FULL_WALL = 240  # brick bits of a full wall (6 rows x 40 playfield bits)
SETUP_FRAME = 60  # after the first serve: the cartridge draws the wall when play starts
BALL_X, PADDLE_X = 99, 72
FIRE, RIGHT, LEFT, NOOP = 1, 2, 3, 0


def breakout(infinite: bool) -> gym.Env:
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make("BreakoutNoFrameskip-v4", repeat_action_probability=0.0, max_num_frames_per_episode=10**6)
    return BreakoutInfinite(env) if infinite else env


def paddle(ram: np.ndarray, frame: int, lives: int) -> int:
    """Follows the ball (offset measured on this ROM); fires to serve."""
    if frame % 50 == 0 or ram[57] != lives:
        return FIRE
    ball, pad = int(ram[BALL_X]), int(ram[PADDLE_X])
    if ball == 0:
        return NOOP
    return RIGHT if ball > pad + 12 else LEFT if ball < pad + 8 else NOOP


def play(infinite: bool, start_score: int, frames: int) -> dict[str, np.ndarray]:
    """Frame by frame: reward, RAM score after the frame, bricks left (bits set)."""
    env = breakout(infinite)
    env.reset(seed=0)
    ale = env.unwrapped.ale
    rewards, scores, bricks = [], [], []
    lives = 5
    for t in range(frames):
        if t == SETUP_FRAME:
            for i in range(36):
                if i % 6 != ROW:
                    ale.setRAM(i, 0)
            write_score(ale, start_score)
        ram = ale.getRAM()
        action = paddle(ram, t, lives)
        lives = int(ram[57])
        _, reward, terminated, truncated, _ = env.step(action)
        ram = ale.getRAM()
        rewards.append(reward)
        scores.append(bcd_score(ram))
        bricks.append(int(np.unpackbits(ram[BRICKS]).sum()))
        if terminated or truncated:
            break
    env.close()
    rewards = np.array(rewards)
    rewards[SETUP_FRAME] = 0  # the setup's jump of the score, not play
    return {"reward": rewards, "score": np.array(scores), "bricks": np.array(bricks)}


def test_score_encoding_round_trips():
    env = breakout(False)
    env.reset(seed=0)
    for score in (0, 7, 99, 432, 863, 999):
        write_score(env.unwrapped.ale, score)
        assert bcd_score(env.unwrapped.ale.getRAM()) == score
    with pytest.raises(ValueError, match="0..999"):
        write_score(env.unwrapped.ale, 1000)


def frame_reaching(run: dict[str, np.ndarray], start: int, score: int) -> tuple[int, np.ndarray]:
    total = np.cumsum(run["reward"]) + start
    return int(np.argmax(total >= score)), total


def test_the_cartridge_rebuilds_the_wall_at_432_but_not_at_864():
    """What the wrapper relies on: the rebuild follows the RAM score being 432, not the bricks."""
    run = play(False, WALL - 8, 3000)  # two 4-point bricks before 432
    k, total = frame_reaching(run, WALL - 8, WALL)
    assert total[k] == WALL and run["bricks"][k] < FULL_WALL
    assert run["bricks"][k:].max() == FULL_WALL  # rebuilt, though the row was not cleared
    run = play(False, LIMIT - 8, 3000)
    k, total = frame_reaching(run, LIMIT - 8, LIMIT)
    assert total[k] == LIMIT
    assert (np.diff(run["bricks"][k:]) <= 0).all()  # never rebuilt: bricks only go


def test_the_patched_game_rebuilds_the_wall_and_keeps_counting():
    run = play(True, LIMIT - 8, 3000)
    k, total = frame_reaching(run, LIMIT - 8, LIMIT)
    assert total[k] == LIMIT
    # patched right after the frame that reached 864: RAM holds 432 from the next observation
    assert run["score"][k - 1] < LIMIT and run["score"][k] == WALL
    assert (run["reward"] >= 0).all()  # ALE's -432 on the next frame was cancelled
    rebuilt = k + int(np.argmax(run["bricks"][k:] == FULL_WALL))
    assert rebuilt > k and rebuilt - k < 500  # the wall comes back when the ball returns
    assert total[-1] > LIMIT + 20  # play goes on and scores past 864, on the new wall
    assert total[-1] == run["score"][-1] + WALL  # reported = RAM score + the 432 taken out


def test_the_wrapper_refuses_what_it_cannot_patch():
    import ale_py

    gym.register_envs(ale_py)
    with pytest.raises(ValueError, match="frameskip 1"):
        BreakoutInfinite(gym.make("ALE/Breakout-v5"))
    with pytest.raises(ValueError, match="needs Breakout"):
        BreakoutInfinite(gym.make("PongNoFrameskip-v4"))


def test_table5_evaluates_breakout_cells_on_breakout_infinite(tmp_path: Path):
    """A trained Breakout cell scored on breakout_infinite lands in eval/breakout_infinite/."""
    res = subprocess.run([PYTHON, "src/train.py", "experiment=smoke", f"run_root={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", f"run_root={tmp_path}",
                          "eval.game=breakout_infinite", "eval.games=3", "eval.num_envs=3", "eval.max_frames=4000"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    cell = RunLayout(tmp_path).cell("smoke", "breakout", "nature_cnn", 1)
    summary = json.loads(cell.eval_summary("breakout_infinite").read_text())
    assert summary["n"] == 3 and summary["settings"]["eval_game"] == "breakout_infinite"
    assert not cell.eval_summary("breakout").exists()
    # the native backend cannot write RAM: refused in one line, not silently unpatched
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", f"run_root={tmp_path}",
                          "eval.game=breakout_infinite", "env.backend=native", "eval.overwrite=true"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "env.backend=native" in res.stderr.strip().splitlines()[-1]


def test_the_env_factory_puts_the_wrapper_under_the_frame_skip():
    from omegaconf import OmegaConf

    from fls.facts import CONF_DIR
    from fls.envs import MaxAndSkip, make_vec_env

    game = OmegaConf.load(CONF_DIR / "game" / "breakout_infinite.yaml")
    env_cfg = OmegaConf.load(CONF_DIR / "env" / "atari.yaml")
    with make_vec_env(game, env_cfg, 1) as vec:
        chain, env = [], vec.envs[0]
        while hasattr(env, "env"):
            chain.append(type(env))
            env = env.env
    assert BreakoutInfinite in chain and chain.index(BreakoutInfinite) > chain.index(MaxAndSkip)
