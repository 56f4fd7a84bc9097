"""Reading a study from its run directories (fls.rundir's layout), with no server.

Every reader returns a DataFrame keyed by the cell (`game`, `model`, `seed`) and tolerates
a half-finished sweep: a cell with no metrics, an empty or header-only metrics.csv, NaN
eprewmean rows (no game finished yet), an evaluation still running (no summary.json), or
no saliency metrics yet simply contributes no rows.

The sources (this one, and `wandb_source.WandbSource`) share one interface:

    cells()            game, model, seed, state         the cells that exist (state: status.json)
    metrics()          game, model, seed, frames, eprewmean       one row per PPO update
    eval_games(g)      game, model, seed, eval_game, score, frames, agent_steps, truncated, backend   one row per game
    saliency()         game, model, seed + trials.csv's columns    one row per Atari-HEAD trial
    saliency_frames(game, trial, preset, resolution, alignment)
                       model, seed, frame, map, nss, kl, sauc      one row per frame and map of one trial
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fls.errors import CellDamaged
from fls.rundir import EPREWMEAN, X_AXIS, CellDir, RunLayout

KEYS = ["game", "model", "seed"]
CELL_COLUMNS = [*KEYS, "state"]
METRIC_COLUMNS = [*KEYS, "frames", "eprewmean"]
GAME_COLUMNS = [*KEYS, "eval_game", "score", "frames", "agent_steps", "truncated", "backend"]
TRIAL_COLUMNS = ["trial", "map", "preset", "resolution", "alignment", "nss", "kl", "sauc",
                 "nss_frames", "kl_frames", "sauc_frames", "frames", "checkpoint_global_step"]
SALIENCY_COLUMNS = [*KEYS, *TRIAL_COLUMNS]
FRAME_COLUMNS = ["model", "seed", "frame", "map", "nss", "kl", "sauc"]
NOT_STARTED = "not started"


class SourceError(Exception):
    """A source that cannot be read (e.g. W&B unreachable or not logged in): one line for the user."""


def empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "seed" else "object") for c in columns})


def read_metrics_csv(path: Path) -> pd.DataFrame:
    """frames and eprewmean of one metrics.csv; rows with no eprewmean yet are dropped."""
    try:
        # on_bad_lines: a trainer killed mid-row leaves a short last line
        raw = pd.read_csv(path, usecols=lambda c: c in (X_AXIS, EPREWMEAN), on_bad_lines="skip")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        raw = pd.DataFrame()
    if X_AXIS not in raw or EPREWMEAN not in raw:
        return pd.DataFrame({"frames": pd.Series(dtype="float64"), "eprewmean": pd.Series(dtype="float64")})
    frame = pd.DataFrame({"frames": pd.to_numeric(raw[X_AXIS], errors="coerce"),
                          "eprewmean": pd.to_numeric(raw[EPREWMEAN], errors="coerce")})
    return clean_curve(frame)


def clean_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Finite points only, by frames, one value per frame count (the last one logged)."""
    frame = frame.astype({"frames": "float64", "eprewmean": "float64"})
    frame = frame[np.isfinite(frame["frames"]) & np.isfinite(frame["eprewmean"])]
    frame = frame.drop_duplicates("frames", keep="last").sort_values("frames")
    return frame.reset_index(drop=True)


def _with_keys(frame: pd.DataFrame, cell: CellDir) -> pd.DataFrame:
    c = cell.cell
    return frame.assign(game=c.game, model=c.model, seed=c.seed)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty(columns)
    return pd.concat(frames, ignore_index=True)[columns]


class FileSource:
    """One study's files under a run root."""

    description = "run directories"

    def __init__(self, run_root: Path | str, study: str):
        self.layout = RunLayout(run_root)
        self.study = study
        self.description = str(self.layout.study_dir(study))
        self._games: dict[str | None, pd.DataFrame] = {}  # read once: Tables 3 and 5, stats and Figures 8-14 share them

    def _cells(self) -> list[CellDir]:
        return list(self.layout.cells(self.study))

    def cells(self) -> pd.DataFrame:
        rows = []
        for cell in self._cells():
            try:
                state = cell.status().get("state") or NOT_STARTED
            except ValueError:  # a status.json caught mid-write by a non-atomic writer
                state = "unknown"
            rows.append((cell.cell.game, cell.cell.model, cell.cell.seed, state))
        return pd.DataFrame(rows, columns=CELL_COLUMNS) if rows else empty(CELL_COLUMNS)

    def metrics(self) -> pd.DataFrame:
        frames = [_with_keys(read_metrics_csv(c.metrics), c) for c in self._cells()]
        return _concat(frames, METRIC_COLUMNS)

    def eval_games(self, eval_game: str | None = None) -> pd.DataFrame:
        """Every evaluated game; eval_game=None: each cell on its own game (Table 3)."""
        if eval_game not in self._games:
            self._games[eval_game] = self._read_eval_games(eval_game)
        return self._games[eval_game].copy()

    def _read_eval_games(self, eval_game: str | None) -> pd.DataFrame:
        frames = []
        for cell in self._cells():
            target = eval_game or cell.cell.game
            # only a whole evaluation: summary.json and the games it names (fls.rundir.read_eval_result)
            try:
                result = cell.eval_result(target)
            except CellDamaged as e:
                print(f"warning: {e}; left out (python src/evaluate.py ... eval.overwrite=true evaluates it again)",
                      file=sys.stderr)
                continue
            if result is None:
                continue
            # agent_steps: absent from evaluations written before it was recorded (NaN)
            games = pd.read_parquet(io.BytesIO(result.files["games.parquet"]))
            games = games.reindex(columns=["score", "frames", "agent_steps", "truncated"])
            # the env stack it was played on (summaries written before it was recorded: unknown)
            settings = result.summary.get("settings", {})
            backend = settings.get("env", {}).get("backend", "unknown")
            frames.append(_with_keys(games, cell).assign(eval_game=target, backend=backend))
        return _concat(frames, GAME_COLUMNS)

    def saliency(self) -> pd.DataFrame:
        frames = []
        for cell in self._cells():
            path = cell.saliency_trials
            try:
                trials = pd.read_csv(path, dtype={"trial": str})
            except (FileNotFoundError, pd.errors.EmptyDataError):
                continue
            for col in ("nss", "kl", "sauc"):
                trials[col] = pd.to_numeric(trials[col], errors="coerce")
            if "preset" not in trials:  # written before presets existed: the default's settings
                trials["preset"] = "spec"
            frames.append(_with_keys(trials.reindex(columns=TRIAL_COLUMNS), cell))
        return _concat(frames, SALIENCY_COLUMNS)

    def saliency_frames(self, game: str, trial: str, preset: str, resolution: str, alignment: str) -> pd.DataFrame:
        """The per-frame metrics of one trial behind the cells' trials.csv rows (for intervals
        over frames when a study scored a single trial); cells whose trials.csv does not list
        that trial and setting, or whose per-frame file is gone, contribute nothing."""
        frames = []
        for cell in self._cells():
            if cell.cell.game != game:
                continue
            try:
                listed = pd.read_csv(cell.saliency_trials, dtype={"trial": str})
            except (FileNotFoundError, pd.errors.EmptyDataError):
                continue
            listed = listed if "preset" in listed else listed.assign(preset="spec")
            if not ((listed.trial == str(trial)) & (listed.preset == preset) & (listed.resolution == resolution)
                    & (listed.alignment == alignment)).any():
                continue
            path = cell.saliency_frames(trial, alignment, resolution, preset)
            if not path.exists():
                continue
            part = pd.read_parquet(path, columns=["frame", "map", "nss", "kl", "sauc"])
            frames.append(part.assign(model=cell.cell.model, seed=cell.cell.seed))
        return _concat(frames, FRAME_COLUMNS)


def first_trained(layout: RunLayout, study: str, game: str, model: str, seeds: list[int]):
    """(seed, fls.trained_cell.TrainedCell on the CPU) of the first seed of (game, model) whose
    checkpoint loads, for the figures that draw a trained model's maps; None if none does.
    A cell without its config.yaml is left out, as the trainer and evaluator refuse it."""
    import torch

    from fls.errors import CheckpointError
    from fls.trained_cell import load_model

    for seed in seeds:
        cell = layout.cell(study, game, model, seed)
        if cell.has_checkpoint() and cell.config.exists():
            try:
                return seed, load_model(cell, torch.device("cpu"))
            except CheckpointError:
                continue
    return None
