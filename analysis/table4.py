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
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.grid import Grid, mean_std, seeds_text
from analysis.paper import PaperValues
from analysis.render import MISSING, Artefact, bold, fmt_mean_std
from analysis.style import game_label, has_attention, model_label, order_games, order_models
from fls.saliency.atari_head import GAMES
from fls.saliency.posthoc import LABELS, METHODS

METRICS = {"nss": ("NSS (higher is better)", True), "kl": ("KL divergence (lower is better)", False),
           "sauc": ("Shuffled AUC (higher is better)", True)}
BASELINE_MAPS = {"center": "Center prior †", "uniform": "Uniform †"}
HEAD_GAMES = [g for g in GAMES if g != "breakout_infinite"]  # conf/game: the games Atari-HEAD recorded
SETTINGS = ["preset", "resolution", "alignment"]
DIGITS = 3
STAT_COLUMNS = ["metric", "preset", "resolution", "alignment", "game", "row", "map", "mean", "std", "n", "n_kind",
                "expected_seeds"]


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


def section(ours: dict, paper: dict, metric: str, games: list[str], models: list[str], grid: Grid) -> pd.DataFrame:
    """One metric: rows models (own maps, then post-hoc ones) then the model-free maps; per
    game, ours and (if any) the paper's."""
    higher = METRICS[metric][1]
    table = pd.DataFrame({"Model": [row_label(m) for m in models] + list(BASELINE_MAPS.values())})
    for game in games:
        scored = {m: ours[(metric, m, game)]["mean"] for m in models if (metric, m, game) in ours}
        best = (max if higher else min)(scored, key=scored.get) if scored else None
        cells, published = [], []
        for row in [*models, *BASELINE_MAPS]:
            r = ours.get((metric, row, game))
            if r is None:
                cells.append(MISSING)
            else:
                text = fmt_mean_std(r["mean"], r["std"], DIGITS)
                text = bold(text) if row == best else text
                if row in models and r["n"] < grid.n_seeds:
                    text += f" ({seeds_text(int(r['n']), grid.n_seeds)})"
                cells.append(text)
            p = paper.get((metric, row, game))
            published.append(fmt_mean_std(*p, DIGITS) if p else "n/a")
        table[game_label(game)] = cells
        if any(key[2] == game for key in paper):
            table[f"{game_label(game)} (paper)"] = published
    return table


def build(source, grid: Grid, paper: PaperValues, resolution: str = "210x160", alignment: str | None = None,
          preset: str = "spec") -> Artefact | None:
    """Table 4 of one preset (spec: docs/protocol.md; paper: the authors' computation), at one
    resolution and frame alignment (default: the preset's own, spec or paper)."""
    alignment = alignment or ("paper" if preset == "paper" else "spec")
    rows = grid.restrict(source.saliency())
    games = order_games({g for g in grid.games if g in HEAD_GAMES} | set(rows["game"]))
    models = order_models({m for m in grid.models if has_attention(m)} | set(rows.loc[rows["map"] == "model", "model"]))
    posthoc = {method: order_models(set(rows.loc[rows["map"] == method, "model"])) for method in METHODS}
    if not games or not (models or any(posthoc.values())):
        return None
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
    sections = [(METRICS[m][0], section(ours, theirs, m, games, table_rows, grid)) for m in METRICS]

    selected = rows[(rows["map"] == "model") & (rows.preset == preset) & (rows.resolution == resolution)
                    & (rows.alignment == alignment)]
    selected = selected[selected[list(METRICS)].notna().any(axis=1)]
    have = {(g, m, int(s)) for g, m, s in selected[["game", "model", "seed"]].drop_duplicates().itertuples(index=False)}
    found = sorted({f"{p}/{r}/{a}" for p, r, a in rows[SETTINGS].drop_duplicates().itertuples(index=False)})
    how = ("the protocol of docs/protocol.md" if preset == "spec" else
           "the authors' computation (their alignment, zero-filled first stack, maps over each trial's maximum, "
           "reflect upscale, no highscore trials)" if preset == "paper" else f"saliency.preset={preset}")
    methods = [LABELS[m] for m in METHODS if posthoc[m]]
    notes = [
        f"Preset {preset}: {how}. Maps at {resolution}, {alignment!r} frame alignment "
        f"(--preset, --resolution, --alignment; found: {', '.join(found) or 'none'}); table4.csv holds every setting.",
        "A seed's value is the mean over its Atari-HEAD trials; a cell is mean ± std over seeds; "
        "best model per game in bold (highest NSS and sAUC, lowest KL).",
        "† model-free maps: mean ± std over the game's trials, not seeds.",
        *([f"Model · method: a post-hoc map of the trained model ({', '.join(methods)}; fls.saliency.posthoc), "
           "scored on the same frames with the same metrics."] if methods else []),
        *grid.coverage(have, "with saliency metrics", games=games, models=models),
    ]
    if published is None:
        notes.append(paper.missing_note("table4"))
    else:
        notes.append("(paper): the published Table 4, mean ± std over 5 seeds; n/a where it has no value.")
    return Artefact("table4", "Table 4: saliency metrics on Atari-HEAD", stats, sections, notes)
