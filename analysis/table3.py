"""Table 3: evaluation scores (docs/protocol.md#evaluation), game x model.

A cell pools every evaluated game of every seed of that (game, model), each cell on its own
game (`eval/<game>/games.parquet`), and reports their mean +/- std (population std over
all games, as the paper aggregates "across models"), the seeds and the games behind it.
The best mean of each game is in bold.
"""

from __future__ import annotations

import pandas as pd

from analysis.grid import Grid, seeds_text
from analysis.render import MISSING, Artefact, bold, fmt_mean_std
from analysis.style import game_label, model_label

STAT_COLUMNS = ["game", "model", "paper_name", "mean", "std", "n_games", "n_seeds", "expected_seeds",
                "seeds", "truncated", "mean_frames"]


def pooled_stats(games: pd.DataFrame, grid: Grid, game_list: list[str], models: list[str]) -> pd.DataFrame:
    """One row per (game, model) of the grid; NaN statistics where nothing was evaluated."""
    rows = []
    groups = dict(tuple(games.groupby(["game", "model"]))) if len(games) else {}
    for game in game_list:
        for model in models:
            part = groups.get((game, model))
            if part is None or part.empty:
                rows.append({"game": game, "model": model, "paper_name": model_label(model), "mean": float("nan"),
                             "std": float("nan"), "n_games": 0, "n_seeds": 0, "expected_seeds": grid.n_seeds,
                             "seeds": "", "truncated": 0, "mean_frames": float("nan")})
                continue
            scores = part["score"].astype("float64")
            seeds = sorted(part["seed"].unique())
            rows.append({
                "game": game, "model": model, "paper_name": model_label(model),
                "mean": float(scores.mean()), "std": float(scores.std(ddof=0)),
                "n_games": int(len(scores)), "n_seeds": len(seeds), "expected_seeds": grid.n_seeds,
                "seeds": " ".join(map(str, seeds)), "truncated": int(part["truncated"].astype(bool).sum()),
                "mean_frames": float(part["frames"].mean()),
            })
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def cell_text(row: pd.Series, best: bool) -> str:
    if row["n_games"] == 0:
        return MISSING
    value = fmt_mean_std(row["mean"], row["std"])
    return f"{bold(value) if best else value} ({seeds_text(row['n_seeds'], row['expected_seeds'])}, {row['n_games']:,} games)"


def wide_table(stats: pd.DataFrame, games: list[str], models: list[str], higher_is_better: bool = True) -> pd.DataFrame:
    """Rows: models; columns: games; the best mean of each game in bold."""
    table = pd.DataFrame({"Model": [model_label(m) for m in models]})
    for game in games:
        part = stats[stats.game == game].set_index("model").loc[models]
        scored = part["mean"].dropna()
        best = (scored.idxmax() if higher_is_better else scored.idxmin()) if len(scored) else None
        table[game_label(game)] = [cell_text(part.loc[m], m == best) for m in models]
    return table


def build(source, grid: Grid) -> Artefact:
    games = grid.restrict(source.eval_games(None))
    stats = pooled_stats(games, grid, grid.games, grid.models)
    have = {(g, m, int(s)) for g, m, s in games[["game", "model", "seed"]].drop_duplicates().itertuples(index=False)}
    notes = [
        "Mean ± std over all evaluated games of all seeds of a (game, model), pooled; "
        "(k/n seeds) marks a cell with fewer seeds than the study; best mean per game in bold.",
        *grid.coverage(have, "evaluated"),
    ]
    truncated = int(stats["truncated"].sum())
    if truncated:
        notes.append(f"{truncated:,} games hit the evaluation frame limit (counted with their score at the limit).")
    return Artefact("table3", "Table 3: evaluation scores", stats,
                    [(None, wide_table(stats, grid.games, grid.models))], notes)
