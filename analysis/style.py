"""How games and models are named, ordered and coloured in every table and figure.

The paper's colours did not survive its text extraction (Tables 2-5 only say "Colors
correspond to Fig. 3"), so this palette is ours: one hue per model family (baseline grey,
DAQN green, RS-PPO purple, Sparse FLS reds and oranges, Dense FLS blues), a distinct shade
per model inside a family, and dashed lines for the "w/o ..." ablations so that they pair
visually with the model they ablate (Figure 7).
"""

from __future__ import annotations

from collections.abc import Iterable

from fls.models import MODELS

# SPEC.md §1 order; the paper's table columns follow the same games.
GAME_ORDER = ["beamrider", "breakout", "mspacman", "spaceinvaders", "enduro", "seaquest", "breakout_infinite"]
GAME_LABELS = {
    "beamrider": "BeamRider",
    "breakout": "Breakout",
    "mspacman": "MsPacman",
    "spaceinvaders": "SpaceInvaders",
    "enduro": "Enduro",
    "seaquest": "Seaquest",
    "breakout_infinite": "BreakoutInfinite",
}

# The registry's order is the paper's row order (Tables 3 and 5).
MODEL_ORDER = list(MODELS)

FAMILY_COLOURS = {
    "baseline": "#4d4d4d",
    "daqn": "#2ca02c",
    "rs_ppo": "#8e44ad",
    "sparse_fls": "#d62728",
    "dense_fls": "#1f77b4",
}
MODEL_COLOURS = {
    "nature_cnn": "#4d4d4d",
    "daqn": "#2ca02c",
    "rs_ppo": "#8e44ad",
    "rs_ppo_nopad": "#c39bd3",
    "sparse_fls": "#d62728",
    "sparse_fls_pool": "#ff7f0e",
    "sparse_fls_norm": "#8c564b",
    "sparse_fls_1x1": "#e377c2",
    "sparse_fls_sp2": "#bcbd22",
    "sparse_fls_norelu": "#f08080",
    "sparse_fls_norelu_pool": "#fdae6b",
    "sparse_fls_first_conv": "#7f0000",
    "sparse_fls_each_conv": "#d95f0e",
    "dense_fls": "#1f77b4",
    "dense_fls_norelu": "#6baed6",
}
UNKNOWN_COLOUR = "#999999"


def game_label(game: str) -> str:
    return GAME_LABELS.get(game, game)


def model_label(model: str) -> str:
    spec = MODELS.get(model)
    return spec.paper_name if spec else model


def model_family(model: str) -> str | None:
    spec = MODELS.get(model)
    return spec.family if spec else None


def model_colour(model: str) -> str:
    return MODEL_COLOURS.get(model) or FAMILY_COLOURS.get(model_family(model) or "", UNKNOWN_COLOUR)


def model_linestyle(model: str) -> str:
    return "--" if ("norelu" in model or "nopad" in model) else "-"


def has_attention(model: str) -> bool:
    """Whether the model draws a saliency map (Table 4): every family but the baseline."""
    return model_family(model) != "baseline"


def _ordered(names: Iterable[str], order: list[str]) -> list[str]:
    names = set(names)
    known = [n for n in order if n in names]
    return known + sorted(names - set(order))


def order_games(games: Iterable[str]) -> list[str]:
    """SPEC order, then any game the registry does not know, alphabetically."""
    return _ordered(games, GAME_ORDER)


def order_models(models: Iterable[str]) -> list[str]:
    return _ordered(models, MODEL_ORDER)
