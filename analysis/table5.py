"""Table 5: the Breakout agents evaluated on Breakout and on BreakoutInfinite (docs/protocol.md#breakoutinfinite).

Both columns pool all games of all seeds, as Table 3. The gain is that of BreakoutInfinite's
mean over Breakout's, taken over the seeds evaluated on both (so a seed evaluated on one
game only cannot fake a gain); the table says when that is fewer seeds than a column shows.
The paper printed only the BreakoutInfinite scores and the gain; the Breakout mean it
implies (mean / (1 + gain)) is shown too, since its Table 3 is lost. Beside each column, the
IQM over seeds of each seed's mean with its 95% stratified bootstrap interval (as Table 3's);
Table 5 is one game, so there is no aggregate over games. A study with no Breakout cell
evaluated on BreakoutInfinite has no Table 5 (skipped, saying so).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.grid import Grid
from analysis.intervals import Bootstrap, describe
from analysis.paper import PaperValues
from analysis.render import MISSING, Artefact, Skipped, fmt_mean_std, fmt_number
from analysis.style import model_label
from analysis.table3 import cell_text, iqm_text, pooled_stats, with_iqm

GAME, INFINITE = "breakout", "breakout_infinite"


def gain_percent(standard: pd.DataFrame, infinite: pd.DataFrame) -> tuple[float, int]:
    """Relative gain (%) of the pooled means over the seeds evaluated on both; and their count."""
    paired = sorted(set(standard["seed"]) & set(infinite["seed"]))
    if not paired:
        return float("nan"), 0
    base = standard[standard.seed.isin(paired)]["score"].mean()
    other = infinite[infinite.seed.isin(paired)]["score"].mean()
    if base == 0:
        return float("nan"), len(paired)
    return float(100 * (other - base) / abs(base)), len(paired)


def build(source, grid: Grid, paper: PaperValues, bootstrap: Bootstrap | None = None) -> Artefact | Skipped:
    bootstrap = bootstrap or Bootstrap()
    models = [m for m in grid.models if any((GAME, m, s) in grid.states for s in grid.seeds)]
    infinite = grid.restrict(source.eval_games(INFINITE))
    infinite = infinite[infinite.game == GAME]
    if not models or infinite.empty:
        return Skipped(f"no {GAME} cell of study {source.study!r} evaluated on {INFINITE} "
                       f"(python src/evaluate.py -m ... game={GAME} eval.game={INFINITE})")
    standard = grid.restrict(source.eval_games(None))
    standard = standard[standard.game == GAME]
    std_stats = with_iqm(pooled_stats(standard, grid, [GAME], models), standard, bootstrap).set_index("model")
    inf_stats = with_iqm(pooled_stats(infinite, grid, [GAME], models), infinite, bootstrap).set_index("model")
    published = paper.table("table5")
    if published is not None:
        published = published[published.game == INFINITE].set_index("model")

    rows, display, mixed = [], [], []
    for model in models:
        s, i = std_stats.loc[model], inf_stats.loc[model]
        backends = sorted(set(standard[standard.model == model]["backend"]) | set(infinite[infinite.model == model]["backend"]))
        gain, paired = gain_percent(standard[standard.model == model], infinite[infinite.model == model])
        if len(backends) > 1:
            # the two env stacks differ by more than the gains Table 5 measures
            gain = math.nan
            mixed.append(f"{model_label(model)}: evaluated on {' and '.join(backends)}")
        p = published.loc[model] if published is not None and model in published.index else None
        row = {
            "model": model, "paper_name": model_label(model),
            "breakout_mean": s["mean"], "breakout_std": s["std"], "breakout_games": s["n_games"], "breakout_seeds": s["n_seeds"],
            "infinite_mean": i["mean"], "infinite_std": i["std"], "infinite_games": i["n_games"], "infinite_seeds": i["n_seeds"],
            "breakout_iqm": s["iqm"], "breakout_iqm_lower": s["iqm_lower"], "breakout_iqm_upper": s["iqm_upper"],
            "infinite_iqm": i["iqm"], "infinite_iqm_lower": i["iqm_lower"], "infinite_iqm_upper": i["iqm_upper"],
            "expected_seeds": grid.n_seeds, "gain_percent": gain, "gain_seeds": paired, "backends": ",".join(backends),
            "paper_infinite_mean": p["mean"] if p is not None else math.nan,
            "paper_infinite_std": p["std"] if p is not None else math.nan,
            "paper_gain_percent": p["gain_percent_over_breakout"] if p is not None else math.nan,
        }
        row["paper_breakout_implied"] = row["paper_infinite_mean"] / (1 + row["paper_gain_percent"] / 100)
        rows.append(row)
        shown = {"Model": model_label(model), "Breakout": cell_text(s, False), "Breakout IQM [95% CI]": iqm_text(s),
                 "BreakoutInfinite": cell_text(i, False), "BreakoutInfinite IQM [95% CI]": iqm_text(i)}
        if len(backends) > 1:
            shown["gain"] = "n/a: env backends differ"
        elif math.isfinite(gain):
            note = "" if paired == s["n_seeds"] == i["n_seeds"] else f" ({paired} paired seed{'s' if paired != 1 else ''})"
            shown["gain"] = f"{gain:+.1f}%{note}"
        else:
            shown["gain"] = MISSING
        if published is not None:
            shown["paper BreakoutInfinite"] = fmt_mean_std(row["paper_infinite_mean"], row["paper_infinite_std"], 0) if p is not None else "n/a"
            shown["paper gain"] = f"{row['paper_gain_percent']:+.1f}%" if p is not None else "n/a"
            shown["paper Breakout (implied)"] = fmt_number(row["paper_breakout_implied"], 0) if p is not None else "n/a"
        display.append(shown)

    data = pd.DataFrame(rows)
    have_std = {(GAME, m, int(s)) for m, s in standard[["model", "seed"]].drop_duplicates().itertuples(index=False)}
    have_inf = {(GAME, m, int(s)) for m, s in infinite[["model", "seed"]].drop_duplicates().itertuples(index=False)}
    notes = [
        "Breakout cells evaluated on breakout (eval/breakout/) and on breakout_infinite (eval/breakout_infinite/); "
        "mean ± std over all games of all seeds; gain = BreakoutInfinite mean / Breakout mean - 1 over the seeds "
        "evaluated on both.",
        f"IQM over seeds of each seed's mean score [95% CI]; {describe(bootstrap)}; (1 seed): no interval.",
        *(f"Breakout: {n}" for n in grid.coverage(have_std, "evaluated", games=[GAME], models=models)),
        *(f"BreakoutInfinite: {n}" for n in grid.coverage(have_inf, "evaluated", games=[GAME], models=models)),
    ]
    if mixed:
        notes.append("No gain where the games were played on different env backends (re-evaluate both on one "
                     "env.backend): " + "; ".join(mixed) + ".")
    if published is None:
        notes.append(paper.missing_note("table5"))
    else:
        notes.append("paper Breakout (implied) = paper BreakoutInfinite mean / (1 + paper gain), from rounded values.")
    return Artefact("table5", "Table 5: Breakout vs BreakoutInfinite", data, [(None, pd.DataFrame(display))], notes)
