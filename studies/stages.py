"""The stages of a study: their names, order and apps, the games each plays, and the stage
and cells of a job that jobs.jsonl records.

  train              the study's grid, trained                     src/train.py
  evaluate           each cell on its own game (Table 3)            src/evaluate.py
  breakout_infinite  the cells of the game it patches, on it        src/evaluate.py eval.game=breakout_infinite
                     (Table 5; conf/game/breakout_infinite.yaml: played_by)
  saliency           the cells of the games Atari-HEAD recorded,    src/saliency.py
                     on its trials (Table 4; fls.games.scored_games)
  analysis           the tables and figures, after all of them      python -m analysis all

The whole study (studies.study), its checks (studies.preflight), its SLURM chain
(studies.chain) and where it is (studies.progress, studies.status) name them from here.
"""

from __future__ import annotations

from typing import Any

from fls.errors import CellDamaged
from fls.facts import TRAIN_APP
from fls.games import game_config, scored_games
from fls.rundir import Cell, CellDir

TRAIN = TRAIN_APP
EVALUATE = "evaluate"
INFINITE = "breakout_infinite"  # plan.breakout_infinite, named for the game it evaluates on
SALIENCY = "saliency"
ANALYSIS = "analysis"
# The stages of cells, in the order they run (the analysis follows them all)
ORDER = (TRAIN, EVALUATE, INFINITE, SALIENCY)
# The app whose sweep a stage is (fls.facts.script)
APP = {TRAIN: TRAIN_APP, EVALUATE: "evaluate", INFINITE: "evaluate", SALIENCY: "saliency"}


def played_by(game: str) -> str:
    """The game whose agents an evaluation-only game is played by (conf/game: played_by)."""
    return str(game_config(game).played_by)


def stage_games(stage: str, games: set[str]) -> list[str]:
    """Which of the study's `games` a stage plays: Table 5 the game BreakoutInfinite
    patches; Table 4 the games Atari-HEAD recorded."""
    if stage == INFINITE:
        return [played_by(INFINITE)] if played_by(INFINITE) in games else []
    if stage == SALIENCY:
        return sorted(set(games) & set(scored_games()))
    return sorted(games)


def stage_done(d: CellDir, stage: str) -> bool:
    """Whether a cell holds the stage's result (trained; a whole evaluation on its game or
    on BreakoutInfinite; its Atari-HEAD scores). A damaged evaluation is still to do: its
    evaluation then says what is wrong in one line."""
    if stage == TRAIN:
        return d.is_done()
    try:
        if stage == EVALUATE:
            return d.eval_result(d.cell.game) is not None
        if stage == INFINITE:
            return d.eval_result(INFINITE) is not None
    except CellDamaged:
        return False
    if stage == SALIENCY:
        return d.saliency_trials.exists()
    raise ValueError(stage)


def job_name(stage: str, study: str) -> str:
    """What SLURM calls a study's jobs of one stage (squeue's NAME)."""
    return f"{stage}-{study}"


# What jobs.jsonl (fls.job_records) says


def record_stage(record: dict[str, Any]) -> str:
    """A job record's stage; records written before the launchers recorded it tell
    breakout_infinite apart by its override."""
    if record.get("stage"):
        return str(record["stage"])
    if record.get("app") == APP[INFINITE] and f"eval.game={INFINITE}" in (record.get("sweep_overrides") or []):
        return INFINITE
    return str(record.get("app"))


def record_cells(record: dict[str, Any], study: str) -> list[Cell]:
    """The cells of `study` a job runs (several for a packed job; records written before
    packing name one, as `cell`)."""
    cells = record.get("cells") or ([record["cell"]] if record.get("cell") else [])
    return [Cell(study, c["game"], c["model"], int(c["seed"])) for c in cells if c.get("study") == study]


def latest_jobs(records: list[dict[str, Any]], study: str) -> dict[tuple[str, Cell], dict[str, Any]]:
    """The latest job recorded for each (stage, cell) of the study."""
    latest: dict[tuple[str, Cell], dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.get("submitted", 0)):
        for cell in record_cells(record, study):
            latest[(record_stage(record), cell)] = record
    return latest
