"""Agent steps per second: the envs alone, the whole trainer, and CleanRL's env path.

- env-only SPS: the factory's vector env (fls.envs.make_vec_env), random actions; the
  ceiling the trainer could reach on that backend and env count.
- trainer SPS: the real `src/train.py` (full PPO: rollouts and updates), read from its
  metrics.csv; the first update (start-up, torch.compile) is not counted.
- CleanRL's env path: what CleanRL's ppo_atari.py steps, gymnasium's SyncVectorEnv of
  envs wrapped as its make_env does (Baselines-style reset/skip/life wrappers, then
  gymnasium's ResizeObservation, GrayscaleObservation, FrameStackObservation), for the
  peer's reference.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np

from fls.facts import REPO, load_group, script
from fls.games import game_config
from fls.rundir import RunLayout
from fls.envs import EpisodicLife, FireReset, MaxAndSkip, NoopReset, make_vec_env


def game_cfg(game: str = "breakout"):
    return game_config(game)


def env_sps(backend: str, num_envs: int, steps: int, game: str = "breakout") -> float:
    env_cfg = load_group("env", "atari")
    env_cfg.backend = backend
    rng = np.random.default_rng(0)
    with make_vec_env(game_cfg(game), env_cfg, num_envs) as envs:
        envs.reset(seed=0)
        actions = rng.integers(0, envs.num_actions, (steps, num_envs))
        envs.step(actions[0])  # threads started, buffers touched
        start = time.perf_counter()
        for a in actions[1:]:
            envs.step(a)
        return (steps - 1) * num_envs / (time.perf_counter() - start)


def cleanrl_env(env_id: str):
    def thunk():
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(env_id, disable_env_checker=True)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = NoopReset(env, noop_max=30)
        env = MaxAndSkip(env, skip=4)
        env = EpisodicLife(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireReset(env)
        env = gym.wrappers.TransformReward(env, np.sign)
        env = gym.wrappers.ResizeObservation(env, (84, 84))
        env = gym.wrappers.GrayscaleObservation(env)
        return gym.wrappers.FrameStackObservation(env, 4)

    return thunk


def cleanrl_env_sps(num_envs: int, steps: int, game: str = "breakout") -> float:
    envs = gym.vector.SyncVectorEnv([cleanrl_env(game_cfg(game).env_id) for _ in range(num_envs)])
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, envs.single_action_space.n, (steps, num_envs))
    envs.step(actions[0])
    start = time.perf_counter()
    for a in actions[1:]:
        envs.step(a)
    envs.close()
    return (steps - 1) * num_envs / (time.perf_counter() - start)


def trainer_sps(num_envs: int, updates: int, *overrides: str, model: str = "sparse_fls",
                game: str = "breakout") -> float:
    """Steady-state SPS of src/train.py over updates 2..updates+1."""
    with tempfile.TemporaryDirectory() as root:
        steps = num_envs * 128 * (updates + 1)
        cmd = [sys.executable, str(script("train")), f"run_root={root}", "study=bench", "seed=1", "logger=none",
               f"game={game}", f"model={model}", f"num_envs={num_envs}", f"total_timesteps={steps}",
               "checkpoint_every=1000", *overrides]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        metrics = RunLayout(root).cell("bench", game, model, 1).metrics
        with metrics.open() as f:
            rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    return (int(last["global_step"]) - int(first["global_step"])) / (
        float(last["global/seconds"]) - float(first["global/seconds"]))
