"""Table 2: model sizes, counted on the real modules of the model registry.

Every model is built for each action count the games use (conf/game/*.yaml), on torch's
meta device: the modules and their parameter shapes are real, but no memory is allocated
and no initialisation runs, so the 60 models take a fraction of a second.
"""

from __future__ import annotations

import pandas as pd
import torch

from analysis.render import Artefact, fmt_number
from analysis.style import game_label, order_games
from fls.games import all_games, trained_games
from fls.models import MODELS, build_model, count_parameters

BASELINE = "nature_cnn"  # the paper's "% of [24]" column


def games_by_action_count() -> dict[int, list[str]]:
    """Action count -> games with that many actions; BreakoutInfinite is Breakout's count."""
    counts: dict[int, list[str]] = {4: []}
    for name in trained_games():
        game = all_games()[name]
        counts.setdefault(int(game.num_actions), []).append(str(game.name))
    return {n: order_games(g) for n, g in sorted(counts.items())}


def parameter_counts(action_counts: list[int]) -> pd.DataFrame:
    rows = []
    with torch.device("meta"):
        for name, spec in MODELS.items():
            for n in action_counts:
                rows.append({"model": name, "paper_name": spec.paper_name, "family": spec.family,
                             "in_paper_table2": spec.in_table2, "num_actions": n,
                             "params": count_parameters(build_model(name, n))})
    data = pd.DataFrame(rows)
    base = data[data.model == BASELINE].set_index("num_actions")["params"]
    data["percent_of_nature_cnn"] = (100 * data["params"] / data["num_actions"].map(base)).round(1)
    return data


def build() -> Artefact:
    games = games_by_action_count()
    data = parameter_counts(list(games))
    wide = data.pivot(index="model", columns="num_actions", values="params").loc[list(MODELS)]
    four = data[data.num_actions == 4].set_index("model").loc[list(MODELS)]
    table = pd.DataFrame({
        "Model": four["paper_name"].values,
        "config": list(MODELS),
        "paper Table 2": ["yes" if x else "" for x in four["in_paper_table2"]],
        f"% of {MODELS[BASELINE].paper_name}": [f"{p:.1f}%" for p in four["percent_of_nature_cnn"]],
    })
    for n, gs in games.items():
        label = f"{n} actions" + (f" ({', '.join(game_label(g) for g in gs)})" if gs else "")
        table[label] = [fmt_number(float(v), 0) for v in wide[n]]
    notes = [
        "Counted with fls.models.count_parameters on the registry's modules (src/fls/models/).",
        "Each action adds 513 parameters (a 512-wide policy row and its bias); "
        "the % column is at 4 actions, as the paper's.",
    ]
    return Artefact("table2", "Table 2: model sizes (parameters)", data, [(None, table)], notes)
