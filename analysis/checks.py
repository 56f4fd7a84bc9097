"""Do the maps mean anything? The saliency checks of a study (src/saliency.py saliency.checks=...,
docs/saliency_checks.md): a table and two figures.

- `checks` (table): per game, source of frames, model and map: the similarity of the map to
  the trained model's when every layer is re-initialised (the last stage of the cascade:
  Spearman, SSIM, top-k overlap), and the areas under the deletion and insertion curves (KL
  of the action distribution, probability of the chosen action), beside the random-order and
  centre-bias baselines, each with a 95% bootstrap interval over the frames of every seed
  (analysis.intervals);
- `checks_randomization_<game>_<model>`: the cascading randomisation grid of the first seed
  with results: rows are maps, columns the layers randomised (top down, then the attention
  module alone and a fresh model), each panel the map of the probe frame (the first frame
  checked), over its own peak; the last column the mean similarity per stage;
- `checks_fidelity_<game>`: the mean deletion and insertion curves of each model's maps, with
  the random order and the centre bias.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.intervals import MIN_RUNS, Bootstrap, describe, estimate, fmt_interval  # noqa: E402
from analysis.render import MISSING, Artefact, FigureArtefact, Skipped  # noqa: E402
from analysis.style import game_label, model_label  # noqa: E402
from fls.rundir import RunLayout  # noqa: E402
from fls.saliency import fidelity, posthoc, sanity  # noqa: E402
from fls import saliency_checks  # noqa: E402

SOURCES = {"games": "evaluation games", "atari_head": "Atari-HEAD"}
# (check, measure): the table's columns, in order, with their labels
MEASURES = [("randomization", "spearman", "Spearman"), ("randomization", "ssim", "SSIM"),
            ("randomization", "top_k", "top-k"), ("deletion", "kl_auc", "del. KL"),
            ("deletion", "prob_auc", "del. p(a)"), ("insertion", "kl_auc", "ins. KL"),
            ("insertion", "prob_auc", "ins. p(a)")]
BASELINE_LABELS = {"random": "random order", "center": "centre bias"}
DATA_COLUMNS = ["game", "source", "model", "map", "check", "measure", "value", "lower", "upper", "frames", "seeds"]


def map_label(name: str) -> str:
    return BASELINE_LABELS.get(name) or posthoc.LABELS.get(name, name)


def map_colour(name: str) -> str:
    """One colour per map kind in every figure (the baselines grey and black)."""
    return f"C{posthoc.MAPS.index(name)}" if name in posthoc.MAPS else "grey"


def map_order(names) -> list[str]:
    order = [*posthoc.MAPS, *fidelity.BASELINES]
    return sorted(set(names), key=lambda n: order.index(n) if n in order else len(order))


def collect(run_root: Path | str, study: str, grid: Grid, preset: str = "spec") -> dict[str, pd.DataFrame]:
    """Every seed's check results of the study (read_cell: the newest checkpoint's), with
    game, model and seed columns."""
    layout = RunLayout(run_root)
    parts: dict[str, list[pd.DataFrame]] = {c: [] for c in saliency_checks.CHECKS}
    for game in grid.games:
        for model in grid.models:
            for seed in grid.seeds:
                cell = layout.cell(study, game, model, seed)
                if not (cell.saliency_dir / "checks").is_dir():
                    continue
                for check, rows in saliency_checks.read_cell(cell, preset).items():
                    if len(rows):
                        parts[check].append(rows.assign(game=game, model=model, seed=seed))
    return {c: pd.concat(p, ignore_index=True) for c, p in parts.items() if p}


def per_frame(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (game, source, model, map, seed, frame), one column per measure of MEASURES
    (randomization: at full randomisation)."""
    keys = ["game", "source", "model", "map", "seed", "frame"]
    wide = None
    for check, measure, _ in MEASURES:
        rows = results.get(check)
        if rows is None:
            continue
        if check == "randomization":
            rows = saliency_checks.full_randomization(rows)
        column = rows[keys + [measure]].rename(columns={measure: f"{check}/{measure}"})
        wide = column if wide is None else wide.merge(column, on=keys, how="outer")
    return wide if wide is not None else pd.DataFrame(columns=keys)


def build_table(run_root: Path | str, study: str, grid: Grid, bootstrap: Bootstrap, preset: str = "spec",
                results: dict[str, pd.DataFrame] | None = None) -> Artefact | Skipped:
    results = collect(run_root, study, grid, preset) if results is None else results
    if not results:
        return Skipped(f"no saliency checks in study {study!r} (preset {preset}); run src/saliency.py ... "
                       "saliency.checks=[randomization,deletion,insertion]", "checks")
    frames = per_frame(results)
    columns = [f"{c}/{m}" for c, m, _ in MEASURES]
    for c in columns:
        if c not in frames:
            frames[c] = np.nan
    groups = list(frames.groupby(["game", "source", "model", "map"], sort=False))
    batches = {"/".join(map(str, k)): part[columns].to_numpy(dtype="float64") for k, part in groups
               if len(part) >= MIN_RUNS}
    found = estimate(batches, lambda x: np.nanmean(x, axis=0), bootstrap) if batches else {}
    rows = []
    for (game, source, model, name), part in groups:
        key = "/".join(map(str, (game, source, model, name)))
        values = part[columns].to_numpy(dtype="float64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a measure no frame of this map has (a baseline's similarity)
            point = np.nanmean(values, axis=0)
        interval = found[key][1] if key in found else np.full((2, len(columns)), np.nan)
        for i, (check, measure, _) in enumerate(MEASURES):
            if not np.isfinite(values[:, i]).any():
                continue
            rows.append({"game": game, "source": source, "model": model, "map": name, "check": check,
                         "measure": measure, "value": float(point[i]), "lower": float(interval[0, i]),
                         "upper": float(interval[1, i]), "frames": int(np.isfinite(values[:, i]).sum()),
                         "seeds": int(part["seed"].nunique())})
    data = pd.DataFrame(rows, columns=DATA_COLUMNS)
    sections = []
    for (game, source), part in data.groupby(["game", "source"], sort=False):
        table_rows = []
        for model in [m for m in grid.models if m in set(part["model"])]:
            mine = part[part["model"] == model]
            for name in map_order(mine["map"]):
                cells = mine[mine["map"] == name].set_index(["check", "measure"])
                row = {"Model": model_label(model), "Map": map_label(name)}
                for check, measure, label in MEASURES:
                    row[label] = _cell(cells.loc[(check, measure)]) if (check, measure) in cells.index else MISSING
                row["Frames"] = f"{int(cells['frames'].max())} ({int(cells['seeds'].max())} seed" \
                                f"{'' if int(cells['seeds'].max()) == 1 else 's'})"
                table_rows.append(row)
        sections.append((f"{game_label(game)}, frames of {SOURCES.get(source, source)}", pd.DataFrame(table_rows)))
    notes = [
        "Randomisation (Adebayo et al. 2018): each map's similarity to the trained model's map when every layer is "
        "re-initialised (the last stage of the cascade), per frame: Spearman rank correlation, SSIM, overlap of the "
        "top pixels. A map that explains the weights falls towards 0; one near 1 does not depend on them (fails).",
        "Deletion / insertion (Petsiuk et al. 2018): the frame's pixels blurred (deletion) or restored (insertion) in "
        "the map's order; areas over the share of pixels of the KL of the action distribution from the clean one and "
        "of the chosen action's probability. A map that finds what the policy uses beats both baselines: a larger "
        "deletion KL, a smaller deletion p(a), a smaller insertion KL, a larger insertion p(a).",
        f"Each cell: the mean over frames (every seed's pooled) [{describe(bootstrap)}, frames resampled].",
        f"Preset {preset}; docs/saliency_checks.md says how each number is computed.",
    ]
    return Artefact("checks", "Saliency checks: do the maps depend on the weights, and does the policy use them?",
                    data, sections, notes)


def _cell(r: pd.Series) -> str:
    digits = 2
    value = f"{r['value']:.{digits}f}" if math.isfinite(r["value"]) else MISSING
    interval = fmt_interval(r["lower"], r["upper"], digits)
    return f"{value} {interval}" if interval else value


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def _source(rows: pd.DataFrame) -> str:
    return "games" if (rows["source"] == "games").any() else str(rows["source"].iloc[0])


def _stage_label(stage: str) -> str:
    if stage == saliency_checks.TRAINED:
        return "trained"
    if stage in (sanity.ATTENTION, sanity.RANDOM):
        return f"{stage}\n(alone)" if stage == sanity.ATTENTION else "fresh\nmodel"
    return "+ " + stage.replace("encoder.", "").replace("+", "\n+")


def build_randomization(results: dict[str, pd.DataFrame], grid: Grid) -> list[FigureArtefact]:
    rows = results.get("randomization")
    if rows is None:
        return []
    out = []
    for game in grid.games:
        for model in grid.models:
            mine = rows[(rows["game"] == game) & (rows["model"] == model)]
            if mine.empty:
                continue
            seed = int(mine["seed"].min())
            mine = mine[(mine["seed"] == seed)]
            source = _source(mine)
            mine = mine[mine["source"] == source]
            out.append(_randomization_grid(mine, game, model, seed, source))
    return out


def _randomization_grid(rows: pd.DataFrame, game: str, model: str, seed: int, source: str) -> FigureArtefact:
    maps = map_order(rows["map"])
    stages = rows[["stage_index", "stage"]].drop_duplicates().sort_values("stage_index")
    names = list(stages["stage"])
    probe_obs = rows[(rows["stage"] == saliency_checks.TRAINED) & rows["probe_obs"].notna()]["probe_obs"].iloc[0]
    obs = np.frombuffer(probe_obs, dtype=np.uint8).reshape(84, 84)
    cols = len(names) + 2  # the frame, the stages, the curve
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.25 * (cols - 1) + 2.6, 1.35 * len(maps) + 0.9), dpi=100,
                             squeeze=False, gridspec_kw={"width_ratios": [1] * (cols - 1) + [2.0]})
    data = []
    for r, name in enumerate(maps):
        mine = rows[rows["map"] == name]
        axes[r][0].imshow(obs, cmap="gray", interpolation="nearest")
        axes[r][0].set_ylabel(map_label(name), fontsize=8)
        axes[r][0].set_xticks([])
        axes[r][0].set_yticks([])
        for c, stage in enumerate(names, 1):
            ax = axes[r][c]
            ax.axis("off")
            probe = mine[(mine["stage"] == stage) & mine["probe"].notna()]
            if probe.empty:
                continue
            image = np.frombuffer(probe["probe"].iloc[0], dtype=np.float32).reshape(84, 84)
            peak = float(image.max())
            ax.imshow(image / (peak or 1.0), cmap="jet", vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(_stage_label(stage), fontsize=6)
        ax = axes[r][-1]
        cascade = mine[mine["cascade"]].groupby("stage_index", sort=True)
        for measure, style in zip(sanity.SIMILARITIES, ("-", "--", ":")):
            means = cascade[measure].mean()
            ax.plot(range(len(means)), means.to_numpy(), style, color="C0", label=measure, lw=1.2)
            data += [{"game": game, "model": model, "seed": seed, "source": source, "map": name,
                      "stage_index": int(i), "stage": names[int(i)], "measure": measure, "mean": float(v)}
                     for i, v in means.items()]
        for stage, colour in ((sanity.ATTENTION, "C1"), (sanity.RANDOM, "C3")):
            other = mine[mine["stage"] == stage]
            if len(other):
                ax.axhline(float(other["spearman"].mean()), color=colour, lw=0.8, ls="-.",
                           label=f"spearman, {'attention alone' if stage == sanity.ATTENTION else 'fresh model'}")
        ax.set_ylim(-0.5, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.tick_params(labelsize=6)
        if r == 0:
            ax.set_title("similarity to the trained map\n(cascade, mean over frames)", fontsize=7)
            ax.legend(fontsize=5, loc="lower left")
        if r == len(maps) - 1:
            ax.set_xlabel("layers randomised, top down", fontsize=7)
    axes[0][0].set_title("probe frame", fontsize=7)
    fig.suptitle(f"Cascading randomisation: {model_label(model)} on {game_label(game)} "
                 f"(seed {seed}, {SOURCES.get(source, source)})", fontsize=9)
    fig.tight_layout()
    name = f"checks_randomization_{game}_{model}"
    return FigureArtefact(name, f"Cascading randomisation grid, {model_label(model)} on {game_label(game)}", fig,
                          pd.DataFrame(data), [f"each panel the probe frame's map over its own peak; curves: mean "
                                               f"similarity over {rows['frame'].nunique()} frames"])


def build_fidelity(results: dict[str, pd.DataFrame], grid: Grid) -> list[FigureArtefact]:
    parts = [results[c] for c in saliency_checks.FIDELITY if c in results]
    if not parts:
        return []
    rows = pd.concat(parts, ignore_index=True)
    out = []
    for game in grid.games:
        mine = rows[rows["game"] == game]
        if mine.empty:
            continue
        source = _source(mine)
        mine = mine[mine["source"] == source]
        models = [m for m in grid.models if m in set(mine["model"])]
        panels = [(check, curve) for check in saliency_checks.FIDELITY if check in set(mine["check"]) for curve in ("kl", "prob")]
        fig, axes = plt.subplots(len(models), len(panels), figsize=(2.7 * len(panels), 2.3 * len(models) + 0.6),
                                 dpi=100, squeeze=False)
        data = []
        for r, model in enumerate(models):
            for c, (check, curve) in enumerate(panels):
                ax = axes[r][c]
                part = mine[(mine["model"] == model) & (mine["check"] == check)]
                names = map_order(part["map"])
                for name in names:
                    values = np.stack(part[part["map"] == name][curve].map(np.asarray).to_list())
                    mean = values.mean(axis=0)
                    x = np.linspace(0, 1, len(mean))
                    style = {"random": dict(color="grey", ls="--"), "center": dict(color="black", ls=":")}.get(
                        name, dict(color=map_colour(name), ls="-"))
                    ax.plot(x, mean, lw=1.2, label=map_label(name), **style)
                    data += [{"game": game, "source": source, "model": model, "check": check, "curve": curve,
                              "map": name, "fraction": float(f), "mean": float(v), "frames": len(values)}
                             for f, v in zip(x, mean)]
                ax.tick_params(labelsize=6)
                if r == 0:
                    ax.set_title(f"{check}: {'KL from the clean policy' if curve == 'kl' else 'p(chosen action)'}",
                                 fontsize=7)
                if c == 0:
                    ax.set_ylabel(model_label(model), fontsize=7)
                if r == len(models) - 1:
                    ax.set_xlabel("share of pixels " + ("blurred" if check == "deletion" else "restored"), fontsize=7)
        fig.suptitle(f"Deletion and insertion on {game_label(game)} ({SOURCES.get(source, source)}): each map's order "
                     "against a random order and the centre bias", fontsize=9)
        handles = {}
        for ax in axes.flat:  # every map of every model once (Nature CNN has no own map)
            for line, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, line)
        order = [map_label(n) for n in map_order([*posthoc.MAPS, *fidelity.BASELINES])]
        labels = [label for label in order if label in handles]
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=len(labels), fontsize=7,
                   frameon=False)
        out.append(FigureArtefact(f"checks_fidelity_{game}", f"Deletion and insertion curves, {game_label(game)}", fig,
                                  pd.DataFrame(data), ["mean curve over every frame of every seed"]))
    return out
