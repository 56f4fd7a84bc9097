"""Figure 3: reward curves, eprewmean against game frames, one panel per game, one line per
model: the mean over seeds with a +/- std band (docs/protocol.md#ppo).

Figures 6 and 7 (appendix) are the same plot for the models Figure 3 leaves out, so this
module draws all three (`fig3`, `fig6`, `fig7`). Their captions name no exact model list;
ours: Figure 3 = the models of Table 2; Figure 6 = "modifications of Sparse FLS" (norm,
1x1 convs, SoftPlus2) beside Sparse FLS; Figure 7 = RS-PPO w/o padding and the "w/o final
ReLU" models, each beside the model it ablates.

Seeds of a partial sweep differ in length. Each seed's curve is interpolated (never
extrapolated) onto a common frame grid; where every seed with data covers a frame, the
line is solid with its band; where only some do (a seed still running, or one whose first
game ended later), the mean of those is dotted, with no band. Rows with no
eprewmean yet (no game finished) are skipped.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.render import FigureArtefact  # noqa: E402
from analysis.style import game_label, model_colour, model_label, model_linestyle  # noqa: E402

FIGURES = {
    "fig3": ("Figure 3: reward curves", [
        "nature_cnn", "daqn", "rs_ppo", "sparse_fls", "sparse_fls_pool", "dense_fls",
        "sparse_fls_first_conv", "sparse_fls_each_conv"]),
    "fig6": ("Figure 6: reward curves, modifications of Sparse FLS", [
        "sparse_fls", "sparse_fls_norm", "sparse_fls_1x1", "sparse_fls_sp2"]),
    "fig7": ("Figure 7: reward curves, RS-PPO w/o padding and FLS w/o final ReLU", [
        "rs_ppo", "rs_ppo_nopad", "sparse_fls", "sparse_fls_norelu", "sparse_fls_pool",
        "sparse_fls_norelu_pool", "dense_fls", "dense_fls_norelu"]),
}
MAX_POINTS = 400  # per line: a 2e8-frame run logs ~49k updates; the SVG stays small
PANEL_W, PANEL_H, LEGEND_H, DPI, MAX_COLS = 4.8, 3.4, 0.8, 100, 3
CURVE_COLUMNS = ["game", "model", "frames", "mean", "std", "n", "seeds_with_data"]


def figure_models(name: str, study_models: list[str]) -> list[str]:
    """The figure's models present in the study; Figure 3 also takes models no figure lists."""
    listed = [m for m in FIGURES[name][1] if m in study_models]
    if name == "fig3":
        everywhere = {m for _, models in FIGURES.values() for m in models}
        listed += [m for m in study_models if m not in everywhere]
    return listed


def own_models(name: str) -> set[str]:
    """The models a figure exists for; the others are its references, drawn from Figure 3."""
    return set(FIGURES[name][1]) - (set(FIGURES["fig3"][1]) if name != "fig3" else set())


def figure_size(n_panels: int) -> tuple[float, float]:
    cols = min(MAX_COLS, max(n_panels, 1))
    rows = math.ceil(max(n_panels, 1) / cols)
    return PANEL_W * cols, PANEL_H * rows + LEGEND_H


def seed_band(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean, std (ddof=0) and count over seeds on a common frame grid; no extrapolation."""
    curves = [c for c in curves if len(c)]
    if not curves:
        return pd.DataFrame(columns=["frames", "mean", "std", "n"], dtype="float64")
    xs = np.unique(np.concatenate([c["frames"].to_numpy() for c in curves]))
    if len(xs) > MAX_POINTS:
        xs = np.linspace(xs[0], xs[-1], MAX_POINTS)
    values = np.full((len(curves), len(xs)), np.nan)
    for i, c in enumerate(curves):
        x, y = c["frames"].to_numpy(), c["eprewmean"].to_numpy()
        inside = (xs >= x[0]) & (xs <= x[-1])
        values[i, inside] = np.interp(xs[inside], x, y)
    n = np.isfinite(values).sum(axis=0)
    filled = np.where(np.isfinite(values), values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        std = np.sqrt(np.where(np.isfinite(values), (values - mean) ** 2, 0.0).sum(axis=0) / n)
    return pd.DataFrame({"frames": xs, "mean": mean, "std": std, "n": n})


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Widen a mask by one point each side, so the dashed part joins the solid one."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    return out


def draw(ax, band: pd.DataFrame, model: str, seeds_with_data: int) -> None:
    x, mean, std, n = (band[c].to_numpy() for c in ("frames", "mean", "std", "n"))
    colour, style = model_colour(model), model_linestyle(model)
    full = n == seeds_with_data
    if len(x) == 1:
        ax.plot(x, mean, marker="o", color=colour)
        return
    ax.plot(x, np.where(full, mean, np.nan), color=colour, linestyle=style, linewidth=1.6)
    if seeds_with_data > 1:
        ax.fill_between(x, mean - std, mean + std, where=full, color=colour, alpha=0.18, linewidth=0)
    partial = (n > 0) & ~full
    if partial.any():
        ax.plot(x, np.where(_dilate(partial) & (n > 0), mean, np.nan), color=colour, linestyle=":", linewidth=1.0)


def build(source, grid: Grid, name: str, metrics: pd.DataFrame | None = None) -> FigureArtefact | None:
    title = FIGURES[name][0]
    models = figure_models(name, grid.models)
    if not models:
        return None
    metrics = grid.restrict(source.metrics() if metrics is None else metrics)
    with_data = {(g, m, int(s)) for g, m, s in metrics[["game", "model", "seed"]].drop_duplicates().itertuples(index=False)}
    if name != "fig3" and not any(m in own_models(name) for _, m, _ in with_data):
        return None  # only its reference models have curves: nothing Figure 3 does not show
    games = [g for g in grid.games if any((g, m, s) in grid.states for m in models for s in grid.seeds)]
    per_cell = dict(tuple(metrics.groupby(["game", "model"]))) if len(metrics) else {}

    fig = plt.figure(figsize=figure_size(len(games)), dpi=DPI, layout="constrained")
    cols = min(MAX_COLS, len(games))
    axes = fig.subplots(math.ceil(len(games) / cols), cols, squeeze=False).ravel()
    curves = []
    for ax, game in zip(axes, games):
        partial = []
        for model in models:
            part = per_cell.get((game, model))
            seeds = [] if part is None else [c for _, c in part.groupby("seed")]
            if len(seeds) < grid.n_seeds:
                partial.append(f"{model_label(model)} {len(seeds)}/{grid.n_seeds}")
            if not seeds:
                continue
            band = seed_band([s.sort_values("frames") for s in seeds])
            draw(ax, band, model, len(seeds))
            curves.append(band.assign(game=game, model=model, seeds_with_data=len(seeds)))
        ax.set_title(game_label(game))
        ax.set_xlabel("game frames")
        ax.set_ylabel("eprewmean")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no finished games yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        if partial:
            ax.text(0.02, 0.98, "seeds with data: " + ", ".join(partial), ha="left", va="top", fontsize=6,
                    color="0.35", transform=ax.transAxes, wrap=True,
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    for ax in axes[len(games):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=model_colour(m), linestyle=model_linestyle(m), linewidth=1.6) for m in models]
    fig.legend(handles, [model_label(m) for m in models], loc="outside lower center",
               ncols=min(4, len(models)), frameon=False, fontsize=8)
    fig.suptitle(title)

    data = pd.concat(curves, ignore_index=True)[CURVE_COLUMNS] if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    notes = [
        "Mean over seeds (solid) ± std (band) where every seed with data covers the frame; dotted: only some do.",
        *grid.coverage(with_data, "with a reward curve", games=games, models=models, shown_as="no line"),
    ]
    return FigureArtefact(name, title, fig, data, notes)
