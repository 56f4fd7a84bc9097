"""A seed's score, human-normalised scores, and the runs x games matrices rliable takes.

A *run* is one seed of a (game, model): its score is the mean of its evaluated games (the
paper's protocol plays thousands; their spread is Table 3's ± column). Intervals over seeds
resample these means, as Agarwal et al. do with runs.

rliable wants, per model, a rectangle (runs x games). A partial sweep has games with fewer
seeds than others: `run_matrix` keeps the first k seeds of each game (k the fewest any game
has), and says which it left out. rliable resamples the runs of each game independently, so
which seed of one game sits beside which of another does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.intervals import MIN_RUNS, Bootstrap, estimate, iqm
from fls.facts import REPO

REFERENCE_SCORES = REPO / "data" / "reference_scores.csv"
SEED_COLUMNS = ["game", "model", "seed", "score", "games"]
IQM_COLUMNS = ["game", "model", "iqm", "iqm_lower", "iqm_upper", "iqm_seeds"]


def seed_means(games: pd.DataFrame) -> pd.DataFrame:
    """game, model, seed, score (the mean over the seed's evaluated games), games (how many)."""
    if games.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "score" else "object") for c in SEED_COLUMNS})
    out = games.astype({"score": "float64"}).groupby(["game", "model", "seed"], as_index=False).agg(
        score=("score", "mean"), games=("score", "size"))
    return out[SEED_COLUMNS]


def iqm_by_game(means: pd.DataFrame, bootstrap: Bootstrap, value: str = "score") -> pd.DataFrame:
    """Per (game, model): the IQM over seeds of `value` and its stratified-bootstrap interval
    (NaN bounds with fewer than 2 seeds). One bootstrap per model and seed count, every
    game of it at once (rliable resamples each game's seeds on their own)."""
    rows, batches = [], {}
    for (model, n), part in means.groupby(["model", means.groupby(["game", "model"])["seed"].transform("size")]):
        games = sorted(part["game"].unique())
        matrix = np.stack([part[part.game == g].sort_values("seed")[value].to_numpy("float64") for g in games], axis=1)
        if n < MIN_RUNS:
            rows += [{"game": g, "model": model, "iqm": float(matrix[0, i]), "iqm_lower": np.nan, "iqm_upper": np.nan,
                      "iqm_seeds": int(n)} for i, g in enumerate(games)]
        else:
            batches[f"iqm/{value}/{model}/{n}"] = (model, int(n), games, matrix)
    found = estimate({k: b[3] for k, b in batches.items()}, lambda s: iqm(s, axis=0), bootstrap) if batches else {}
    for key, (model, n, games, _) in batches.items():
        point, interval = found[key]
        rows += [{"game": g, "model": model, "iqm": float(point[i]), "iqm_lower": float(interval[0, i]),
                  "iqm_upper": float(interval[1, i]), "iqm_seeds": n} for i, g in enumerate(games)]
    return pd.DataFrame(rows, columns=IQM_COLUMNS)


# Human-normalised scores


def reference_scores(path: Path | str = REFERENCE_SCORES) -> pd.DataFrame:
    """random and human score per game (data/reference_scores.csv, its source in its header)."""
    table = pd.read_csv(path, comment="#").set_index("game")
    bad = table[~(table["human"] > table["random"])]
    if len(bad):
        raise ValueError(f"{path}: human score not above random for {', '.join(bad.index)}")
    return table[["random", "human"]]


def normalised(means: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """The seeds of games with a reference score, with `normalised` = (score - random) / (human - random)."""
    part = means[means["game"].isin(references.index)].copy()
    ref = references.loc[part["game"]]
    part["normalised"] = (part["score"].to_numpy() - ref["random"].to_numpy()) / (ref["human"] - ref["random"]).to_numpy()
    return part


def run_matrix(means: pd.DataFrame, model: str, games: list[str], value: str) -> tuple[np.ndarray, list[str]]:
    """(runs x games matrix of `value` for `model`, notes on the seeds left out to make it
    rectangular); games in the order given, every one of which must have a seed."""
    part = means[means.model == model]
    columns = [part[part.game == g].sort_values("seed") for g in games]
    k = min(len(c) for c in columns)
    notes = [f"{g}: seed{'s' if len(c) - k > 1 else ''} {', '.join(map(str, c['seed'].iloc[k:]))} left out "
             f"({k} on every game)"
             for g, c in zip(games, columns) if len(c) > k]
    return np.stack([c[value].to_numpy("float64")[:k] for c in columns], axis=1), notes
