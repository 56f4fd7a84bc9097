"""The env factory on the real emulator: both backends, Baselines' semantics, differences."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from fls.errors import ConfigError
from fls.envs import (
    FrameStacker,
    GymnasiumAtariVec,
    NativeAtariVec,
    check_env_config,
    make_reference_env,
    make_vec_env,
    resolve_backend,
)

from conftest import REPO


def game(name: str):
    return OmegaConf.load(REPO / "conf" / "game" / f"{name}.yaml")


def env_cfg(**overrides):
    cfg = OmegaConf.load(REPO / "conf" / "env" / "atari.yaml")
    cfg.update(overrides)
    return cfg


def test_frame_stacker_zero_fills_like_vecframestack():
    s = FrameStacker(2, k=4, shape=(1, 1))
    assert s.reset(np.array([[[1]], [[2]]], dtype=np.uint8))[:, :, 0, 0].tolist() == [[0, 0, 0, 1], [0, 0, 0, 2]]
    s.push(np.array([[[3]], [[4]]], dtype=np.uint8))
    out = s.push(np.array([[[5]], [[6]]], dtype=np.uint8), reset_mask=np.array([False, True]))
    assert out[:, :, 0, 0].tolist() == [[0, 1, 3, 5], [0, 0, 0, 6]]


def test_frame_stacker_repeat_fill_and_shifts_oldest_first():
    s = FrameStacker(2, k=4, shape=(1, 1), fill="repeat")
    first = np.array([[[1]], [[2]]], dtype=np.uint8)
    assert s.reset(first)[:, :, 0, 0].tolist() == [[1, 1, 1, 1], [2, 2, 2, 2]]
    s.push(np.array([[[3]], [[4]]], dtype=np.uint8))
    out = s.push(np.array([[[5]], [[6]]], dtype=np.uint8), reset_mask=np.array([False, True]))
    assert out[:, :, 0, 0].tolist() == [[1, 1, 3, 5], [6, 6, 6, 6]]


def test_backend_resolution_and_bad_values():
    assert resolve_backend(env_cfg(), game("breakout")) == "gymnasium"
    assert resolve_backend(env_cfg(), game("breakout_infinite")) == "gymnasium"
    assert resolve_backend(env_cfg(backend="native"), game("seaquest")) == "native"
    with pytest.raises(ConfigError, match="env.backend=auto"):
        check_env_config(env_cfg(backend="auto"), game("breakout"))
    with pytest.raises(ConfigError, match="breakout_infinite"):
        resolve_backend(env_cfg(backend="native"), game("breakout_infinite"))
    with pytest.raises(ConfigError, match="env.backend=jax"):
        check_env_config(env_cfg(backend="jax"), game("breakout"))
    with pytest.raises(ConfigError, match="env.noop_max"):
        check_env_config(env_cfg(noop_max=-1), game("breakout"))


@pytest.mark.parametrize("name", ["beamrider", "breakout", "mspacman", "spaceinvaders", "enduro", "seaquest"])
def test_every_game_builds_with_its_action_count(name):
    with make_vec_env(game(name), env_cfg(), 2) as envs:
        obs = envs.reset(seed=3)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert envs.num_actions == game(name).num_actions
        obs, step = envs.step(np.zeros(2, dtype=np.int64))
        assert obs.shape == (2, 4, 84, 84)


def test_wrong_action_count_in_config_is_refused():
    bad = game("breakout")
    bad.num_actions = 6
    with pytest.raises(ConfigError, match="4 actions"):
        make_vec_env(bad, env_cfg(), 1)


def play(envs, steps: int, seed: int = 0):
    """Random play; the per-step results of each env, stacked."""
    rng = np.random.default_rng(seed)
    first = envs.reset(seed=5)
    out = {"obs": [first], "reward": [], "done": [], "life_lost": [], "game_over": [], "frames": []}
    for _ in range(steps):
        obs, step = envs.step(rng.integers(0, envs.num_actions, envs.num_envs))
        out["obs"].append(obs)
        out["reward"].append(step.reward)
        out["done"].append(step.done)
        out["life_lost"].append(step.life_lost)
        out["game_over"].append(step.game_over)
        out["frames"].append(step.game_frames)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "rom, env_id, steps, max_pixel_fraction",
    [
        ("breakout", "BreakoutNoFrameskip-v4", 1500, 0.0),  # identical frames
        ("ms_pacman", "MsPacmanNoFrameskip-v4", 600, 0.01),  # flicker: a few pixels differ
    ],
)
def test_native_and_reference_backends_agree_step_for_step(rom, env_id, steps, max_pixel_fraction):
    """Same emulator, same seed, same actions: same rewards, lives, game ends, near-equal frames.

    The two reset procedures differ by design (see NativeAtariVec), so they are switched
    off here (no no-ops, no FIRE) and life loss does not end episodes: the Baselines soft
    reset after a lost life adds a no-op step the native env does not take.
    """
    settings = dict(noop_max=0, frame_skip=4, frame_stack=4, episodic_life=False, fire_reset=False,
                    max_episode_frames=108000)
    native = NativeAtariVec(rom, 1, **settings)
    reference = GymnasiumAtariVec(env_id, 1, **settings)
    a, b = play(native, steps), play(reference, steps)
    native.close(), reference.close()

    np.testing.assert_array_equal(a["reward"], b["reward"])
    np.testing.assert_array_equal(a["life_lost"], b["life_lost"])
    np.testing.assert_array_equal(a["game_over"], b["game_over"])
    np.testing.assert_array_equal(a["frames"], b["frames"])
    assert a["life_lost"].sum() >= 2 and a["reward"].sum() >= 1
    # Documented difference: grayscale-then-max (ALE palette) vs max-then-cv2-gray, which
    # only matters where two flickering colours overlap.
    differs = a["obs"] != b["obs"]
    assert differs.mean() <= max_pixel_fraction, differs.mean()


def test_reference_stack_follows_baselines_on_a_lost_life():
    """Life loss ends the training episode, the game goes on, the stack restarts filled."""
    envs = make_vec_env(game("breakout"), env_cfg(backend="gymnasium"), 2)
    res = play(envs, 600)
    envs.close()
    lost = np.argwhere(res["life_lost"])
    assert len(lost) >= 4
    for t, i in lost:
        assert res["done"][t, i]  # episodic life
        stack = res["obs"][t + 1, i]
        assert not stack[:3].any() and stack[3].any()  # VecFrameStack zero-fill on done
    # The whole game (5 lives) is one score: game ends are far fewer than lives lost.
    assert res["game_over"].sum() * 4 <= len(lost)


def test_native_episode_ends_on_lost_life_and_game_over_only_at_the_end():
    envs = make_vec_env(game("breakout"), env_cfg(backend="native"), 4)
    res = play(envs, 800)
    envs.close()
    assert (res["done"] == (res["life_lost"] | res["game_over"])).all()
    assert not (res["life_lost"] & res["game_over"]).any()
    ended = res["game_over"]
    assert ended.sum() >= 1
    # Breakout has 5 lives: 4 are lost before each game over.
    per_env_games = ended.sum(0)
    assert (res["life_lost"].sum(0) >= 4 * per_env_games).all()


def test_game_scores_are_unclipped_sums_of_rewards():
    envs = make_vec_env(game("spaceinvaders"), env_cfg(), 2)
    rng = np.random.default_rng(1)
    envs.reset(seed=0)
    running, seen = np.zeros(2), []
    for _ in range(3000):
        _, step = envs.step(rng.integers(0, envs.num_actions, 2))
        running += step.reward
        for i in np.flatnonzero(step.game_over):
            seen.append((step.game_score[i], running[i]))
            running[i] = 0
    envs.close()
    assert seen and all(a == b for a, b in seen)
    assert max(a for a, _ in seen) > 1  # Space Invaders pays 5-30 points per alien


@pytest.mark.parametrize("backend", ["gymnasium", "native"])
def test_frame_limit_truncates_the_game(backend):
    envs = make_vec_env(game("breakout"), env_cfg(backend=backend), 2, max_episode_frames=400)
    envs.reset(seed=0)
    truncated = []
    for _ in range(150):
        _, step = envs.step(np.zeros(2, dtype=np.int64))  # NOOP: no ball is lost in 400 frames
        truncated += [(bool(t), int(f)) for t, f, g in zip(step.truncated, step.game_frames, step.game_over) if g]
    envs.close()
    assert truncated and all(t for t, _ in truncated)
    assert all(400 <= f <= 430 for _, f in truncated)  # the limit plus at most the reset's no-ops


def test_reference_env_is_baselines_order():
    env = make_reference_env("BreakoutNoFrameskip-v4")
    names = []
    while hasattr(env, "env"):
        names.append(type(env).__name__)
        env = env.env
    assert names[:6] == ["WarpFrame", "FireReset", "EpisodicLife", "MaxAndSkip", "NoopReset", "GameStats"]


def test_the_training_cap_is_the_games_own():
    # no cap of the trainer's own: a game is cut at gym's NoFrameskip-v4 frame cap
    for backend in ("gymnasium", "native"):
        envs = make_vec_env(game("spaceinvaders"), env_cfg(backend=backend), 1)
        if backend == "gymnasium":
            assert envs.envs[0].unwrapped.ale.getInt("max_num_frames_per_episode") == 300_000
        else:
            assert envs.max_episode_frames == 300_000
        envs.close()


def noop_games(backend: str, steps: int) -> dict:
    envs = make_vec_env(game("breakout"), env_cfg(backend=backend), 1)
    envs.reset(seed=3)
    lives_lost = games = 0
    for _ in range(steps):
        _, step = envs.step(np.zeros(1, dtype=np.int64))
        lives_lost += int(step.life_lost[0])
        games += int(step.game_over[0])
    envs.close()
    return {"lives_lost": lives_lost, "games": games}


def test_default_backend_relaunches_the_ball_after_every_lost_life():
    """Baselines' FireResetEnv above EpisodicLifeEnv: after each lost life the env itself
    presses FIRE (then action 2), so an agent that never presses FIRE still loses all five
    balls and the game ends. The native backend leaves the ball in the paddle after the
    first lost life: the same NOOP agent then plays one endless game."""
    reference = noop_games("gymnasium", 1500)
    assert reference["games"] >= 1 and reference["lives_lost"] >= 4
    native = noop_games("native", 1500)
    assert native["games"] == 0 and native["lives_lost"] == 1


def test_games_without_fire_get_no_fire_reset():
    names = []
    env = make_reference_env("MsPacmanNoFrameskip-v4")
    assert "FIRE" not in env.unwrapped.get_action_meanings()
    while hasattr(env, "env"):
        names.append(type(env).__name__)
        env = env.env
    assert "FireReset" not in names and "EpisodicLife" in names
