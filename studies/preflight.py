"""Every stage of a study checked before the first one starts (studies/study.py).

A study's later stages used to find their bad input only when they started: a missing
ATARI_HEAD_ROOT after weeks of training, a bad `eval.*` value after the last training job.
Here each stage's config is composed as its sweep will compose it (one cell per game: what
the checks depend on) and given to the app's own check, and the study's size is weighed
against where it runs. Nothing is written; a refusal is one line (fls.errors.ConfigError).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fls.errors import ConfigError, Refusal
from fls.facts import CONF_DIR
from fls.saliency_checks import check_config as check_saliency_config
from fls.training_cell import check_train_config
from fls.video import check_evaluate_config
from studies.stages import APP, EVALUATE, INFINITE, SALIENCY, TRAIN, stage_games

# Agent steps a study may train on the local launchers without LAUNCHER=local being said:
# about two weeks at the ~1,000 agent steps/s of a CPU cell (the paper's study is 2.25e10).
LOCAL_STEPS_LIMIT = 1_000_000_000

# stage -> its app's config check, and the overrides that make the stage's sweep
CHECKS: dict[str, tuple[Callable[[Any], None], list[str]]] = {
    TRAIN: (check_train_config, []),
    EVALUATE: (check_evaluate_config, []),
    INFINITE: (check_evaluate_config, [f"eval.game={INFINITE}"]),
    SALIENCY: (check_saliency_config, []),
}


def check_stages(study: Any, stages: list[str]) -> None:
    """Compose each stage's config for one cell of each of its games and run its app's
    check; a ConfigError names the stage and the reason."""
    if SALIENCY in stages and stage_games(SALIENCY, {c.game for c in study.cells}) \
            and not os.environ.get("ATARI_HEAD_ROOT"):
        raise ConfigError(
            "the study's plan scores saliency on Atari-HEAD (Table 4), and ATARI_HEAD_ROOT is not set: set it to the "
            "folder of an Atari-HEAD download's meta_data.csv, or leave Table 4 out with the override plan.saliency=false")
    first = {}
    for cell in study.cells:
        first.setdefault(cell.game, cell)
    base = [f"experiment={study.experiment}", f"run_root={study.run_root}", *study.overrides]
    GlobalHydra.instance().clear()
    try:
        for stage in stages:
            app, (check, extra) = APP[stage], CHECKS[stage]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=app):
                for game in stage_games(stage, set(first)):
                    cell = first[game]
                    cfg = compose(app, overrides=[o for o in base if "," not in o] + [
                        f"game={cell.game}", f"model={cell.model}", f"seed={cell.seed}", *extra])
                    try:
                        check(cfg)
                    except Refusal as e:
                        raise ConfigError(f"{stage} stage ({game}): {e}") from None
    finally:
        GlobalHydra.instance().clear()


def check_size(experiment: str, launcher: str | None, to_train: int, total_timesteps: int) -> None:
    """Refuse to train a paper-sized study on this machine unless LAUNCHER=local was said:
    `make paper` with no LAUNCHER would otherwise start months of training here.
    `to_train`: the cells of the grid less those done."""
    steps = to_train * total_timesteps
    if launcher is None and steps > LOCAL_STEPS_LIMIT:
        raise ConfigError(
            f"EXPERIMENT={experiment} trains {to_train} cells of {total_timesteps:,} agent steps ({steps:.3g} in "
            f"all: months on one machine) and no LAUNCHER says where; name one: LAUNCHER=slurm (or your cluster's "
            "profile of conf/launcher/), or LAUNCHER=local to train them here anyway")

