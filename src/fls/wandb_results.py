"""Evaluation and saliency results, to the cell's W&B run when `logger=wandb`.

Evaluation (fls.evaluation) and Atari-HEAD scoring (fls.gaze_scores) call these where
they publish a new result. The cell's training run is resumed (its id is in status.json)
as a segment of job type `evaluate` or `saliency`, so W&B shows a cell's curves and its
results in one run; a cell trained without W&B gets a run of its own, named, grouped and
configured as its training run would have been, so the study's dashboard
(studies/dashboard.py) finds it by its config.

- Numbers go to the run's summary: `eval/<eval game>/mean|std|median|n|...` (Table 3, and
  Table 5 for eval game breakout_infinite) and
  `saliency/<preset>/<resolution>/<alignment>/<map>/<nss|kl|sauc>` (Table 4, means over the
  cell's trials). A summary has no step: an offline run resumed restarts `_step` at 0
  (wandb/wandb#5865, wandb PR #11144), which could hide logged rows, never summary values.
- Rows go as tables: `eval/<eval game>/table` (the cell's Table 3/5 row),
  `eval/<eval game>/games` (one row per game), `saliency/trials` (trials.csv, Table 4's
  rows); and a few of the model's maps on the Atari-HEAD screen as `saliency/maps` images.

The run directory stays the record: the analysis never reads these back, and a W&B failure
is a warning, never a lost result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fls.errors import CellDamaged
from fls.rundir import CellDir
from fls.overlay import overlay_on_screen
from fls.train_log import WandbRun

log = logging.getLogger(__name__)

EVAL_SUMMARY = ("mean", "std", "min", "max", "n", "truncated", "mean_frames", "mean_agent_steps", "seconds",
                "checkpoint_update")
METRICS = ("nss", "kl", "sauc")


def eval_key(eval_game: str, key: str) -> str:
    """Where a cell's run holds an evaluation number or table: eval/<eval game>/<key>."""
    return f"eval/{eval_game}/{key}"


def _wanted(cfg: DictConfig) -> bool:
    return str(cfg.logger.name) == "wandb"


def _open(cfg: DictConfig, cell: CellDir, job_type: str) -> Any:
    """The cell's W&B run, resumed (or a new one, with the cell's config, if it has none)."""
    try:
        status = cell.status()
        config = cell.recorded_config() if cell.config.exists() else {}
    except CellDamaged:
        status, config = {}, {}
    return WandbRun(cfg.logger, cell, config, status.get("wandb_run_id"), job_type=job_type)


def log_evaluation(cfg: DictConfig, cell: CellDir, eval_game: str, summary: dict[str, Any], games: pd.DataFrame) -> None:
    """A new evaluation of `cell` on `eval_game`: its summary numbers, its row and its games."""
    if not _wanted(cfg):
        return
    try:
        import wandb

        c = cell.cell
        run = _open(cfg, cell, "evaluate")
        for key in EVAL_SUMMARY:
            if summary.get(key) is not None:
                run.run.summary[eval_key(eval_game, key)] = summary[key]
        row = {"study": c.study, "game": c.game, "model": c.model, "seed": c.seed, "eval_game": eval_game,
               **{k: summary.get(k) for k in ("mean", "std", "n", "truncated", "checkpoint_update")}}
        run.run.log({eval_key(eval_game, "table"): wandb.Table(dataframe=pd.DataFrame([row])),
                     eval_key(eval_game, "games"): wandb.Table(dataframe=games.reset_index(drop=True))})
        run.finish()
    except Exception as e:  # noqa: BLE001 - W&B is a copy; the result is on disk
        log.warning("%s: the evaluation on %s is saved, but W&B did not take it (%s: %s)", cell.cell.key, eval_game,
                    type(e).__name__, e)


def log_saliency(cfg: DictConfig, cell: CellDir, trials: pd.DataFrame, shown: tuple[int, Any] | None) -> None:
    """New Atari-HEAD scores of `cell`: the means over its trials, the trial rows, and the
    model's maps on a few screens of one trial (`shown`: trial id and its PlayedTrial)."""
    if not _wanted(cfg):
        return
    try:
        import wandb

        run = _open(cfg, cell, "saliency")
        keys = ["preset", "resolution", "alignment", "map"]
        for values, part in trials.groupby(keys, sort=False):
            for metric in METRICS:
                mean = part[metric].mean()
                if not np.isnan(mean):
                    run.run.summary["saliency/" + "/".join(map(str, values)) + f"/{metric}"] = float(mean)
        c = cell.cell
        table = trials.assign(study=c.study, game=c.game, model=c.model, seed=c.seed)
        logged: dict[str, Any] = {"saliency/trials": wandb.Table(dataframe=table.reset_index(drop=True))}
        images = _map_images(shown)
        if images:
            logged["saliency/maps"] = images
        run.run.log(logged)
        run.finish()
    except Exception as e:  # noqa: BLE001 - W&B is a copy; the result is on disk
        log.warning("%s: the saliency scores are saved, but W&B did not take them (%s: %s)", cell.cell.key,
                    type(e).__name__, e)


def _map_images(shown: tuple[int, Any] | None) -> list[Any]:
    """The model's own map (or the first map drawn) on the kept screens of one trial."""
    if shown is None:
        return []
    import wandb

    trial_id, played = shown
    if not played.saliency:
        return []
    name = "model" if "model" in played.saliency else next(iter(played.saliency))
    maps = played.saliency[name]
    images = []
    for k, raw in sorted(played.shots.items()):
        if k < len(maps):
            peak = float(maps[k].max()) or 1.0
            images.append(wandb.Image(overlay_on_screen(raw, maps[k], peak),
                                      caption=f"trial {trial_id}, processed frame {k} (raw {int(played.indices[k])}): {name} map"))
    return images
