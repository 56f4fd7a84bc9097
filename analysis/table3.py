"""Table 3: evaluation scores (docs/protocol.md#evaluation), game x model.

Two sections with the same columns:
- the paper's: a cell pools every evaluated game of every seed of that (game, model), each
  cell on its own game (`eval/<game>/games.parquet`), and reports their mean +/- std
  (population std over all games, as the paper aggregates "across models"), the seeds and
  the games behind it; the best mean of each game is in bold;
- how sure: the IQM over seeds of each seed's mean score, with its 95% stratified bootstrap
  interval (docs/statistics.md); one seed gives no interval, and says so.
"""

from __future__ import annotations

import pandas as pd

from analysis.grid import Grid, seeds_text
from analysis.intervals import Bootstrap, describe, digits_for, fmt_interval
from analysis.render import MISSING, Artefact, bold, fmt_mean_std, fmt_number
from analysis.scores import iqm_by_game, seed_means
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


def iqm_text(row: pd.Series) -> str:
    """`IQM [lower, upper]`, or the one seed's score and `(1 seed)`: no interval from one value."""
    if not row["iqm_seeds"] > 0:
        return MISSING
    digits = digits_for(row["iqm"])
    interval = fmt_interval(row["iqm_lower"], row["iqm_upper"], digits)
    if not interval:
        return f"{fmt_number(row['iqm'], digits)} ({int(row['iqm_seeds'])} seed)"
    return f"{fmt_number(row['iqm'], digits)} {interval}"


def iqm_table(stats: pd.DataFrame, games: list[str], models: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({"Model": [model_label(m) for m in models]})
    for game in games:
        part = stats[stats.game == game].set_index("model").loc[models]
        table[game_label(game)] = [iqm_text(part.loc[m]) for m in models]
    return table


def with_iqm(stats: pd.DataFrame, games: pd.DataFrame, bootstrap: Bootstrap) -> pd.DataFrame:
    """The pooled statistics and, beside them, the IQM over seeds with its interval."""
    iqms = iqm_by_game(seed_means(games), bootstrap)
    out = stats.merge(iqms, on=["game", "model"], how="left")
    out["iqm_seeds"] = out["iqm_seeds"].fillna(0).astype(int)
    return out


def build(source, grid: Grid, bootstrap: Bootstrap | None = None) -> Artefact:
    bootstrap = bootstrap or Bootstrap()
    games = grid.restrict(source.eval_games(None))
    stats = with_iqm(pooled_stats(games, grid, grid.games, grid.models), games, bootstrap)
    have = {(g, m, int(s)) for g, m, s in games[["game", "model", "seed"]].drop_duplicates().itertuples(index=False)}
    notes = [
        "Mean ± std over all evaluated games of all seeds of a (game, model), pooled; "
        "(k/n seeds) marks a cell with fewer seeds than the study; best mean per game in bold.",
        f"IQM over seeds of each seed's mean score [95% CI]; {describe(bootstrap)}. (1 seed): one seed gives no "
        "interval; 2 or 3 seeds give the mean (the IQM cuts int(n/4) seeds off each end) and a wide interval.",
        *grid.coverage(have, "evaluated"),
    ]
    truncated = int(stats["truncated"].sum())
    if truncated:
        notes.append(f"{truncated:,} games hit the evaluation frame limit (counted with their score at the limit).")
    return Artefact("table3", "Table 3: evaluation scores", stats,
                    [("Mean ± std over all games (the paper's)", wide_table(stats, grid.games, grid.models)),
                     ("IQM over seeds [95% CI]", iqm_table(stats, grid.games, grid.models))], notes)
