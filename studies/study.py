"""A whole study as one command: `make study EXPERIMENT=<name>` (`make paper` = EXPERIMENT=paper).

    python -m studies.study --experiment paper [--launcher slurm] [--wait] [--run-root runs] [-- overrides ...]

Runs the stages of conf/experiment/<name>.yaml, each a sweep of the study's grid through
the launcher, and each only for the cells that still need it:

  train              src/train.py -m experiment=<name>
  evaluate           src/evaluate.py -m ...                           (plan.evaluate; Table 3)
  breakout_infinite  src/evaluate.py -m ... game=breakout eval.game=breakout_infinite
                                                                      (plan.breakout_infinite; Table 5)
  saliency           src/saliency.py -m ... game=<the study's Atari-HEAD games>
                                                                      (plan.saliency; Table 4; needs ATARI_HEAD_ROOT)
  analysis           python -m analysis all --study <study>

Before the first stage, every stage's inputs are checked (studies/preflight.py): each
stage's config for the study's games, ATARI_HEAD_ROOT when the plan scores saliency, and a
study too big for this machine without LAUNCHER=local said. A refusal is one line, exit 2.

On the SLURM launchers (launcher=slurm, slurm_local, a copy for your cluster) the study is
submitted as one chain of jobs that carries itself (studies/chain.py): every stage at
once, each task after the training of its own cells, then the analysis; this command
returns in seconds and `make sweep-status` follows the jobs. With --wait, and always on the
local launchers, the stages run one after the other here: a stage waits for its cells (on
SLURM, in a process that sleeps between submitit's polls), a stage whose cells are all done
is skipped with one line, the analysis is redrawn only when a stage ran, and a stage with
failed cells stops the study (exit 1), after `make sweep-status` has what it needs to say
which.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fls.cli import command
from fls.errors import AtariHeadError, ConfigError
from fls.facts import CONF_DIR, REPO, TRAIN_APP, group_options, script
from fls.grid import cell_overrides, cells_of
from fls.rundir import Cell, RunLayout
from fls.saliency.atari_head import AtariHead
from studies import chain
from studies.preflight import check_size, check_stages
from studies.stages import APP, EVALUATE, INFINITE, ORDER, SALIENCY, TRAIN, played_by, stage_done, stage_games


@dataclass
class Study:
    experiment: str
    name: str
    run_root: Path
    plan: Any
    cells: list[Cell]
    overrides: list[str]
    total_timesteps: int = 0
    launcher: dict[str, Any] | None = None  # the profile's hydra.launcher, resolved
    logger: dict[str, Any] | None = None


def load_study(experiment: str, run_root: str, overrides: list[str], launcher: str = "local",
               before_cells: Callable[[Any, int], None] | None = None) -> Study:
    """The experiment's composed config and its grid, expanded as the sweeper expands it.
    `before_cells(cfg, n)` sees the composed config and the grid's size before the cells are
    composed (seconds for the paper's 450)."""
    if experiment not in group_options("experiment"):
        raise ConfigError(f"EXPERIMENT={experiment}: expected one of {', '.join(group_options('experiment'))} "
                          "(conf/experiment/)")
    base = [f"experiment={experiment}", f"run_root={run_root}", *overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="study"):
            cfg = compose(TRAIN_APP, overrides=[o for o in base if "," not in o] + [f"launcher={launcher}"],
                          return_hydra_config=True)
            params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
            range_keys = list(cfg.hydra.sweeper.get("range_keys") or ["seed"])
            loader = GlobalHydra.instance().config_loader()
            grid = cell_overrides(params + base, range_keys, loader)
            if before_cells is not None:
                before_cells(cfg, len(grid))
            cells = cells_of(grid, lambda o: compose(TRAIN_APP, overrides=list(o)))
    finally:
        GlobalHydra.instance().clear()
    return Study(experiment, str(cfg.study), Path(cfg.run_root), cfg.plan, [c for c in cells if c is not None],
                 list(overrides), int(cfg.total_timesteps), chain.launcher_params(cfg),
                 OmegaConf.to_container(cfg.logger, resolve=True))


def missing(study: Study, stage: str) -> list[Cell]:
    """The cells a stage still has to do, from their run directories."""
    layout = RunLayout(study.run_root)
    out = []
    for cell in study.cells:
        d = layout.cell(cell.study, cell.game, cell.model, cell.seed)
        if stage_games(stage, {cell.game}) and not stage_done(d, stage):
            out.append(cell)
    return out


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
    """The command line of a stage's sweep: its app's entry script over the study's grid."""
    line = [python, str(script(APP[stage])), "-m", f"experiment={study.experiment}", f"launcher={launcher}",
            f"run_root={study.run_root}", *study.overrides]
    if stage == INFINITE:
        return [*line, f"game={played_by(INFINITE)}", f"eval.game={INFINITE}"]
    if stage == SALIENCY:
        return [*line, f"game={','.join(games or [])}"]
    return line


def stages(study: Study) -> list[str]:
    """The stages of the study's plan, in the order they run."""
    plan = study.plan
    wanted = {TRAIN: True, EVALUATE: plan.evaluate, INFINITE: plan.breakout_infinite, SALIENCY: plan.saliency}
    return [stage for stage in ORDER if wanted[stage]]


@command
def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.study", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="a file of conf/experiment/ (its name)")
    p.add_argument("--launcher", default=None,
                   help="a profile of conf/launcher/ (default: local, for a study small enough for this machine)")
    p.add_argument("--wait", action="store_true",
                   help="on SLURM too, run the stages one after the other here, each waiting for its jobs")
    p.add_argument("--run-root", default="runs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides added to every stage (after --)")
    args = p.parse_args(argv)
    launcher = args.launcher or "local"
    if launcher not in group_options("launcher"):
        raise ConfigError(f"LAUNCHER={launcher}: expected one of {', '.join(group_options('launcher'))}")

    def size(cfg: Any, cells: int) -> None:
        done = sum(1 for d in RunLayout(cfg.run_root).cells(str(cfg.study)) if d.is_done())
        check_size(args.experiment, args.launcher, max(0, cells - done), int(cfg.total_timesteps))

    study = load_study(args.experiment, args.run_root, args.overrides, launcher, before_cells=size)
    python = sys.executable
    say = lambda text: print(f"[study {study.name}] {text}", flush=True)  # noqa: E731
    plan = stages(study)
    say(f"{len(study.cells)} cells; stages: {', '.join(plan)}, analysis")
    games: list[str] | None = None
    check_stages(study, plan)
    if SALIENCY in plan and missing(study, SALIENCY):
        games = saliency_games(missing(study, SALIENCY), os.environ["ATARI_HEAD_ROOT"], say)

    def todo(stage: str) -> list[Cell]:
        cells = missing(study, stage)
        return [c for c in cells if c.game in (games or [])] if stage == SALIENCY else cells

    if chain.is_slurm(study.launcher or {}) and not args.wait:
        return chain.submit(study, study.launcher or {}, study.logger or {}, plan, todo,
                            lambda stage: stage_command(study, stage, launcher, python, games), say)

    ran = False
    for stage in plan:
        cells = todo(stage)
        if not cells:
            say(f"{stage}: every cell done; nothing to do")
            continue
        line = stage_command(study, stage, launcher, python, games)
        say(f"{stage}: {len(cells)} cell(s) to do: {shlex.join(line)}")
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
