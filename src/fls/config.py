"""Checks on composed configs: one clear line for bad input, before anything is written."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fls.envs import ENV_SWITCHES, check_env_config
from fls.errors import ConfigError
from fls.rundir import NAME, cell_from_config

# conf/ of this checkout: where evaluation and analysis find game configs by name
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

DEVICES = ("auto", "cpu", "cuda")
PACK_BY = ("none", "seeds")
PACK_BATCHING = ("auto", "vmap", "loop")  # fls.seed_pack
# Seeds of torch, numpy (< 2**32) and the envs (seed + i, and resumed runs' seeds, < 2**31)
SEED_LIMIT = 2**30
# docs/protocol.md#ppo: what each PPO key accepts
PPO_POSITIVE = ("learning_rate", "adam_eps", "clip_coef", "max_grad_norm")
PPO_NON_NEGATIVE = ("ent_coef", "vf_coef")
PPO_UNIT = ("gamma", "gae_lambda")
PPO_COUNTS = ("num_steps", "num_minibatches", "update_epochs")
# Every boolean key of conf/ (tests/test_durability.py holds the list to the files): each must
# be true or false. Hydra reads `overwrite=no` as the string "no", which Python calls true:
# it discarded a finished cell. The keys an entry's config lacks are not checked there.
SWITCHES = (
    "overwrite", "video",
    "ppo.anneal_lr", "ppo.clip_vloss", "ppo.norm_adv",
    *(f"env.{key}" for key in ENV_SWITCHES),
    "game.infinite",
    "speed.channels_last", "speed.compile", "speed.bf16", "speed.fused_adam",
    "eval.sample", "eval.overwrite", "eval.allow_unfinished",
    "saliency.highscore_trials", "saliency.overwrite",
    "plan.evaluate", "plan.breakout_infinite", "plan.saliency",
)


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


def as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value}: expected a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}={value}: expected a finite number")
    return number


def check_seed(value: Any) -> int:
    if isinstance(value, str) and "-" in value.strip()[1:]:
        raise ConfigError(
            f"seed={value} is a range: sweep it with -m (python src/train.py -m seed={value})"
        )
    # an int as Hydra parses it: 1.0 or "1" would name another cell directory than seed=1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"seed={value}: expected an integer from 0 to {SEED_LIMIT - 1} "
                          "(ranges like seed=0-4 need -m)")
    return value


def check_ppo(ppo: Any) -> None:
    for key in PPO_COUNTS:
        if as_int(f"ppo.{key}", ppo[key]) <= 0:
            raise ConfigError(f"ppo.{key}={ppo[key]}: expected a positive integer")
    for key in PPO_POSITIVE:
        if as_float(f"ppo.{key}", ppo[key]) <= 0:
            raise ConfigError(f"ppo.{key}={ppo[key]}: expected a positive number")
    for key in PPO_NON_NEGATIVE:
        if as_float(f"ppo.{key}", ppo[key]) < 0:
            raise ConfigError(f"ppo.{key}={ppo[key]}: expected a number >= 0")
    for key in PPO_UNIT:
        if not 0 <= as_float(f"ppo.{key}", ppo[key]) <= 1:
            raise ConfigError(f"ppo.{key}={ppo[key]}: expected a number from 0 to 1")


def check_switches(cfg: Any) -> None:
    """Every key of SWITCHES that `cfg` has is true or false (not "no", 1, "abc")."""
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=None) if OmegaConf.is_config(cfg) else _select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value}: expected true or false")


def _select(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        if not hasattr(cfg, "get"):
            return None
        cfg = cfg.get(part)
    return cfg


def check_name(key: str, value: Any) -> str:
    """A study (or other) name that is one folder of the run layout."""
    if not isinstance(value, str) or not NAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{key}={value}: expected a name of letters, digits, '_', '-', '.' "
                          "(one folder, not a path)")
    return value


def check_writable(key: str, path: Path | str) -> None:
    """`path` can be created and written: its first existing ancestor is a folder we may
    write in (probed with a temporary file that is removed at once)."""
    path = Path(path).absolute()
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={path}: {ancestor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".fls-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{key}={path}: cannot write in {ancestor} ({e.strerror})") from None


def check_cell_location(cfg: Any) -> None:
    """study= and run_root= name a cell directory this process can write."""
    check_name("study", cfg.study)
    check_writable("run_root", cfg.run_root)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is refused, not ignored."""
    if name not in DEVICES:
        raise ConfigError(f"device={name}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA GPU is visible here (use device=auto or device=cpu)")
    return torch.device(name)


def pack_seeds(cfg: Any) -> list[int]:
    """The seeds whose cells one job trains or evaluates: pack.seeds in a packed job
    (conf/pack/seeds.yaml), else the cell's own seed. Raises ConfigError."""
    check_seed(cfg.seed)
    pack = cfg.get("pack") or {}
    by, seeds = pack.get("by", "none"), pack.get("seeds")
    if by not in PACK_BY:
        raise ConfigError(f"pack.by={by}: expected one of {', '.join(PACK_BY)} (pack=none or pack=seeds)")
    if seeds is None:
        return [int(cfg.seed)]
    if by != "seeds":
        raise ConfigError(f"pack.seeds={seeds}: a job trains several seeds only with pack=seeds")
    if isinstance(seeds, (str, int)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
        raise ConfigError(f"pack.seeds={seeds}: expected a list of seeds, e.g. pack.seeds=[0,1,2]")
    chosen = [check_seed(s) for s in seeds]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"pack.seeds={list(chosen)}: a seed appears twice; expected distinct seeds")
    if int(cfg.seed) not in chosen:  # Hydra's run directory (the job's own log) is seed's cell
        raise ConfigError(f"seed={cfg.seed}: a packed job's seed must be one of pack.seeds={list(chosen)} "
                          f"(e.g. seed={chosen[0]}; the sweeper sets the first)")
    return chosen


def pack_batching(cfg: Any) -> str:
    """How a packed job's models run (pack.batching, fls.seed_pack): auto, vmap or loop.
    Raises ConfigError."""
    batching = (cfg.get("pack") or {}).get("batching", "auto")
    if batching not in PACK_BATCHING:
        raise ConfigError(f"pack.batching={batching}: expected one of {', '.join(PACK_BATCHING)} "
                          "(vmap: stacked parameters, for GPUs; loop: one model after another, for CPUs)")
    return batching


def cell_configs(cfg: Any) -> list[Any]:
    """The config of each cell one job runs: `cfg` itself, or one copy per seed of pack.seeds."""
    seeds = pack_seeds(cfg)
    if (cfg.get("pack") or {}).get("seeds") is None:
        return [cfg]
    cells = []
    for seed in seeds:
        one = copy.deepcopy(cfg)
        one.seed = seed
        cells.append(one)
    return cells


def check_train_config(cfg: Any) -> None:
    """Every reason a training cell could not start, as one ConfigError."""
    check_switches(cfg)
    if len(pack_seeds(cfg)) > 1 and cfg.get("zoo"):
        raise ConfigError(f"zoo={cfg.zoo}: a zoo entry is one cell and trains further alone; use pack=none")
    pack_batching(cfg)
    steps = as_int("total_timesteps", cfg.total_timesteps)
    if steps <= 0:
        raise ConfigError(f"total_timesteps={cfg.total_timesteps}: must be a positive number of agent steps")
    envs = as_int("num_envs", cfg.num_envs)
    if envs <= 0:
        raise ConfigError(f"num_envs={cfg.num_envs}: must be a positive integer")
    check_ppo(cfg.ppo)
    batch = envs * int(cfg.ppo.num_steps)  # one rollout (check_ppo has checked num_steps)
    if batch % int(cfg.ppo.num_minibatches):
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
    if as_float("log_every_s", cfg.log_every_s) < 0:
        raise ConfigError(f"log_every_s={cfg.log_every_s}: expected a number of seconds >= 0")
    if as_int("torch_threads", cfg.torch_threads) < 0:
        raise ConfigError(f"torch_threads={cfg.torch_threads}: expected 0 (torch's default) or a positive integer")
    resolve_device(cfg.device)
    check_env_config(cfg.env, cfg.game)
    check_cell_location(cfg)
    if cfg.get("zoo"):
        if cfg.overwrite:
            raise ConfigError(f"zoo={cfg.zoo} with overwrite=true: a cell trained further from an entry is not "
                              "discarded this way; remove its directory, or use another run_root=")
        from fls import zoo  # zoo reads the config's helpers: imported here, not at the top

        zoo.check_continuation(cfg, cell_from_config(cfg), batch)
