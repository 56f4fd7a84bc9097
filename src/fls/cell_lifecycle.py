"""Start, skip, resume or discard a training cell: what a re-run or a requeued job finds.

- A finished cell is skipped with a message.
- An unfinished cell resumes from its checkpoint, provided it is asked to train the
  same thing (the keys in TRAINING_KEYS); anything else is refused rather than mixed.
- `overwrite=true` is the only way to discard a cell's results.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fls.config import changes
from fls.errors import ConfigError
from fls.train_log import MetricsCSV
from fls.rundir import LOCK_PREFIX, REPO, CellDir, atomic_write_text, durable_step, remove_if_empty, remove_temporaries

log = logging.getLogger(__name__)

# What a cell trains; the other keys (device, logger, launcher, checkpoint_every, ...)
# may change between a run and its resume.
TRAINING_KEYS = ("game", "model", "ppo", "env", "seed", "total_timesteps", "num_envs")
FREE_ENV_KEYS = ("num_threads",)
# what videos read off the screen (fls.saliency.ball), not what training does: a cell trained
# before a game config located its ball resumes, and a zoo entry trains further
FREE_GAME_KEYS = ("ball",)


def training_identity(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    ident = {k: container.get(k) for k in TRAINING_KEYS}
    if isinstance(ident.get("env"), dict):
        ident["env"] = {k: v for k, v in ident["env"].items() if k not in FREE_ENV_KEYS}
    if isinstance(ident.get("game"), dict):
        ident["game"] = {k: v for k, v in ident["game"].items() if k not in FREE_GAME_KEYS}
    return ident


def source_commit() -> str | None:
    """The commit of the checkout this code runs from (None outside git); a run records it
    so its results can be traced to the code that made them."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def job_info() -> dict[str, Any]:
    """Where this process runs, for status.json and sweep-status."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "commit": source_commit()}
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        if var in os.environ:
            info[var.lower()] = os.environ[var]
    return info


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def refuse(cfg: DictConfig, error: Exception) -> None:
    """A run that cannot go on: one line and exit status 2 (bad config) or 1 (bad files).

    In a sweep the error is raised instead, so this cell alone fails and the sweeper's
    summary reports it while the other cells go on.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        # Hydra made the job's directory before the config could be checked.
        remove_if_empty(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.run_root)))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise error
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2 if isinstance(error, ConfigError) else 1)


# What overwrite=true removes first: the results made from the checkpoint (a kill half-way
# must not leave an evaluation of the old checkpoint beside a new one), then the checkpoint
# and status (the cell is then one to start over), then the rest.
DISCARD_FIRST = ("eval", "video", "saliency", "checkpoint.pt", "status.json")


def discard(cell: CellDir) -> None:
    """Remove a cell's results (not the lock this run holds), in an order that a kill at any
    point leaves a cell that a rerun with overwrite=true discards, and one without starts over
    or refuses, never one that mixes the old cell's results with a new one's."""
    order = {name: i for i, name in enumerate(DISCARD_FIRST)}
    children = sorted((c for c in cell.path.iterdir() if not c.name.startswith(LOCK_PREFIX)),
                      key=lambda c: (order.get(c.name, len(order)), c.name))
    for child in children:
        durable_step("remove", child)
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def open_training_cell(cfg: DictConfig, cell: CellDir) -> CellDir | None:
    """The cell to train, or None when it is already done. Raises ConfigError. The caller
    has checked the config (check_train_config) and holds the cell's training lock."""
    if cfg.overwrite and cell.path.exists():
        discard(cell)
        log.warning("overwrite=true: discarded %s", cell.path)
    removed = remove_temporaries(cell.path) if cell.path.is_dir() else 0
    if removed:
        log.info("%s: removed %d temporary file(s) of a write that never finished", cell.path, removed)
    ident = training_identity(cfg)
    if cell.config.exists():
        recorded = training_identity(cell.recorded_config())
        differ = [f"{key}: {a} -> {b}" for key, a, b in changes(recorded, ident)]
        if differ:
            raise ConfigError(
                f"{cell.path} was started with a different config ({'; '.join(differ[:4])}); "
                "use another study=, or overwrite=true to discard it"
            )
    elif cell.status_file.exists() or cell.has_checkpoint() or cell.metrics.exists():
        raise ConfigError(
            f"{cell.path} has training results but no config.yaml, so what they were trained with "
            "cannot be checked; restore its config.yaml, or overwrite=true to discard the cell"
        )
    else:
        cell.path.mkdir(parents=True, exist_ok=True)
        config = OmegaConf.to_container(cfg, resolve=True)
        config.pop("hydra", None)
        atomic_write_text(cell.config, OmegaConf.to_yaml(config))
    started_from = (cell.status().get("continued_from") or {}).get("entry")
    if started_from and not cell.has_checkpoint():  # fls.zoo.continue_training stopped half-way
        raise ConfigError(f"{cell.path} was being started from zoo entry {started_from} and has no checkpoint yet; "
                          f"run the line again with zoo={started_from}")
    if cell.is_done():
        status = cell.status()
        log.info(
            "%s is done (%s agent steps, finished %s); skipping. overwrite=true retrains it.",
            cell.cell.key, status.get("global_step"), status.get("finished_at"),
        )
        return None
    MetricsCSV(cell.metrics).rows()  # a damaged file is named now, before envs and model are built
    return cell
