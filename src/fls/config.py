"""Checks on composed configs: one clear line for bad input, before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fls.envs import check_env_config
from fls.errors import ConfigError

# conf/ of this checkout: where evaluation and analysis find game configs by name
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

DEVICES = ("auto", "cpu", "cuda")


def changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf where two nested dicts differ,
    in key order: what a refused resume or a recomputed evaluation names."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def group_options(group: str) -> list[str]:
    """The names of a config group's options (conf/<group>/*.yaml), sorted."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_group(group: str, name: str, key: str | None = None) -> Any:
    """One option of a config group outside a Hydra composition (conf/<group>/<name>.yaml),
    e.g. load_group("game", "breakout_infinite"); a ConfigError names `key` (default: the
    group) and the accepted names."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{key or group}={name}: no such {group}; expected one of {', '.join(group_options(group))}")
    return OmegaConf.load(path)


def as_int(key: str, value: Any, *, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: expected an integer{hint}")
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}={value}: expected an integer{hint}") from None


def check_seed(value: Any) -> int:
    if isinstance(value, str) and "-" in value.strip()[1:]:
        raise ConfigError(
            f"seed={value} is a range: sweep it with -m (python src/train.py -m seed={value})"
        )
    return as_int("seed", value, hint=" (ranges like seed=0-4 need -m)")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is refused, not ignored."""
    if name not in DEVICES:
        raise ConfigError(f"device={name}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA GPU is visible here (use device=auto or device=cpu)")
    return torch.device(name)


def check_train_config(cfg: Any) -> None:
    """Every reason a training cell could not start, as one ConfigError."""
    check_seed(cfg.seed)
    steps = as_int("total_timesteps", cfg.total_timesteps)
    if steps <= 0:
        raise ConfigError(f"total_timesteps={cfg.total_timesteps}: must be a positive number of agent steps")
    envs = as_int("num_envs", cfg.num_envs)
    if envs <= 0:
        raise ConfigError(f"num_envs={cfg.num_envs}: must be a positive integer")
    batch = envs * as_int("ppo.num_steps", cfg.ppo.num_steps)
    minibatches = as_int("ppo.num_minibatches", cfg.ppo.num_minibatches)
    if batch <= 0 or minibatches <= 0 or batch % minibatches:
        raise ConfigError(
            f"ppo.num_minibatches={cfg.ppo.num_minibatches}: must divide num_envs x ppo.num_steps = {batch}"
        )
    if steps < batch:
        raise ConfigError(
            f"total_timesteps={cfg.total_timesteps}: less than one rollout "
            f"(num_envs x ppo.num_steps = {batch}); use at least {batch}"
        )
    if as_int("checkpoint_every", cfg.checkpoint_every) <= 0:
        raise ConfigError(f"checkpoint_every={cfg.checkpoint_every}: must be a positive number of updates")
    resolve_device(cfg.device)
    check_env_config(cfg.env, cfg.game)
