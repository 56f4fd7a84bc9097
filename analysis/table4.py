"""Table 4: saliency metrics on Atari-HEAD (docs/protocol.md#saliency-metrics), beside the paper's values.

From each cell's `saliency/trials.csv` (one row per trial, map, resolution and alignment;
a row already averages its metric over the frames where it is defined):
- a seed's value is the mean over its trials' rows (trials with the metric undefined skipped);
- a table cell is mean +/- std over the seeds of (game, model) (population std);
- post-hoc maps (saliency.maps=[jacobian, greydanus, ...], fls.saliency.posthoc) get a row per
  model and method ("Nature CNN · Greydanus"), after the models' own maps, computed the same way;
- the model-free maps (center prior, uniform) do not depend on the model: one extra row per
  map, mean +/- std over the game's trials (each trial once, whichever cells computed it).
The tables show one resolution and frame alignment (default: 210x160, docs/protocol.md#saliency-metrics's alignment);
table4.csv holds every combination found.

Beside each cell, the 95% interval of a bootstrap over trials and seeds, stratified by game
(rliable's StratifiedBootstrap: a game's trials are resampled, and each trial's seeds; the
model-free maps resample trials). A game scored on a single trial gets an interval over that
trial's frames instead (marked ‡), read from the per-frame files: weaker, since neighbouring
frames of one player's session are nearly the same frame and gaze, not independent samples,
and one trial says nothing of other trials or players. The best row of each game is in bold,
the model-free maps included, so a model is never bold while the centre prior beats it.
A study with no saliency metrics at the setting shown has no Table 4 (skipped, saying so).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from analysis.grid import Grid, mean_std, seeds_text
from analysis.intervals import Bootstrap, describe, estimate, fmt_interval
from analysis.paper import PaperValues
from analysis.render import MISSING, Artefact, Skipped, bold, fmt_mean_std, fmt_number
from analysis.style import game_label, has_attention, model_label, order_games, order_models
from fls.games import scored_games
from fls.saliency.posthoc import LABELS, METHODS

METRICS = {"nss": ("NSS (higher is better)", True), "kl": ("KL divergence (lower is better)", False),
           "sauc": ("Shuffled AUC (higher is better)", True)}
BASELINE_MAPS = {"center": "Center prior †", "uniform": "Uniform †"}
HEAD_GAMES = scored_games()  # conf/game: the games Atari-HEAD recorded, evaluation-only ones aside
SETTINGS = ["preset", "resolution", "alignment"]
DIGITS = 3
STAT_COLUMNS = ["metric", "preset", "resolution", "alignment", "game", "row", "map", "mean", "std", "n", "n_kind",
                "expected_seeds"]
FRAMES_MARK = "‡"


def seed_values(rows: pd.DataFrame) -> pd.DataFrame:
    """game, model, seed, resolution, alignment, metric, value: the mean over the seed's trials."""
    long = rows.melt(id_vars=["game", "model", "seed", *SETTINGS, "trial"], value_vars=list(METRICS),
                     var_name="metric", value_name="value").dropna(subset=["value"])
    return long.groupby(["game", "model", "seed", *SETTINGS, "metric"], as_index=False)["value"].mean()


def row_id(model: str, map_name: str) -> str:
    """A row of the table: the model's own map (its name) or a post-hoc one (model/method)."""
    return model if map_name == "model" else f"{model}/{map_name}"


def row_label(row: str) -> str:
    model, _, method = row.partition("/")
    return model_label(model) + (f" · {LABELS[method]}" if method else "")


def model_stats(rows: pd.DataFrame, grid: Grid, games: list[str], models: list[str], map_name: str = "model") -> pd.DataFrame:
    per_seed = seed_values(rows[rows["map"] == map_name])
    combos = per_seed[SETTINGS].drop_duplicates().itertuples(index=False) if len(per_seed) else []
    out = []
    for preset, resolution, alignment in combos:
        for metric in METRICS:
            part = per_seed[(per_seed.preset == preset) & (per_seed.resolution == resolution)
                            & (per_seed.alignment == alignment) & (per_seed.metric == metric)]
            groups = dict(tuple(part.groupby(["game", "model"])["value"])) if len(part) else {}
            for game in games:
                for model in models:
                    mean, std, n = mean_std(groups.get((game, model), []))
                    out.append({"metric": metric, "preset": preset, "resolution": resolution, "alignment": alignment, "game": game,
                                "row": row_id(model, map_name), "map": map_name, "mean": mean, "std": std, "n": n, "n_kind": "seeds",
                                "expected_seeds": grid.n_seeds})
    return pd.DataFrame(out, columns=STAT_COLUMNS)


def baseline_stats(rows: pd.DataFrame, games: list[str]) -> pd.DataFrame:
    base = rows[rows["map"].isin(list(BASELINE_MAPS))].drop_duplicates(["game", "trial", "map", *SETTINGS])
    out = []
    for (game, map_, preset, resolution, alignment), part in base.groupby(["game", "map", *SETTINGS]):
        if game not in games:
            continue
        for metric in METRICS:
            mean, std, n = mean_std(part[metric])
            out.append({"metric": metric, "preset": preset, "resolution": resolution, "alignment": alignment, "game": game,
                        "row": map_, "map": map_, "mean": mean, "std": std, "n": n, "n_kind": "trials",
                        "expected_seeds": math.nan})
    return pd.DataFrame(out, columns=STAT_COLUMNS)


def with_paper(stats: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    if paper is None or stats.empty:
        return stats.assign(paper_mean=math.nan, paper_std=math.nan)
    published = paper.rename(columns={"model": "row", "mean": "paper_mean", "std": "paper_std"})
    return stats.merge(published, on=["metric", "row", "game"], how="left")


def cell_text(r: dict, row: str, grid: Grid, best: bool) -> str:
    """mean ± std over seeds (trials for the model-free maps) [CI], bold if best; one seed or
    trial: no ±, and says so."""
    one = r["n"] == 1
    text = fmt_number(r["mean"], DIGITS) if one else fmt_mean_std(r["mean"], r["std"], DIGITS)
    interval = fmt_interval(r.get("lower", math.nan), r.get("upper", math.nan), DIGITS)
    if interval:
        text += f" {interval}{FRAMES_MARK if r.get('over') == 'frames' else ''}"
    text = bold(text) if best else text
    if row in BASELINE_MAPS:
        return text + (" (1 trial)" if one else "")
    if r["n"] < grid.n_seeds:
        return text + f" ({seeds_text(int(r['n']), grid.n_seeds)})"
    return text + (" (1 seed)" if one else "")


def section(ours: dict, paper: dict, metric: str, games: list[str], models: list[str], grid: Grid) -> pd.DataFrame:
    """One metric: rows models (own maps, then post-hoc ones) then the model-free maps; per
    game, ours and (if any) the paper's. The best row in bold, the model-free maps included."""
    higher = METRICS[metric][1]
    rows = [*models, *BASELINE_MAPS]
    table = pd.DataFrame({"Model": [row_label(m) for m in models] + list(BASELINE_MAPS.values())})
    for game in games:
        scored = {m: ours[(metric, m, game)]["mean"] for m in rows
                  if (metric, m, game) in ours and math.isfinite(ours[(metric, m, game)]["mean"])}
        best = (max if higher else min)(scored, key=scored.get) if scored else None
        cells, published = [], []
        for row in rows:
            r = ours.get((metric, row, game))
            if r is None or not math.isfinite(r["mean"]):
                cells.append(MISSING)
            else:
                cells.append(cell_text(r, row, grid, row == best))
            p = paper.get((metric, row, game))
            published.append(fmt_mean_std(*p, DIGITS) if p else "n/a")
        table[game_label(game)] = cells
        if any(key[2] == game for key in paper):
            table[f"{game_label(game)} (paper)"] = published
    return table


def _cube(values: pd.DataFrame, unit: str, seeds: list[int], units: list) -> np.ndarray:
    """seeds x units x metrics of one row (NaN where a seed lacks a unit or a metric is undefined)."""
    index = pd.MultiIndex.from_product([seeds, units], names=["seed", unit])
    table = values.set_index(["seed", unit])[list(METRICS)].reindex(index)
    return table.to_numpy("float64").reshape(len(seeds), len(units), len(METRICS))


def _mean_of_seed_means(x: np.ndarray) -> np.ndarray:
    """Table 4's point estimate on a (seeds x units x k) array: each seed's mean over the units
    where defined, then the mean over seeds."""
    return np.nanmean(np.nanmean(x, axis=1), axis=0)


def intervals(source, rows: pd.DataFrame, games: list[str], table_rows: list[str], setting: tuple[str, str, str],
              bootstrap: Bootstrap) -> tuple[dict, list[str]]:
    """{(metric, row, game): {"lower", "upper", "over"}} for the setting shown, and the games whose
    interval is over frames. Rows with the same number of seeds share one bootstrap (each
    entry of the array is resampled on its own)."""
    preset, resolution, alignment = setting
    chosen = rows[(rows.preset == preset) & (rows.resolution == resolution) & (rows.alignment == alignment)]
    found, by_frames, batches = {}, [], {}
    for game in games:
        part = chosen[chosen.game == game]
        trials = sorted(part["trial"].unique())
        if not trials:
            continue
        if len(trials) > 1:
            unit, units, values = "trial", trials, part
        else:
            frames = source.saliency_frames(game, trials[0], preset, resolution, alignment)
            cells = set(zip(part["model"], part["seed"]))  # the seeds shown (--seeds), nothing else
            frames = frames[[cell in cells for cell in zip(frames["model"], frames["seed"])]]
            if frames.empty:
                continue  # per-frame files gone: no interval for a one-trial game
            by_frames.append(game)
            unit, units, values = "frame", sorted(frames["frame"].unique()), frames
        groups: dict[int, list[tuple[str, np.ndarray]]] = {}
        for row in table_rows:
            model, _, method = row.partition("/")
            mine = values[(values.model == model) & (values["map"] == (method or "model"))]
            if mine.empty:
                continue
            seeds = sorted(mine["seed"].unique())
            groups.setdefault(len(seeds), []).append((row, _cube(mine, unit, seeds, units)))
        for n, members in groups.items():
            batches[f"table4/{game}/{unit}/{n}"] = (game, unit, [r for r, _ in members],
                                                     np.concatenate([c for _, c in members], axis=2), True)
        # the model-free maps: the same in every cell, each unit once; the units are the runs
        base = values[values["map"].isin(list(BASELINE_MAPS))].drop_duplicates([unit, "map"])
        present = [m for m in BASELINE_MAPS if (base["map"] == m).any()]
        if present and len(units) > 1:
            cube = np.concatenate([base[base["map"] == m].set_index(unit)[list(METRICS)].reindex(units)
                                   .to_numpy("float64")[:, None, :] for m in present], axis=2)
            batches[f"table4/{game}/{unit}/baselines"] = (game, unit, present, cube, False)
    estimates = {}
    for key, (_, _, _, cube, seeded) in batches.items():
        if seeded:
            estimates.update(estimate({key: cube}, _mean_of_seed_means, bootstrap, task_bootstrap=True))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                estimates.update(estimate({key: cube}, lambda x: np.nanmean(x, axis=0).ravel(), bootstrap))
    for key, (game, unit, members, _, _) in batches.items():
        _, interval = estimates[key]
        interval = interval.reshape(2, len(members), len(METRICS))
        for i, row in enumerate(members):
            for j, metric in enumerate(METRICS):
                found[(metric, row, game)] = {"lower": float(interval[0, i, j]), "upper": float(interval[1, i, j]),
                                              "over": "frames" if unit == "frame" else "trials"}
    return found, by_frames


def build(source, grid: Grid, paper: PaperValues, resolution: str = "210x160", alignment: str | None = None,
          preset: str = "spec", bootstrap: Bootstrap | None = None) -> Artefact | Skipped:
    """Table 4 of one preset (spec: docs/protocol.md; paper: the authors' computation), at one
    resolution and frame alignment (default: the preset's own, spec or paper)."""
    bootstrap = bootstrap or Bootstrap()
    alignment = alignment or ("paper" if preset == "paper" else "spec")
    rows = grid.restrict(source.saliency())
    games = order_games({g for g in grid.games if g in HEAD_GAMES} | set(rows["game"]))
    models = order_models({m for m in grid.models if has_attention(m)} | set(rows.loc[rows["map"] == "model", "model"]))
    posthoc = {method: order_models(set(rows.loc[rows["map"] == method, "model"])) for method in METHODS}
    study = repr(source.study)
    if not games or not (models or any(posthoc.values())):
        return Skipped(f"no model with a saliency map (its own or a post-hoc one) on an Atari-HEAD game in study {study}")
    setting = (preset, resolution, alignment)
    found = sorted({f"{p}/{r}/{a}" for p, r, a in rows[SETTINGS].drop_duplicates().itertuples(index=False)})
    shown = rows[(rows.preset == preset) & (rows.resolution == resolution) & (rows.alignment == alignment)]
    if shown.empty:
        return Skipped(f"no saliency metrics in study {study} at preset {preset}, {resolution}, {alignment!r} alignment "
                       + (f"(found: {', '.join(found)}; --preset, --resolution, --alignment)" if found
                          else "(src/saliency.py scores a trained cell against Atari-HEAD: see the README)"))
    published = paper.table("table4")
    stats = with_paper(pd.concat([model_stats(rows, grid, games, models),
                                  *(model_stats(rows, grid, games, scored, method) for method, scored in posthoc.items() if scored),
                                  baseline_stats(rows, games)], ignore_index=True), published)

    chosen = stats[(stats.preset == preset) & (stats.resolution == resolution) & (stats.alignment == alignment)
                   & (stats.n > 0)] if len(stats) else stats
    ours = {(r.metric, r.row, r.game): {"mean": r.mean, "std": r.std, "n": r.n} for r in chosen.itertuples()}
    theirs = {} if published is None else {
        (r.metric, r.model, r.game): (r.mean, r.std) for r in published.itertuples()
        if r.game in games and (r.model in models or r.model in BASELINE_MAPS)}
    # the rows: each model's own map, then the post-hoc maps model by model
    table_rows = [*models, *(row_id(m, method) for m in order_models({m for v in posthoc.values() for m in v})
                             for method in METHODS if m in posthoc[method])]
    cis, by_frames = intervals(source, rows, games, table_rows, setting, bootstrap)
    for key, ci in cis.items():
        if key in ours:
            ours[key].update(ci)
    stats = stats.merge(pd.DataFrame([{"metric": k[0], "row": k[1], "game": k[2], "preset": preset, "resolution": resolution,
                                       "alignment": alignment, "lower": v["lower"], "upper": v["upper"], "ci_over": v["over"]}
                                      for k, v in cis.items()],
                                     columns=["metric", "row", "game", *SETTINGS, "lower", "upper", "ci_over"]),
                        on=["metric", "row", "game", *SETTINGS], how="left")
    sections = [(METRICS[m][0], section(ours, theirs, m, games, table_rows, grid)) for m in METRICS]

    selected = rows[(rows["map"] == "model") & (rows.preset == preset) & (rows.resolution == resolution)
                    & (rows.alignment == alignment)]
    selected = selected[selected[list(METRICS)].notna().any(axis=1)]
    have = {(g, m, int(s)) for g, m, s in selected[["game", "model", "seed"]].drop_duplicates().itertuples(index=False)}
    how = ("the protocol of docs/protocol.md" if preset == "spec" else
           "the authors' computation (their alignment, zero-filled first stack, maps over each trial's maximum, "
           "reflect upscale, no highscore trials)" if preset == "paper" else f"saliency.preset={preset}")
    methods = [LABELS[m] for m in METHODS if posthoc[m]]
    notes = [
        f"Preset {preset}: {how}. Maps at {resolution}, {alignment!r} frame alignment "
        f"(--preset, --resolution, --alignment; found: {', '.join(found) or 'none'}); table4.csv holds every setting.",
        "A seed's value is the mean over its Atari-HEAD trials; a cell is mean ± std over seeds (one seed: no ±) "
        "[95% CI of a bootstrap over trials and seeds, stratified by game]; best row per game in bold, the "
        "model-free maps included (highest NSS and sAUC, lowest KL).",
        f"{describe(bootstrap)}.",
        "† model-free maps: mean ± std over the game's trials, not seeds [CI over trials].",
        *([f"{FRAMES_MARK} {', '.join(game_label(g) for g in by_frames)}: one trial scored, so the CI resamples its "
           "frames (and seeds): weaker than one over trials, since neighbouring frames of one player's session are "
           "nearly the same frame and gaze (not independent samples, so the interval is too narrow), and one trial "
           "says nothing of other trials or players."] if by_frames else []),
        *([f"Model · method: a post-hoc map of the trained model ({', '.join(methods)}; fls.saliency.posthoc), "
           "scored on the same frames with the same metrics."] if methods else []),
        *grid.coverage(have, "with saliency metrics", games=games, models=models),
    ]
    if published is None:
        notes.append(paper.missing_note("table4"))
    else:
        notes.append("(paper): the published Table 4, mean ± std over 5 seeds; n/a where it has no value.")
    return Artefact("table4", "Table 4: saliency metrics on Atari-HEAD", stats, sections, notes)
