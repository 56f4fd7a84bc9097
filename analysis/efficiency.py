"""Sample efficiency: the IQM over seeds of eprewmean against game frames, with 95% bands
(rliable's stratified bootstrap over seeds at every point), one figure per game:
`efficiency_<game>.png`.

Each seed's curve (metrics.csv, or W&B with `--source`) is interpolated onto POINTS frame
counts spanning the frames every seed of the (game, model) covers, so the IQM at a point is
always over all its seeds (Figure 3 shows the mean where only some seeds reached, dotted).
Models of a game with the same seeds count and span share one bootstrap. One seed: a line
and no band, said under the figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.intervals import MIN_RUNS, Bootstrap, describe, estimate, iqm, rliable  # noqa: E402
from analysis.render import FigureArtefact, Skipped  # noqa: E402
from analysis.style import game_label, model_colour, model_label  # noqa: E402

POINTS = 100
DATA_COLUMNS = ["game", "model", "frames", "iqm", "lower", "upper", "seeds"]


def seed_curves(part: pd.DataFrame) -> tuple[list[int], np.ndarray] | None:
    """(seeds, seeds x POINTS eprewmean on the frames all of them cover); None if they share
    fewer than two logged frame counts."""
    curves = {int(s): c.sort_values("frames") for s, c in part.groupby("seed")}
    lo = max(float(c["frames"].iloc[0]) for c in curves.values())
    hi = min(float(c["frames"].iloc[-1]) for c in curves.values())
    if not hi > lo:
        return None
    xs = np.linspace(lo, hi, POINTS)
    seeds = sorted(curves)
    values = np.stack([np.interp(xs, curves[s]["frames"].to_numpy("float64"), curves[s]["eprewmean"].to_numpy("float64"))
                       for s in seeds])
    return seeds, np.vstack([xs, values])


def build(source, grid: Grid, bootstrap: Bootstrap, metrics: pd.DataFrame | None = None) -> list:
    metrics = grid.restrict(source.metrics() if metrics is None else metrics)
    if metrics.empty:
        return [Skipped(f"no reward curve in study {source.study!r} (no metrics.csv row with an eprewmean: no game "
                        "finished in training yet)")]
    out = []
    for game in grid.games:
        part = metrics[metrics.game == game]
        if part.empty:
            continue
        curves, notes, batches = {}, [], {}
        for model in grid.models:
            mine = part[part.model == model]
            if mine.empty:
                continue
            found = seed_curves(mine)
            if found is None:
                notes.append(f"{model_label(model)}: its seeds share no stretch of training; not drawn")
                continue
            seeds, stacked = found
            curves[model] = (seeds, stacked[0], stacked[1:])
            if len(seeds) >= MIN_RUNS:
                key = f"efficiency/{game}/{len(seeds)}/{stacked[0][0]:.0f}/{stacked[0][-1]:.0f}"
                batches.setdefault(key, []).append(model)
        if not curves:
            out.append(Skipped("; ".join(notes), f"efficiency_{game}"))
            continue
        arrays = {key: np.stack([curves[m][2] for m in models], axis=1) for key, models in batches.items()}
        found = estimate(arrays, lambda x: iqm(x, axis=0).ravel(), bootstrap) if arrays else {}
        points, intervals, rows = {}, {}, []
        for key, models in batches.items():
            point, interval = found[key]
            for i, model in enumerate(models):
                points[model] = point.reshape(len(models), POINTS)[i]
                intervals[model] = interval.reshape(2, len(models), POINTS)[:, i]
        single = [m for m in curves if m not in points]
        for model in single:
            points[model] = curves[model][2][0]
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100, layout="constrained")
        _, _, plot_utils = rliable()
        for model, (seeds, xs, _) in curves.items():
            lower, upper = intervals.get(model, (np.full(POINTS, np.nan), np.full(POINTS, np.nan)))
            plot_utils.plot_sample_efficiency_curve(
                xs, {model_label(model): points[model]}, {model_label(model): (lower, upper)},
                colors={model_label(model): model_colour(model)}, ax=ax, marker=None, linewidth=1.6,
                xlabel="game frames", ylabel="IQM of eprewmean over seeds", labelsize="medium",
                ticklabelsize="medium")
            rows += [{"game": game, "model": model, "frames": float(x), "iqm": float(p), "lower": float(lo),
                      "upper": float(hi), "seeds": len(seeds)} for x, p, lo, hi in zip(xs, points[model], lower, upper)]
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.legend([Line2D([], [], color=model_colour(m), linewidth=1.6) for m in curves],
                  [model_label(m) + (" (1 seed)" if m in single else f" ({len(curves[m][0])} seeds)") for m in curves],
                  fontsize="small", frameon=False)
        fig.suptitle(f"Sample efficiency, {game_label(game)}: IQM of eprewmean, 95% CIs", fontsize="medium")
        notes = [f"IQM over seeds of eprewmean at {POINTS} frame counts spanning what every seed of a model covers; "
                 f"bands are the {describe(bootstrap)}.", *notes]
        if single:
            notes.append(f"No band (1 seed): {', '.join(model_label(m) for m in single)}.")
        out.append(FigureArtefact(f"efficiency_{game}", f"Sample efficiency, {game_label(game)}", fig,
                                  pd.DataFrame(rows, columns=DATA_COLUMNS), notes))
    return out
