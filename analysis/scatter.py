"""Figures 8-14 (appendix): every evaluated game of one Atari game, a point at (game length
in agent steps, score), one panel per model, coloured by how many games lie near it.

From the evaluation's games.parquet alone (`python src/evaluate.py`; Figure 9, BreakoutInfinite,
from the Breakout cells evaluated with eval.game=breakout_infinite, Table 5's run). All seeds
of a model are pooled, as the paper's scatterplots pool them. The density of a point is the
number of games in its cell of a 40 x 40 grid over the panel's range, so the colours compare
within a panel; it needs no kernel bandwidth and stays defined when many games end alike.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.render import FigureArtefact  # noqa: E402
from analysis.style import game_label, model_label  # noqa: E402

# the paper's numbering: its appendix figure for each game
FIGURES = {"fig8": "breakout", "fig9": "breakout_infinite", "fig10": "beamrider", "fig11": "mspacman",
           "fig12": "spaceinvaders", "fig13": "enduro", "fig14": "seaquest"}
BINS = 40
PANEL_W, PANEL_H, DPI, MAX_COLS = 3.6, 3.0, 100, 4
DATA_COLUMNS = ["game", "model", "seed", "agent_steps", "score", "density"]


def density(x: np.ndarray, y: np.ndarray, bins: int = BINS) -> np.ndarray:
    """How many points share each point's cell of a bins x bins grid over their range."""
    if len(x) == 0:
        return np.zeros(0, dtype=int)
    counts, xe, ye = np.histogram2d(x, y, bins=bins)
    i = np.clip(np.searchsorted(xe, x, side="right") - 1, 0, bins - 1)
    j = np.clip(np.searchsorted(ye, y, side="right") - 1, 0, bins - 1)
    return counts[i, j].astype(int)


def games_of(source, game: str) -> pd.DataFrame:
    """The evaluated games a figure plots: the game's own cells on their game, or, for
    BreakoutInfinite, the Breakout cells evaluated there."""
    if game == "breakout_infinite":
        rows = source.eval_games("breakout_infinite")
        return rows[rows["game"].isin(["breakout", "breakout_infinite"])]
    rows = source.eval_games()
    return rows[rows["game"] == game]


def build(source, grid: Grid, name: str) -> FigureArtefact | None:
    """The figure, or None when the study has no evaluated game of it."""
    game = FIGURES[name]
    rows = grid.restrict(games_of(source, game))
    unknown = int(rows["agent_steps"].isna().sum())
    rows = rows.dropna(subset=["agent_steps"])
    models = [m for m in grid.models if (rows["model"] == m).any()]
    if not models:
        return None
    cols = min(MAX_COLS, len(models))
    n_rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(PANEL_W * cols, PANEL_H * n_rows + 0.5), dpi=DPI,
                             squeeze=False, layout="constrained")
    plotted = []
    for ax, model in zip(axes.ravel(), models):
        part = rows[rows["model"] == model]
        x, y = part["agent_steps"].to_numpy(float), part["score"].to_numpy(float)
        d = density(x, y)
        order = np.argsort(d)  # densest on top
        # rasterized: a paper-sized study puts 40,000 games in a panel, 29 MB of SVG drawn point by point
        points = ax.scatter(x[order], y[order], c=d[order], s=8, cmap="viridis", linewidths=0, rasterized=True)
        fig.colorbar(points, ax=ax, label="games in the cell", shrink=0.8)
        seeds = sorted(int(s) for s in part["seed"].unique())
        ax.set_title(f"{model_label(model)} ({len(part)} games, {len(seeds)} seed{'s' if len(seeds) != 1 else ''})",
                     fontsize=9)
        ax.set_xlabel("game length (agent steps)")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        plotted.append(part.assign(density=d)[["game", "model", "seed", "agent_steps", "score", "density"]])
    for ax in axes.ravel()[len(models):]:
        ax.axis("off")
    number = name.removeprefix("fig")
    fig.suptitle(f"Figure {number}: {game_label(game)}, every evaluated game", fontsize=11)
    notes = [f"{len(rows):,} games of {len(models)} model(s); all seeds pooled; colour: games in the point's "
             f"cell of a {BINS} x {BINS} grid"]
    if unknown:
        notes.append(f"{unknown} game(s) evaluated before game lengths were recorded in agent steps are left out "
                     "(re-evaluate with eval.overwrite=true)")
    data = pd.concat(plotted, ignore_index=True) if plotted else pd.DataFrame(columns=DATA_COLUMNS)
    return FigureArtefact(name, f"Figure {number}: {game_label(game)} scatterplot", fig, data, notes)
