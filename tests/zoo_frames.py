"""Real trained agents and the real Breakout stacks they play, for the saliency checks' tests:
a zoo entry's model read straight from zoo/<entry>/weights.pt (no run directory), and a few
stacks of one greedy game on the env factory's gymnasium backend (under a second)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from omegaconf import OmegaConf

from fls.rundir import ZooEntry
from fls.zoo.entry import read_entry
from fls.envs import make_vec_env
from fls.models import ActorCritic, build_model

from conftest import REPO


@lru_cache(maxsize=None)
def zoo_model(entry: str) -> ActorCritic:
    _, weights = read_entry(ZooEntry(entry))
    model = build_model(weights["model_name"], int(weights["num_actions"]))
    model.load_state_dict({k: v.float() for k, v in weights["state_dict"].items()})
    return model.eval()


@lru_cache(maxsize=None)
def breakout_stacks(entry: str = "breakout_sparse_fls", n: int = 4, every: int = 10, seed: int = 1) -> torch.Tensor:
    """`n` stacks (uint8 n x 4 x 84 x 84) of the entry's greedy game, one every `every` agent steps."""
    model = zoo_model(entry)
    game = OmegaConf.load(REPO / "conf" / "game" / "breakout.yaml")
    env = OmegaConf.load(REPO / "conf" / "env" / "atari.yaml")
    env.backend = "gymnasium"
    stacks = []
    with make_vec_env(game, env, 1) as envs:
        obs = envs.reset(seed=seed)
        for step in range(n * every):
            obs, _ = envs.step(model.act(torch.from_numpy(obs), greedy=True).numpy())
            if step % every == every - 1:
                stacks.append(obs[0].copy())
    return torch.from_numpy(np.stack(stacks))
