"""How games and models are named, ordered and coloured in every table and figure.

Game labels and columns come from conf/game/*.yaml, model names, colours and line styles
from the model registry (fls.models.registry): this module only orders and looks them up.
"""

from __future__ import annotations

from collections.abc import Iterable

from fls.games import all_games
from fls.models import MODELS

# conf/game/<game>.yaml: each game's label and its column in the paper's tables
_GAMES = all_games()
GAME_ORDER = sorted(_GAMES, key=lambda name: int(_GAMES[name].column))
GAME_LABELS = {name: str(cfg.label) for name, cfg in _GAMES.items()}

# The registry's order is the paper's row order (Tables 3 and 5).
MODEL_ORDER = list(MODELS)

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
    spec = MODELS.get(model)
    return spec.colour if spec else UNKNOWN_COLOUR


def model_linestyle(model: str) -> str:
    spec = MODELS.get(model)
    return "--" if spec and spec.ablates else "-"


def has_attention(model: str) -> bool:
    """Whether the model draws a saliency map (Table 4): every family but the baseline."""
    return model_family(model) != "baseline"


def _ordered(names: Iterable[str], order: list[str]) -> list[str]:
    names = set(names)
    known = [n for n in order if n in names]
    return known + sorted(names - set(order))


def order_games(games: Iterable[str]) -> list[str]:
    """The paper's column order (conf/game: column), then any other game, alphabetically."""
    return _ordered(games, GAME_ORDER)


def order_models(models: Iterable[str]) -> list[str]:
    return _ordered(models, MODEL_ORDER)
