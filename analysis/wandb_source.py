"""Training curves of online runs from W&B's public API, as the file reader returns them.

`--source wandb:<entity>/<project>` reads the runs tagged with the study name. The trainer
names a run `<game>/<model>/seed_<k>`, groups it `<game>/<model>`, tags it with the study,
logs its config flattened with dotted keys (`game.name`, `model.name`, `seed`, `study`)
and its history with the metrics.csv keys against `global/game_frames`
(fls.train_log.WandbRun). The adapter is thin on purpose: `run_cell` and `run_curve` turn
one Run-like object into the rows `load.FileSource` gives, and `WandbSource` only lists
runs. The tests drive them with a stand-in object shaped like wandb's `Run` (`.name`,
`.config`, `.tags`, `.state`, `.scan_history(keys=...)` or `.history(keys=..., pandas=True)`)
since no W&B server is reachable here.

Evaluation and saliency results are not logged to W&B: those tables still read the run
directories under --run-root when they are there.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from analysis.load import (CELL_COLUMNS, EPREWMEAN, FRAME_COLUMNS, GAME_COLUMNS, METRIC_COLUMNS, SALIENCY_COLUMNS,
                           SourceError, clean_curve, empty)
from fls.rundir import X_AXIS

RUN_NAME = re.compile(r"^(?P<game>[^/]+)/(?P<model>[^/]+)/seed_(?P<seed>-?\d+)$")
# W&B run states in the layout's vocabulary (fls.rundir)
STATES = {"finished": "done", "running": "running", "crashed": "failed", "failed": "failed", "killed": "interrupted"}
HISTORY_SAMPLES = 100_000  # only when a Run has no scan_history: history() samples 500 rows by default


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys, whether W&B hands the config flat (as logged), nested, or as {"value": ...}."""
    out: dict[str, Any] = {}
    for key, value in dict(config).items():
        if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value:
            value = value["value"]
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_cell(run: Any) -> dict[str, Any] | None:
    """game, model, seed, state of a run, from its config (else its name); None if not a cell."""
    config = flat_config(getattr(run, "config", {}) or {})
    named = RUN_NAME.match(getattr(run, "name", "") or "")
    game = config.get("game.name") or (named and named["game"])
    model = config.get("model.name") or (named and named["model"])
    seed = config.get("seed", named["seed"] if named else None)
    if not (game and model) or seed is None:
        return None
    state = getattr(run, "state", None)
    return {"game": str(game), "model": str(model), "seed": int(seed), "state": STATES.get(state, state or "unknown")}


def run_study(run: Any) -> str | None:
    return flat_config(getattr(run, "config", {}) or {}).get("study")


def run_curve(run: Any) -> pd.DataFrame:
    """frames, eprewmean of one run: every logged row (scan_history) when the Run offers it."""
    keys = [X_AXIS, EPREWMEAN]
    if hasattr(run, "scan_history"):
        history = pd.DataFrame(list(run.scan_history(keys=keys)))
    else:
        history = run.history(keys=keys, pandas=True, samples=HISTORY_SAMPLES)
    if history is None or X_AXIS not in history or EPREWMEAN not in history:
        return pd.DataFrame({"frames": pd.Series(dtype="float64"), "eprewmean": pd.Series(dtype="float64")})
    frame = pd.DataFrame({"frames": pd.to_numeric(history[X_AXIS], errors="coerce"),
                          "eprewmean": pd.to_numeric(history[EPREWMEAN], errors="coerce")})
    return clean_curve(frame)


class WandbSource:
    """The study's runs in `<entity>/<project>`; evaluation and saliency from `files`."""

    def __init__(self, path: str, study: str, files=None, api: Any = None):
        if path.count("/") != 1:
            raise ValueError(f"--source wandb:{path}: expected wandb:<entity>/<project>")
        self.path, self.study, self.files, self._api = path, study, files, api
        self.description = f"W&B {path} (runs tagged {study!r})"
        self._runs: list[tuple[dict[str, Any], Any]] | None = None

    def runs(self) -> list[tuple[dict[str, Any], Any]]:
        if self._runs is None:
            try:
                api = self._api
                if api is None:
                    import wandb

                    api = wandb.Api()
                found = list(api.runs(self.path, filters={"tags": {"$in": [self.study]}}))
            except Exception as e:  # wandb raises its own types for auth, network and missing projects
                raise SourceError(f"W&B {self.path}: {type(e).__name__}: {e}") from e
            self._runs = []
            for run in found:
                cell = run_cell(run)
                # a tag is free text: the config's study, when present, has the last word
                if cell is not None and run_study(run) in (None, self.study):
                    self._runs.append((cell, run))
        return self._runs

    def cells(self) -> pd.DataFrame:
        rows = [cell for cell, _ in self.runs()]
        return pd.DataFrame(rows, columns=CELL_COLUMNS) if rows else empty(CELL_COLUMNS)

    def metrics(self) -> pd.DataFrame:
        try:
            frames = [run_curve(run).assign(**{k: cell[k] for k in ("game", "model", "seed")}) for cell, run in self.runs()]
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"W&B {self.path}: reading history: {type(e).__name__}: {e}") from e
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True)[METRIC_COLUMNS] if frames else empty(METRIC_COLUMNS)

    def eval_games(self, eval_game: str | None = None) -> pd.DataFrame:
        return self.files.eval_games(eval_game) if self.files else empty(GAME_COLUMNS)

    def saliency(self) -> pd.DataFrame:
        return self.files.saliency() if self.files else empty(SALIENCY_COLUMNS)

    def saliency_frames(self, game: str, trial: str, preset: str, resolution: str, alignment: str) -> pd.DataFrame:
        if not self.files:
            return empty(FRAME_COLUMNS)
        return self.files.saliency_frames(game, trial, preset, resolution, alignment)
