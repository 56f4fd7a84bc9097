"""`python -m analysis stats`: is FLS free? The study's scores as interval estimates
(docs/statistics.md), with rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021):

- `aggregate`: per model, the IQM, median, mean and optimality gap of human-normalised scores
  over the games that have reference scores (data/reference_scores.csv), each with its 95%
  stratified bootstrap interval; a table and rliable's interval plot;
- `poi`: the probability of improvement P(X > Nature CNN) of every model of the study (and of
  each pair `--pairs x:y` asks for): the chance that a seed of X outscores a seed of Nature
  CNN on a game of the study, averaged over games, with its interval; a table and rliable's
  plot;
- `profiles`: performance profiles, the fraction of runs (seed x game) above each
  human-normalised score, with bands;
- `efficiency`: the IQM of eprewmean over training with bands, one figure per game
  (analysis/efficiency.py).

One seed gives a point and no interval; one game gives no aggregate over games: each says so
instead of drawing an interval that means nothing.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import efficiency  # noqa: E402
from analysis.grid import Grid, plural  # noqa: E402
from analysis.intervals import (MIN_RUNS, Bootstrap, describe, estimate, fmt_interval, fraction_above, iqm,  # noqa: E402
                                probability_of_improvement, rliable)
from analysis.render import Artefact, FigureArtefact, Skipped  # noqa: E402
from analysis.scores import normalised, reference_scores, run_matrix, seed_means  # noqa: E402
from analysis.style import game_label, model_colour, model_label, order_games  # noqa: E402

BASELINE = "nature_cnn"
ARTEFACTS = ["aggregate", "poi", "profiles", "efficiency"]
AGGREGATES = ["IQM", "Median", "Mean", "Optimality gap"]
PROFILE_POINTS = 101
SEPARATOR = "|"  # rliable's pair separator: model names may hold commas


def aggregates(x: np.ndarray) -> np.ndarray:
    """IQM, median, mean, optimality gap (threshold 1 = human) of a runs x games matrix: rliable's."""
    _, metrics, _ = rliable()
    return np.array([iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x),
                     metrics.aggregate_optimality_gap(x, 1.0)])


def study_scores(source, grid: Grid) -> pd.DataFrame:
    """Each seed's mean score on its own game (Table 3's evaluations)."""
    return seed_means(grid.restrict(source.eval_games(None)))


def _normalised_games(means: pd.DataFrame, grid: Grid) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """(normalised seed scores, games with a reference and results, models with results on every
    one of them, notes on the models left out)."""
    norm = normalised(means, reference_scores())
    games = order_games(norm["game"].unique())
    models, notes = [], []
    for model in grid.models:
        have = set(norm.loc[norm.model == model, "game"])
        if have and have >= set(games):
            models.append(model)
        elif have:
            notes.append(f"{model_label(model)} left out: no evaluation on "
                         f"{', '.join(game_label(g) for g in games if g not in have)}")
    return norm, games, models, notes


# Aggregate over games


def build_aggregate(means: pd.DataFrame, grid: Grid, bootstrap: Bootstrap) -> list:
    norm, games, models, left_out = _normalised_games(means, grid)
    study_games = order_games(means["game"].unique())
    if len(games) < 2:
        return [Skipped(f"an aggregate over games needs 2 or more evaluated games with reference scores; the study has "
                        f"{len(games)} ({', '.join(game_label(g) for g in games) or 'none'}), whose IQM over seeds "
                        "with its interval is in Table 3")]
    if not models:
        return [Skipped("no model evaluated on every game with reference scores (" + "; ".join(left_out) + ")")]
    rows, display, point_est, interval_est, notes = [], [], {}, {}, []
    batches = {}
    for model in models:
        matrix, dropped = run_matrix(norm, model, games, "normalised")
        notes += [f"{model_label(model)}: {d}" for d in dropped]
        if matrix.shape[0] >= MIN_RUNS:
            batches[f"aggregate/{model}"] = (model, matrix)
        else:
            point = aggregates(matrix)
            rows += [{"model": model, "metric": name, "value": float(point[i]), "lower": math.nan, "upper": math.nan,
                      "runs": matrix.shape[0], "games": len(games)} for i, name in enumerate(AGGREGATES)]
    found = estimate({k: m for k, (_, m) in batches.items()}, aggregates, bootstrap) if batches else {}
    for key, (model, matrix) in batches.items():
        point, interval = found[key]
        point_est[model_label(model)], interval_est[model_label(model)] = point, interval
        rows += [{"model": model, "metric": name, "value": float(point[i]), "lower": float(interval[0, i]),
                  "upper": float(interval[1, i]), "runs": matrix.shape[0], "games": len(games)}
                 for i, name in enumerate(AGGREGATES)]
    data = pd.DataFrame(rows)
    for model in models:
        part = data[data.model == model].set_index("metric")
        shown = {"Model": model_label(model)}
        for name in AGGREGATES:
            r = part.loc[name]
            interval = fmt_interval(r["lower"], r["upper"], 2)
            shown[name] = f"{r['value']:.2f} {interval}" if interval else f"{r['value']:.2f} (1 seed)"
        shown["seeds x games"] = f"{int(part['runs'].iloc[0])} x {len(games)}"
        display.append(shown)
    unnormalised = [g for g in study_games if g not in games]
    notes = [
        f"Human-normalised scores, (score - random) / (human - random), of each seed's mean score on "
        f"{', '.join(game_label(g) for g in games)} (data/reference_scores.csv: Agent57's table, Badia et al. 2020); "
        "IQM: the mean of the middle half of all seed x game scores; median and mean: of the per-game means; "
        "optimality gap: how far below human the scores fall on average (lower is better).",
        f"{describe(bootstrap)}: each game's seeds resampled on their own. (1 seed): no interval.",
        *([f"Not normalised (no reference score): {', '.join(game_label(g) for g in unnormalised)}."] if unnormalised
          else []),
        *left_out, *notes,
    ]
    out = [Artefact("aggregate", "Aggregate human-normalised scores", data, [(None, pd.DataFrame(display))], notes)]
    if point_est:
        _, _, plot_utils = rliable()
        labels = list(point_est)
        colours = {model_label(m): model_colour(m) for m in models}
        fig, _ = plot_utils.plot_interval_estimates(point_est, interval_est, metric_names=AGGREGATES,
                                                    algorithms=labels, colors=colours, xlabel="Human-normalised score",
                                                    xlabel_y_coordinate=0.02, subfigure_width=3.4,
                                                    row_height=0.5)
        fig.texts[-1].set_fontsize("medium")
        fig.set_size_inches(13.6, 1.4 + 0.5 * len(labels))
        fig.subplots_adjust(left=0.14, right=0.98, bottom=0.25 if len(labels) < 3 else 0.18, top=0.8, wspace=0.15)
        for ax in fig.axes:
            ax.title.set_fontsize("large")
            ax.tick_params(labelsize="medium")
            for label in ax.get_yticklabels():
                label.set_fontsize("medium")
        fig.suptitle(f"Aggregate human-normalised scores over {plural(len(games), 'game')}, 95% CIs", fontsize="large")
        out.append(FigureArtefact("aggregate", "Aggregate human-normalised scores (rliable's interval plot)", fig,
                                  None, ["Bars: 95% stratified bootstrap CIs; black ticks: the point estimates."]))
    return out


# Probability of improvement


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """`x:y,...` -> [(x, y), ...]; ValueError on anything else."""
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        x, sep, y = item.strip().partition(":")
        if not (sep and x and y) or x == y:
            raise ValueError(f"--pairs {text}: expected model:model pairs of two different models, comma-separated "
                             "(e.g. sparse_fls:dense_fls)")
        pairs.append((x, y))
    return pairs


def reading(p: float, lower: float, upper: float, x: str, y: str) -> str:
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return "no interval: more seeds needed"
    if lower > 0.5:
        return f"{x} scores higher"
    if upper < 0.5:
        return f"{x} scores lower"
    return "no evidence of a difference at this many seeds"


def build_poi(means: pd.DataFrame, grid: Grid, bootstrap: Bootstrap, pairs: list[tuple[str, str]] = ()) -> list:
    evaluated = set(means["model"])
    comparisons = [(m, BASELINE) for m in grid.models if m != BASELINE and m in evaluated] if BASELINE in evaluated else []
    comparisons += [p for p in pairs if p not in comparisons]
    if not comparisons:
        return [Skipped(f"no evaluated {model_label(BASELINE)} and another evaluated model to compare it with "
                        "(--pairs x:y compares any two)")]
    rows, display, notes, batches = [], [], [], {}
    for x, y in comparisons:
        games = order_games(set(means.loc[means.model == x, "game"]) & set(means.loc[means.model == y, "game"]))
        if not games:
            notes.append(f"P({model_label(x)} > {model_label(y)}): no game evaluated for both")
            continue
        mx, dx = run_matrix(means, x, games, "score")
        my, dy = run_matrix(means, y, games, "score")
        notes += [f"{model_label(m)}: {d}" for m, ds in ((x, dx), (y, dy)) for d in ds]
        row = {"x": x, "y": y, "p": probability_of_improvement(mx, my), "lower": math.nan, "upper": math.nan,
               "games": len(games), "game_list": " ".join(games), "seeds_x": mx.shape[0], "seeds_y": my.shape[0]}
        if min(mx.shape[0], my.shape[0]) >= MIN_RUNS:
            batches[f"poi/{x}/{y}"] = (len(rows), (mx, my))
        rows.append(row)
    if not rows:
        return [Skipped("; ".join(notes))]
    found = estimate({k: v for k, (_, v) in batches.items()}, probability_of_improvement, bootstrap) if batches else {}
    for key, (i, _) in batches.items():
        point, interval = found[key]
        rows[i].update(p=float(point), lower=float(interval.ravel()[0]), upper=float(interval.ravel()[1]))
    for row in rows:
        x, y = model_label(row["x"]), model_label(row["y"])
        row["reading"] = reading(row["p"], row["lower"], row["upper"], x, y)
        few = [f"{m}: 1 seed" for m, n in ((x, row["seeds_x"]), (y, row["seeds_y"])) if n < MIN_RUNS]
        display.append({"Comparison": f"P({x} > {y})", "P": f"{row['p']:.2f}",
                        "95% CI": fmt_interval(row["lower"], row["upper"], 2) or f"none ({', '.join(few)})",
                        "games": ", ".join(game_label(g) for g in row["game_list"].split()),
                        "seeds": f"{row['seeds_x']} vs {row['seeds_y']}", "reading": row["reading"]})
    data = pd.DataFrame(rows)
    notes = [
        "P(X > Y): the probability that a seed of X outscores a seed of Y on a game of the study (ties count half; "
        "each seed's mean score), averaged over the games both were evaluated on: rliable's probability of "
        "improvement (Agarwal et al. 2021). 0.5: no difference; a CI that excludes 0.5 says which is better.",
        f"{describe(bootstrap)}: each model's seeds resampled on their own, game by game.",
        *notes,
    ]
    title = f"Is FLS free? Probability of improvement over {model_label(BASELINE)}"
    out = [Artefact("poi", title, data, [(None, pd.DataFrame(display))], notes)]
    drawn = [r for r in rows if math.isfinite(r["lower"])]
    if drawn:
        _, _, plot_utils = rliable()
        estimates = {f"{model_label(r['x'])}{SEPARATOR}{model_label(r['y'])}": r["p"] for r in drawn}
        intervals = {f"{model_label(r['x'])}{SEPARATOR}{model_label(r['y'])}": np.array([r["lower"], r["upper"]])
                     for r in drawn}
        fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * len(drawn)), dpi=100, layout="constrained")
        plot_utils.plot_probability_of_improvement(estimates, intervals, pair_separator=SEPARATOR, ax=ax,
                                                   colors=[model_colour(r["x"]) for r in drawn],
                                                   xticks=[0.0, 0.25, 0.5, 0.75, 1.0], ticklabelsize="medium",
                                                   labelsize="medium", xlabel="P(X > Y)", left_ylabel="X",
                                                   right_ylabel="Y", ylabel_x_coordinate=0.05)
        ax.axvline(0.5, color="0.5", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        fig.suptitle("Probability of improvement, 95% CIs", fontsize="medium")
        out.append(FigureArtefact("poi", "Probability of improvement (rliable's interval plot)", fig, None,
                                  ["Each bar: the 95% CI of P(X > Y) for the pair named left (X) and right (Y); "
                                   "black tick: the estimate; dashed line: 0.5, no difference."]))
    return out


# Performance profiles


def build_profiles(means: pd.DataFrame, grid: Grid, bootstrap: Bootstrap) -> list:
    norm, games, models, left_out = _normalised_games(means, grid)
    if not models:
        return [Skipped("no evaluated game with reference scores (data/reference_scores.csv)")]
    matrices = {m: run_matrix(norm, m, games, "normalised")[0] for m in models}
    top = max(float(m.max()) for m in matrices.values())
    low = min(float(m.min()) for m in matrices.values())
    pad = 0.05 * (top - low) or 0.05  # the profile's whole drop in view, barely trained agents included
    taus = np.linspace(low - pad, top + pad, PROFILE_POINTS)
    profile = lambda s: fraction_above(s, taus)  # noqa: E731 - rliable's score distribution
    many = {f"profiles/{m}": x for m, x in matrices.items() if x.shape[0] >= MIN_RUNS}
    found = estimate(many, profile, bootstrap) if many else {}
    points, cis, rows, single = {}, {}, [], []
    for model, matrix in matrices.items():
        label = model_label(model)
        if f"profiles/{model}" in found:
            points[label], cis[label] = found[f"profiles/{model}"]
        else:
            points[label] = profile(matrix)
            cis[label] = np.stack([points[label], points[label]])
            single.append(label)
        rows += [{"model": model, "tau": float(t), "fraction": float(f), "lower": float(lo) if label not in single
                  else math.nan, "upper": float(hi) if label not in single else math.nan, "runs": matrix.size}
                 for t, f, lo, hi in zip(taus, points[label], cis[label][0], cis[label][1])]
    _, _, plot_utils = rliable()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    plot_utils.plot_performance_profiles(points, taus, performance_profile_cis=cis, ax=ax,
                                         colors={model_label(m): model_colour(m) for m in models},
                                         xlabel=r"Human-normalised score ($\tau$)",
                                         ylabel=r"Fraction of runs with score $> \tau$", labelsize="medium",
                                         ticklabelsize="medium", legend=True, legendsize="small")
    if taus[0] <= 1.0 <= taus[-1]:
        ax.axvline(1.0, color="0.6", linestyle=":", linewidth=1)
    fig.suptitle(f"Performance profiles over {', '.join(game_label(g) for g in games)}", fontsize="medium")
    notes = ["A run is one seed on one game (its mean score, human-normalised); bands are the "
             f"{describe(bootstrap)}" + ("; dotted line: human." if taus[-1] >= 1.0 else "."),
             *([f"No band (1 seed): {', '.join(single)}."] if single else []), *left_out]
    if len(games) == 1:
        notes.append(f"1 game ({game_label(games[0])}): the profile is the spread of its seeds, not of games.")
    return [FigureArtefact("profiles", "Performance profiles", fig, pd.DataFrame(rows), notes)]


def build(name: str, source, grid: Grid, bootstrap: Bootstrap, pairs: list[tuple[str, str]] = (),
          metrics: pd.DataFrame | None = None) -> list:
    """The artefacts of one name of ARTEFACTS: tables, figures, or Skipped lines."""
    if name == "efficiency":
        return efficiency.build(source, grid, bootstrap, metrics)
    means = study_scores(source, grid)
    if means.empty:
        return [Skipped(f"no evaluated cell in study {source.study!r} (python src/evaluate.py -m ...)")]
    if name == "aggregate":
        return build_aggregate(means, grid, bootstrap)
    if name == "poi":
        return build_poi(means, grid, bootstrap, pairs)
    return build_profiles(means, grid, bootstrap)


def check_pairs(pairs: list[tuple[str, str]], models: list[str]) -> None:
    """Before anything is written: every model a pair names is in the study."""
    unknown = sorted({m for p in pairs for m in p} - set(models))
    if unknown:
        raise ValueError(f"--pairs: {', '.join(unknown)} not in the study (its models: {', '.join(models)})")
