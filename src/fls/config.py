"""Checks on composed configs that every app shares: one clear line for bad input, before
anything is written. Each app's own check (fls.training_cell.check_train_config,
fls.video.check_evaluate_config, fls.saliency_checks.check_config) is built of
these; reading a value as a number is fls.facts'.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fls.envs import ENV_SWITCHES
from fls.errors import ConfigError
from fls.facts import as_float, as_int
from fls.rundir import NAME

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
    "game.infinite", "game.evaluation_only",
    "speed.channels_last", "speed.compile", "speed.bf16", "speed.fused_adam",
    "eval.sample", "eval.overwrite", "eval.allow_unfinished",
    "saliency.highscore_trials", "saliency.overwrite",
    "plan.evaluate", "plan.breakout_infinite", "plan.saliency",
)
# What a cell trains: a cell resumes, and a zoo entry trains further, only with the same. The
# other keys (device, logger, launcher, checkpoint_every, ...) may change between a run and its
# resume, and so may these env and game keys:
TRAINING_KEYS = ("game", "model", "ppo", "env", "seed", "total_timesteps", "num_envs")
FREE_ENV_KEYS = ("num_threads",)
# what videos read off the screen (fls.saliency.ball) and what the studies and tables read of a
# game, not what training does: a cell trained before a game config said them resumes, and a zoo
# entry trains further
FREE_GAME_KEYS = ("ball", "evaluation_only", "played_by")


def training_identity(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The keys of a config (composed, or a cell's config.yaml) that make what a cell trains."""
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    ident = {k: container.get(k) for k in TRAINING_KEYS}
    if isinstance(ident.get("env"), dict):
        ident["env"] = {k: v for k, v in ident["env"].items() if k not in FREE_ENV_KEYS}
    if isinstance(ident.get("game"), dict):
        ident["game"] = {k: v for k, v in ident["game"].items() if k not in FREE_GAME_KEYS}
    return ident


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


def check_listed(key: str, value: Any, accepted: tuple[str, ...] | list[str], expected: str = "one of") -> list[str]:
    """A list setting (or one name) whose every entry is one of `accepted`: its entries in
    order, each once. `expected` words the refusal ("some of" where several are asked for)."""
    values = [value] if isinstance(value, str) else list(value or [])
    if not values:
        raise ConfigError(f"{key}=[]: give at least one of {', '.join(accepted)}")
    for v in values:
        if v not in accepted:
            raise ConfigError(f"{key}={v}: expected {expected} {', '.join(accepted)}")
    return list(dict.fromkeys(values))


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


def check_threads(value: Any) -> int:
    """torch_threads=: 0 (torch's default, one per core) or a positive integer."""
    threads = as_int("torch_threads", value)
    if threads < 0:
        raise ConfigError(f"torch_threads={value}: expected 0 (torch's default) or a positive integer")
    return threads


def use_device(cfg: Any) -> torch.device:
    """The device `cfg` names (resolve_device), with torch's CPU threads set to torch_threads:
    every app computes on what this returns."""
    device = resolve_device(cfg.device)
    threads = check_threads(cfg.torch_threads)
    if threads:
        torch.set_num_threads(threads)
    return device


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
