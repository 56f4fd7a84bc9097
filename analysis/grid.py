"""The grid a study is expected to fill, and how much of it has results.

Games and models are those with a cell directory in the study; the expected seeds are
given (`--seeds`) or else every seed seen anywhere in the study, so a (game, model) that
lacks a seed its neighbours have shows as partial (`3/5 seeds`), and one with no result
at all as `—`. Each table says, under it, what is missing and why (the cell's state).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.style import order_games, order_models

LISTED = 12  # missing seed runs named one by one; the rest are counted


@dataclass
class Grid:
    games: list[str]
    models: list[str]
    seeds: list[int]
    states: dict[tuple[str, str, int], str]

    @classmethod
    def of(cls, cells: pd.DataFrame, seeds: Iterable[int] | None = None) -> "Grid":
        states = {(g, m, int(s)): st for g, m, s, st in cells[["game", "model", "seed", "state"]].itertuples(index=False)}
        return cls(
            games=order_games(cells["game"].unique()),
            models=order_models(cells["model"].unique()),
            seeds=sorted(int(s) for s in (seeds if seeds is not None else cells["seed"].unique())),
            states=states,
        )

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def restrict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of the expected seeds only (`--seeds` also selects)."""
        return frame[frame["seed"].isin(self.seeds)]

    def coverage(self, have: set[tuple[str, str, int]], done: str, games: list[str] | None = None,
                 models: list[str] | None = None, shown_as: str = "shown as —") -> list[str]:
        """Notes on what is missing: counts, then the missing seed runs with their training state."""
        games, models = games or self.games, models or self.models
        expected = [(g, m, s) for g in games for m in models for s in self.seeds]
        missing = [k for k in expected if k not in have]
        empty = [(g, m) for g in games for m in models if not any((g, m, s) in have for s in self.seeds)]
        notes = [f"{len(expected) - len(missing)} of {len(expected)} seed runs {done} ({plural(len(games), 'game')} x "
                 f"{plural(len(models), 'model')} x {plural(self.n_seeds, 'seed')}: {', '.join(map(str, self.seeds))})."]
        if empty:
            notes.append(f"{len(empty)} of {len(games) * len(models)} (game, model) cells have none, {shown_as}: "
                         + ", ".join(f"{g}/{m}" for g, m in empty) + ".")
        started = [k for k in missing if k in self.states]
        unstarted = len(missing) - len(started)
        if missing:
            states = Counter(self.states[k] for k in started)
            by_state = ", ".join([f"{n} {state}" for state, n in states.most_common()]
                                 + ([f"{unstarted} with no run directory"] if unstarted else []))
            listed = ", ".join(f"{g}/{m}/seed_{s} ({self.states[g, m, s]})" for g, m, s in started[:LISTED])
            more = f", and {len(started) - LISTED} more" if len(started) > LISTED else ""
            notes.append(f"Missing {len(missing)} seed runs (training state: {by_state})"
                         + (f": {listed}{more}." if started else "."))
        return notes


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def seeds_text(n: int, expected: int) -> str:
    return plural(n, "seed") if n >= expected else f"{n}/{expected} seeds"


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, population std (ddof=0, as numpy and the paper's tooling) and count of the finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype="float64")
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    return float(arr.mean()), float(arr.std(ddof=0)), int(arr.size)

