"""The games of conf/game/: one reader, and what the code asks of them.

A game's YAML states each fact about it once, with a comment: its Atari-HEAD name, its frame
limits in training and evaluation, whether it is evaluation only (breakout_infinite, played by
the Breakout agents for Table 5). Evaluation, the saliency metrics, the studies, the analysis
and the benchmarks read games here, not by path.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fls.facts import group_options, load_group


def game_config(name: str, key: str = "game") -> Any:
    """conf/game/<name>.yaml; a ConfigError names `key` and the games there are."""
    return load_group("game", name, key)


@cache
def _all() -> dict[str, Any]:
    return {name: game_config(name) for name in group_options("game")}


def all_games() -> dict[str, Any]:
    """Every game, by name."""
    return dict(_all())


def trained_games() -> list[str]:
    """The games cells train on: all but the evaluation-only ones."""
    return [name for name, g in _all().items() if not g.evaluation_only]


def atari_head_names() -> dict[str, str]:
    """Our games that Atari-HEAD recorded, with the dataset's name for each (an
    evaluation-only game plays the recordings of the game it patches)."""
    return {name: str(g.atari_head) for name, g in _all().items() if g.atari_head is not None}


def scored_games() -> list[str]:
    """The games whose cells are scored against Atari-HEAD's gaze (Table 4): trained on and
    recorded."""
    recorded = atari_head_names()
    return [name for name in trained_games() if name in recorded]


def eval_frame_limit(game_cfg: Any, eval_cfg: Any) -> int:
    """Frames after which an evaluation game is cut: `eval.max_frames`, else the game's own
    `eval_max_frames`."""
    return int(eval_cfg.max_frames or game_cfg.eval_max_frames)
