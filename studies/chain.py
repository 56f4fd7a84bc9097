"""A study as SLURM jobs that carry it to the end: submit every stage at once, and exit.

    make study EXPERIMENT=paper LAUNCHER=slurm       (studies/study.py, without --wait)

The training array; an array for each later stage of the plan (evaluate, breakout_infinite,
saliency) whose every task waits for the training tasks of its own cells (afterok); and one
analysis job (`python -m analysis all`, then the study's W&B dashboard) that waits for every
array (afterany). Nothing of ours waits for them; `make sweep-status` follows them.

How, on Slurm 22.05 (the findings behind each rule are in cluster/README.md):
- Each stage is submitted through its own app (`src/evaluate.py -m ...
  hydra.launcher.wait=false`), so the profile's resources, packing and job records
  (jobs.jsonl, with the stage) are the sweep's own. Every array is submitted held; then
  each task of a later stage gets the dependency of its own cells (`scontrol update
  JobId=<E>_<i> Dependency=afterok:<T>_<j>`: any subset of cells, packed or not), the
  analysis job is submitted, and every array is released. A failure before the release
  cancels what this submission made: nothing runs half-wired.
- `--kill-on-invalid-dep=yes` on every array: a task whose training failed is cancelled at
  once instead of waiting forever (and the analysis job's afterany with it). A cell that
  raised ends its job with exit status 1 (fls_launchers), so that counts as a failure.
- SLURM takes a dependency on a job it does not know (a purged one) as satisfied, so a
  dependency is only ever set on a job that squeue lists; evaluation and scoring skip a
  cell that is not trained, whatever started them.
- A requeue (a time limit's USR2 through submitit, a preemption, `scontrol requeue`) keeps
  the `<array>_<task>` id, and its dependents keep waiting for it.
- A second submission submits only the cells that are not done (the run directories) and
  whose latest job for that stage is not queued or running (jobs.jsonl, checked against
  squeue): never two jobs for one cell. A waiting analysis job is replaced by one that
  waits for everything of the study still in the queue.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from fls import job_records
from fls.errors import ConfigError, Refusal, ServiceError
from fls.facts import REPO, now
from fls.rundir import Cell, RunLayout
from hydra_plugins.fls_launchers.fls_launchers import FlsSlurmLauncher, submitit_executor
from studies.slurm import array_of, queue, run_slurm
from studies.stages import ANALYSIS, TRAIN, job_name, latest_jobs, record_cells, record_stage

# sbatch options of every array of a chain (submitit writes each as #SBATCH --<key>=<value>)
CHAIN_SBATCH = {"hold": True, "kill-on-invalid-dep": "yes", "requeue": True}
# stage sweeps submitted at once (each a Python process that composes and checks its cells)
PARALLEL_SUBMISSIONS = 4


# The plan


@dataclass
class StagePlan:
    stage: str
    todo: list[Cell] = field(default_factory=list)  # cells to submit
    live: dict[Cell, str] = field(default_factory=dict)  # cell -> its job, queued or running


def plan(stages: list[str], missing: Callable[[str], list[Cell]], latest: dict[tuple[str, Cell], dict[str, Any]],
         alive: set[str]) -> list[StagePlan]:
    """For each stage, its cells still to do, less those whose latest job is alive."""
    plans = []
    for stage in stages:
        p = StagePlan(stage)
        for cell in missing(stage):
            record = latest.get((stage, cell))
            if record is not None and record["job_id"] in alive:
                p.live[cell] = record["job_id"]
            else:
                p.todo.append(cell)
        plans.append(p)
    return plans


def sweeps_of(cells: list[Cell]) -> list[list[str]]:
    """The fewest `game= model= seed=` sweeps (cross products) that cover exactly `cells`."""
    seeds: dict[tuple[str, str], set[int]] = defaultdict(set)
    for c in cells:
        seeds[(c.game, c.model)].add(c.seed)
    # (seeds, games) -> models: models that miss the same seeds of the same games share a sweep
    by_games: dict[tuple[int, ...], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for (game, model), s in seeds.items():
        by_games[tuple(sorted(s))][model].add(game)
    groups: dict[tuple[tuple[int, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for seed_list, models in by_games.items():
        for model, games in models.items():
            groups[(seed_list, tuple(sorted(games)))].append(model)
    return [[f"game={','.join(games)}", f"model={','.join(sorted(models))}", f"seed={','.join(map(str, seed_list))}"]
            for (seed_list, games), models in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0]))]


def chain_overrides(stage: str, study_name: str) -> list[str]:
    """What makes a stage's sweep a link of the chain: submit held and return, named and
    recorded as the stage."""
    extra = [f"++hydra.launcher.additional_parameters.{k}={str(v).lower() if isinstance(v, bool) else v}"
             for k, v in CHAIN_SBATCH.items()]
    return ["hydra.launcher.wait=false", f"hydra.launcher.stage={stage}",
            f"hydra.launcher.name={job_name(stage, study_name)}", *extra]


# The analysis job


def run_analysis(study: str, run_root: str, logger: dict[str, Any]) -> None:
    """The chain's last job: every table and figure of the study, then its W&B dashboard."""
    python = sys.executable
    analysis = subprocess.run([python, "-m", "analysis", "all", "--study", study, "--run-root", run_root], cwd=REPO)
    dashboard = [python, "-m", "studies.dashboard", "--study", study, "--run-root", run_root]
    for key in ("name", "mode", "project", "entity"):
        if logger.get(key) is not None:
            dashboard += [f"--{key if key != 'name' else 'logger'}", str(logger[key])]
    board = subprocess.run(dashboard, cwd=REPO)
    if analysis.returncode or board.returncode:
        raise RuntimeError(f"analysis exit {analysis.returncode}, dashboard exit {board.returncode} (see above)")


def submit_analysis(launcher_params: dict[str, Any], study: str, run_root: Path, logger: dict[str, Any],
                    arrays: list[str]) -> Any:
    """The analysis job through submitit, with the profile's resources, after `arrays`."""
    params = {k: v for k, v in launcher_params.items() if k not in ("_target_", "wait", "stage")}
    params["name"] = job_name(ANALYSIS, study)
    extra = {k: v for k, v in (params.pop("additional_parameters", None) or {}).items() if k != "hold"}
    if arrays:
        extra.update({"dependency": "afterany:" + ":".join(arrays), "kill-on-invalid-dep": "yes"})
    params["additional_parameters"] = extra
    executor = submitit_executor("slurm", params)
    return executor.submit(run_analysis, study, str(Path(run_root).absolute()), logger)


# Submission


@dataclass
class Submission:
    say: Callable[[str], None]
    new_arrays: list[str] = field(default_factory=list)

    def cancel(self) -> None:
        if self.new_arrays:
            subprocess.run(["scancel", *self.new_arrays], capture_output=True, timeout=60)
            self.say(f"cancelled what this submission made: {' '.join(self.new_arrays)}")


def submit(study: Any, launcher_params: dict[str, Any], logger: dict[str, Any], stages: list[str],
           missing: Callable[[str], list[Cell]], stage_command: Callable[[str], list[str]],
           say: Callable[[str], None]) -> int:
    """Submit what the study still needs as one chain; returns the exit status (a refusal
    when SLURM or a stage's submission refuses: what this submission made is cancelled)."""
    layout = RunLayout(study.run_root)
    jobs_file = layout.jobs_file(study.name)
    records = job_records.read(jobs_file)
    try:
        alive = queue()
    except ServiceError as e:
        raise ServiceError(f"cannot tell what is queued ({e}); nothing submitted") from None
    # the jobs of submitit's local executor are processes, not SLURM jobs
    latest = latest_jobs([r for r in records if r.get("executor", "slurm") == "slurm"], study.name)
    plans = plan(stages, missing, latest, set(alive))
    live_arrays = sorted({array_of(j) for p in plans for j in p.live.values()})

    sub = Submission(say)
    known = {r["job_id"] for r in records}
    started = time.monotonic()
    commands = []
    for p in plans:
        if p.live:
            say(f"{p.stage}: {len(p.live)} cell(s) already queued or running ({', '.join(sorted(set(p.live.values()))[:6])}"
                f"{' ...' if len(set(p.live.values())) > 6 else ''}); not submitted again")
        if not p.todo:
            if not p.live:
                say(f"{p.stage}: every cell done; nothing to do")
            continue
        commands += [(p.stage, [*stage_command(p.stage), *sweep, *chain_overrides(p.stage, study.name)])
                     for sweep in sweeps_of(p.todo)]
    # held arrays do not depend on each other yet: submit them side by side (each is mostly
    # its Python's start), a few at a time
    failed = []
    for at in range(0, len(commands), PARALLEL_SUBMISSIONS):
        batch = [(stage, command, subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   text=True))
                 for stage, command in commands[at:at + PARALLEL_SUBMISSIONS]]
        for stage, command, proc in batch:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append((stage, command, proc.returncode, out))
    new = [r for r in job_records.read(jobs_file) if r["job_id"] not in known]
    sub.new_arrays = sorted({array_of(r["job_id"]) for r in new})
    if failed:
        for stage, command, rc, out in failed:
            say(f"{stage}: the submission failed (exit {rc}): {shlex.join(command)}")
            print("\n".join(out.strip().splitlines()[-20:]), file=sys.stderr)
        sub.cancel()
        what = f"the submission of {', '.join(sorted({stage for stage, _, _, _ in failed}))} failed (its output above)"
        raise (ConfigError if any(rc == 2 for _, _, rc, _ in failed) else ServiceError)(what)

    try:
        analysis = wire(study, plans, new, latest, alive, live_arrays, launcher_params, logger, records, sub)
    except Exception as e:  # scontrol's, sbatch's (through submitit): nothing may stay half-wired
        sub.cancel()
        if isinstance(e, Refusal):
            raise
        raise ServiceError(f"the chain could not be wired ({type(e).__name__}: {e})") from e
    report(study, plans, new, analysis, time.monotonic() - started, say)
    return 0


def wire(study: Any, plans: list[StagePlan], new: list[dict[str, Any]], latest: dict[tuple[str, Cell], dict[str, Any]],
         alive: dict[str, dict[str, str]], live_arrays: list[str], launcher_params: dict[str, Any],
         logger: dict[str, Any], records: list[dict[str, Any]], sub: Submission) -> str | None:
    """Dependencies of each new task, the analysis job, then the release; returns the
    analysis job's id (None: none needed)."""
    new_train = {cell: r["job_id"] for r in new if record_stage(r) == TRAIN for cell in record_cells(r, study.name)}

    def upstream(cell: Cell) -> str | None:
        if cell in new_train:
            return new_train[cell]
        record = latest.get((TRAIN, cell))
        # only a job squeue lists: SLURM takes one it does not know as satisfied
        return record["job_id"] if record is not None and record["job_id"] in alive else None

    trained = {cell for p in plans if p.stage == TRAIN for cell in [*p.todo, *p.live]}
    for record in new:
        if record_stage(record) == TRAIN:
            continue
        deps = sorted({u for cell in record_cells(record, study.name) if cell in trained and (u := upstream(cell))})
        if deps:
            run_slurm("scontrol", "update", f"JobId={record['job_id']}", f"Dependency=afterok:{':'.join(deps)}")

    # one analysis job, after everything of the study in the queue
    analyses = [r for r in records if record_stage(r) == ANALYSIS]
    waiting = [r for r in analyses if alive.get(r["job_id"], {}).get("state") == "PENDING"]
    running = [r for r in analyses if alive.get(r["job_id"], {}).get("state") == "RUNNING"]
    arrays = sorted(set(sub.new_arrays) | set(live_arrays))
    drawn = RunLayout(study.run_root).analysis_dir(study.name).is_dir()
    analysis_id = None
    # new jobs: an analysis after them (replacing one that waits); none: one only if none
    # is queued and there is something to draw
    if new or not (waiting or running or (drawn and not arrays)):
        job = submit_analysis(launcher_params, study.name, study.run_root, logger, arrays)
        analysis_id = str(job.job_id)
        sub.new_arrays.append(analysis_id)
        for r in waiting:  # the new one waits for all they waited for, and more
            run_slurm("scancel", r["job_id"])
        submitted = time.time()
        job_records.append(RunLayout(study.run_root).jobs_file(study.name), [{
            "job_id": analysis_id, "app": ANALYSIS, "stage": ANALYSIS, "executor": "slurm", "submitted": submitted,
            "submitted_at": now(submitted), "overrides": [],
            "sweep_overrides": [], "cell": None, "cells": [], "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr), "dependency": f"afterany:{':'.join(arrays)}" if arrays else None,
        }])
    for array in sorted({array_of(r["job_id"]) for r in new}):
        run_slurm("scontrol", "release", array)
    return analysis_id


def report(study: Any, plans: list[StagePlan], new: list[dict[str, Any]], analysis: str | None, seconds: float,
           say: Callable[[str], None]) -> None:
    by_stage: dict[str, list[str]] = defaultdict(list)
    cells: dict[str, int] = defaultdict(int)
    for r in new:
        by_stage[record_stage(r)].append(r["job_id"])
        cells[record_stage(r)] += len(record_cells(r, study.name))
    for p in plans:
        ids = by_stage.get(p.stage)
        if not ids:
            continue
        arrays = sorted({array_of(j) for j in ids})
        after = "" if p.stage == TRAIN else ", each task after the training of its own cells (afterok)"
        say(f"{p.stage}: {cells[p.stage]} cell(s) in {len(ids)} job(s): array {', '.join(arrays)}{after}")
    if analysis:
        say(f"analysis: job {analysis}, after every array of the study (afterany): python -m analysis all, "
            "then the W&B dashboard")
    elif not new:
        say("analysis: nothing new to draw")
    root = study.run_root
    say(f"submitted in {seconds:.0f} s; nothing here waits for the jobs. Progress: make sweep-status STUDY={study.name} "
        f"RUN_ROOT={root}   (cancel them all: make sweep-status STUDY={study.name} RUN_ROOT={root} STATUS_ARGS=--cancel)")


def launcher_params(cfg: Any) -> dict[str, Any]:
    """A composed config's hydra.launcher, resolved."""
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def is_slurm(params: dict[str, Any]) -> bool:
    """Whether a profile's launcher (hydra.launcher) submits to SLURM."""
    return str(params.get("_target_", "")).endswith(FlsSlurmLauncher.__name__)
