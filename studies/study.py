"""A whole study as one command: `make study EXPERIMENT=<name>` (`make paper` = EXPERIMENT=paper).

    python -m studies.study --experiment paper [--launcher slurm] [--run-root runs] [-- overrides ...]

Runs the stages of conf/experiment/<name>.yaml in order, each a sweep of the study's grid
through the launcher, and each only when some cell still needs it:

  train              src/train.py -m experiment=<name>
  evaluate           src/evaluate.py -m ...                           (plan.evaluate; Table 3)
  breakout_infinite  src/evaluate.py -m ... game=breakout eval.game=breakout_infinite
                                                                      (plan.breakout_infinite; Table 5)
  saliency           src/saliency.py -m ... game=<the study's Atari-HEAD games>
                                                                      (plan.saliency; Table 4; needs ATARI_HEAD_ROOT)
  analysis           python -m analysis all --study <study>

A stage whose cells are all done is skipped with one line, and the analysis is redrawn
only when a stage ran, so a second run does nothing but say so. Each stage waits for the previous one: the local launchers run the cells in
this process or its children; the SLURM launchers (launcher=slurm, slurm_local) block
until the stage's job array ends, in a process that sleeps between submitit's polls of
SLURM (not a busy loop), so a study can be run from a login node under nohup or tmux.
A stage with failed cells stops the study (exit 1), after `make sweep-status` has what
it needs to say which.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fls.cli import command
from fls.errors import AtariHeadError, CellDamaged, ConfigError
from fls.facts import CONF_DIR, REPO, group_options, script
from fls.games import game_config, scored_games
from fls.grid import cell_overrides, cells_of
from fls.rundir import Cell, CellDir, RunLayout
from fls.saliency.atari_head import AtariHead

# The stage of Table 5 (plan.breakout_infinite): the agents of the game it patches, evaluated on it
INFINITE = "breakout_infinite"


@dataclass
class Study:
    experiment: str
    name: str
    run_root: Path
    plan: Any
    cells: list[Cell]
    overrides: list[str]


def load_study(experiment: str, run_root: str, overrides: list[str]) -> Study:
    """The experiment's composed config and its grid, expanded as the sweeper expands it."""
    if experiment not in group_options("experiment"):
        raise ConfigError(f"EXPERIMENT={experiment}: expected one of {', '.join(group_options('experiment'))} "
                          "(conf/experiment/)")
    base = [f"experiment={experiment}", f"run_root={run_root}", *overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="study"):
            cfg = compose("train", overrides=[o for o in base if "," not in o], return_hydra_config=True)
            params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
            range_keys = list(cfg.hydra.sweeper.get("range_keys") or ["seed"])
            loader = GlobalHydra.instance().config_loader()
            grid = cell_overrides(params + base, range_keys, loader)
            cells = cells_of(grid, lambda o: compose("train", overrides=list(o)))
    finally:
        GlobalHydra.instance().clear()
    return Study(experiment, str(cfg.study), Path(cfg.run_root), cfg.plan, [c for c in cells if c is not None],
                 list(overrides))


def evaluated(cell: CellDir, game: str) -> bool:
    """Whether the cell holds a whole evaluation on `game` (a damaged one is still to do:
    its evaluation then says what is wrong in one line)."""
    try:
        return cell.eval_result(game) is not None
    except CellDamaged:
        return False


def missing(study: Study, stage: str) -> list[Cell]:
    """The cells a stage still has to do, from their run directories."""
    layout = RunLayout(study.run_root)
    out = []
    for cell in study.cells:
        d = layout.cell(cell.study, cell.game, cell.model, cell.seed)
        if stage == "train":
            todo = not d.is_done()
        elif stage == "evaluate":
            todo = not evaluated(d, cell.game)
        elif stage == INFINITE:
            todo = cell.game == played_by(INFINITE) and not evaluated(d, INFINITE)
        elif stage == "saliency":
            todo = cell.game in scored_games() and not d.saliency_trials.exists()
        else:
            raise ValueError(stage)
        if todo:
            out.append(cell)
    return out


def played_by(game: str) -> str:
    """The game whose agents an evaluation-only game is played by (conf/game: played_by)."""
    return str(game_config(game).played_by)


def saliency_games(todo: list[Cell], root: str, say) -> list[str]:
    """The games of the saliency stage: those with cells to score and trials on disk."""
    wanted = sorted({c.game for c in todo})
    try:
        dataset = AtariHead(root)
    except AtariHeadError as e:
        raise ConfigError(f"ATARI_HEAD_ROOT={root}: {e}") from None
    present = [g for g in wanted if dataset.trials(g)]
    for game in sorted(set(wanted) - set(present)):
        say(f"saliency: no {game} trial in {root}; its cells are not scored")
    return present


def stage_command(study: Study, stage: str, launcher: str, python: str, games: list[str] | None = None) -> list[str]:
    common = [f"experiment={study.experiment}", f"launcher={launcher}", f"run_root={study.run_root}", *study.overrides]
    if stage == "train":
        return [python, str(script("train")), "-m", *common]
    if stage == "evaluate":
        return [python, str(script("evaluate")), "-m", *common]
    if stage == INFINITE:
        return [python, str(script("evaluate")), "-m", *common, f"game={played_by(INFINITE)}", f"eval.game={INFINITE}"]
    if stage == "saliency":
        return [python, str(script("saliency")), "-m", *common, f"game={','.join(games)}"]
    raise ValueError(stage)


def stages(study: Study) -> list[str]:
    plan = study.plan
    out = ["train"]
    if plan.evaluate:
        out.append("evaluate")
    if plan.breakout_infinite:
        out.append(INFINITE)
    if plan.saliency:
        out.append("saliency")
    return out


@command
def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.study", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="a file of conf/experiment/ (its name)")
    p.add_argument("--launcher", default="local", help="a profile of conf/launcher/ (default: local)")
    p.add_argument("--run-root", default="runs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides added to every stage (after --)")
    args = p.parse_args(argv)
    if args.launcher not in group_options("launcher"):
        raise ConfigError(f"LAUNCHER={args.launcher}: expected one of {', '.join(group_options('launcher'))}")
    study = load_study(args.experiment, args.run_root, args.overrides)
    python = sys.executable
    say = lambda text: print(f"[study {study.name}] {text}", flush=True)  # noqa: E731
    say(f"{len(study.cells)} cells; stages: {', '.join(stages(study))}, analysis")
    ran = False
    for stage in stages(study):
        todo = missing(study, stage)
        if stage == "saliency" and todo and not os.environ.get("ATARI_HEAD_ROOT"):
            say("saliency: skipped, ATARI_HEAD_ROOT is not set (the folder of an Atari-HEAD download's "
                "meta_data.csv); Table 4 needs it")
            continue
        games = None
        if stage == "saliency" and todo:
            games = saliency_games(todo, os.environ["ATARI_HEAD_ROOT"], say)
            todo = [c for c in todo if c.game in games]
        if not todo:
            say(f"{stage}: every cell done; nothing to do")
            continue
        line = stage_command(study, stage, args.launcher, python, games)
        say(f"{stage}: {len(todo)} cell(s) to do: {shlex.join(line)}")
        res = subprocess.run(line, cwd=REPO)
        ran = True
        if res.returncode != 0:
            say(f"{stage}: failed (exit {res.returncode}); `make sweep-status STUDY={study.name} "
                f"RUN_ROOT={study.run_root}` says which cells")
            return 1
    out = RunLayout(study.run_root).analysis_dir(study.name)
    if not ran and out.is_dir():
        say(f"analysis: nothing new since it was drawn ({out}); delete that folder to draw it again")
        return 0
    res = subprocess.run([python, "-m", "analysis", "all", "--study", study.name, "--run-root", str(study.run_root)],
                         cwd=REPO)
    return res.returncode


if __name__ == "__main__":
    sys.exit(run())
