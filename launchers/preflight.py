"""Every stage of a study checked before the first one starts (launchers/study.py).

A study's later stages used to find their bad input only when they started: a missing
ATARI_HEAD_ROOT after weeks of training, a bad `eval.*` value after the last training job.
Here each stage's config is composed as its sweep will compose it (one cell per game: what
the checks depend on) and given to the app's own check, and the study's size is weighed
against where it runs. Nothing is written; a refusal is one line (StudyRefused).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fls.config import CONF_DIR, check_train_config
from fls.saliency.atari_head import GAMES as ATARI_HEAD_GAMES

INFINITE = "breakout_infinite"
# Agent steps a study may train on the local launchers without LAUNCHER=local being said:
# about two weeks at the ~1,000 agent steps/s of a CPU cell (the paper's study is 2.25e10).
LOCAL_STEPS_LIMIT = 1_000_000_000


class StudyRefused(ValueError):
    """A study that cannot start as asked: one line, exit status 2, nothing written."""


def _checks() -> dict[str, tuple[str, Callable[[Any], None], list[str]]]:
    """stage -> (app, its config check, the overrides that make the stage's sweep)."""
    from fls.evaluation import check_eval_config
    from fls.saliency.scoring import check_saliency_config

    return {
        "train": ("train", check_train_config, []),
        "evaluate": ("evaluate", check_eval_config, []),
        INFINITE: ("evaluate", check_eval_config, [f"eval.game={INFINITE}"]),
        "saliency": ("saliency", check_saliency_config, []),
    }


def stage_games(stage: str, games: set[str]) -> list[str]:
    """The study's games a stage plays: Table 5 evaluates the breakout cells; Table 4 scores
    the games Atari-HEAD recorded."""
    if stage == INFINITE:
        return ["breakout"] if "breakout" in games else []
    if stage == "saliency":
        return sorted(g for g in games if g in ATARI_HEAD_GAMES and g != INFINITE)
    return sorted(games)


def check_stages(study: Any, stages: list[str]) -> None:
    """Compose each stage's config for one cell of each of its games and run its app's
    check; StudyRefused names the stage and the reason."""
    if "saliency" in stages and stage_games("saliency", {c.game for c in study.cells}) \
            and not os.environ.get("ATARI_HEAD_ROOT"):
        raise StudyRefused(
            "the study's plan scores saliency on Atari-HEAD (Table 4), and ATARI_HEAD_ROOT is not set: set it to the "
            "folder of an Atari-HEAD download's meta_data.csv, or leave Table 4 out with the override plan.saliency=false")
    checks = _checks()
    first = {}
    for cell in study.cells:
        first.setdefault(cell.game, cell)
    base = [f"experiment={study.experiment}", f"run_root={study.run_root}", *study.overrides]
    GlobalHydra.instance().clear()
    try:
        for stage in stages:
            app, check, extra = checks[stage]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=app):
                for game in stage_games(stage, set(first)):
                    cell = first[game]
                    cfg = compose(app, overrides=[o for o in base if "," not in o] + [
                        f"game={cell.game}", f"model={cell.model}", f"seed={cell.seed}", *extra])
                    try:
                        check(cfg)
                    except ValueError as e:  # ConfigError, the sweepers' and envs' checks
                        raise StudyRefused(f"{stage} stage ({game}): {e}") from None
    finally:
        GlobalHydra.instance().clear()


def check_size(experiment: str, launcher: str | None, to_train: int, total_timesteps: int) -> None:
    """Refuse to train a paper-sized study on this machine unless LAUNCHER=local was said:
    `make paper` with no LAUNCHER would otherwise start months of training here.
    `to_train`: the cells of the grid less those done."""
    steps = to_train * total_timesteps
    if launcher is None and steps > LOCAL_STEPS_LIMIT:
        raise StudyRefused(
            f"EXPERIMENT={experiment} trains {to_train} cells of {total_timesteps:,} agent steps ({steps:.3g} in "
            f"all: months on one machine) and no LAUNCHER says where; name one: LAUNCHER=slurm (or your cluster's "
            "profile of conf/launcher/), or LAUNCHER=local to train them here anyway")

