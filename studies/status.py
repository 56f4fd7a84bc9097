"""Where every cell of a study is, from its run directories and, where it answers, SLURM.

    python -m studies.status --study paper [--run-root runs]        the table
    python -m studies.status --study paper --resubmit-failed        the command that reruns
                                                                      the failed and missing cells
    python -m studies.status --study paper --resubmit-failed --run  ... and runs it
    python -m studies.status --study paper --cancel                 cancel the study's queued and
                                                                    running jobs, last stages first

States (fls.rundir.CellState, from each cell's status.json and the state of its latest job):
  done         finished
  running      training now: its job runs, or (without SLURM) its process is alive
  queued       its job waits in SLURM: not yet started, or requeued after a signal
  failed       raised, or its job died (killed, out of memory or time, cancelled); the
               table is followed by the end of its train.log and of its job's log
  resumable    interrupted, or left a checkpoint, and nothing runs it: a rerun resumes it
  not started  in the study's grid, but no directory and no job
The grid is the union of the cells on disk, the training sweep saved in <study>/multirun.yaml
(expanded as the sweeper expands it: fls.grid) and the jobs recorded in
<study>/jobs.jsonl (fls.job_records). Without squeue/sacct the table is built from the
directories alone. Below the table: each stage of the study (training, evaluation, scoring,
the analysis job) and the training's ETA (studies/progress.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fls import job_records
from fls.cli import command
from fls.config import training_identity
from fls.errors import CellDamaged, ConfigError
from fls.facts import CONF_DIR, TRAIN_APP, changes, script
from fls.grid import cell_overrides, cells_of
from fls.rundir import Cell, CellDir, CellState, RunLayout
from fls.train_log import MetricsCSV
from studies import progress
from studies.slurm import GONE, RUNNING as SLURM_RUNNING, WAITING as SLURM_WAITING, query_slurm
from studies.stages import TRAIN, latest_jobs

TRAIN_SCRIPT = script(TRAIN_APP)
# The keys that name a cell; a rerun command sets them itself.
CELL_KEYS = ("game", "model", "seed", "study", "run_root")

# The order of the summary line.
STATES = (CellState.DONE, CellState.RUNNING, CellState.QUEUED, CellState.FAILED, CellState.RESUMABLE,
          CellState.NOT_STARTED)
# What the rerun command covers.
TO_RERUN = (CellState.FAILED, CellState.RESUMABLE, CellState.NOT_STARTED)

TAIL_LINES = 8


@dataclass
class Row:
    cell: Cell
    state: CellState
    progress: str = "-"
    job_id: str | None = None
    slurm_state: str | None = None
    host: str | None = None
    restarts: int = 0
    note: str = ""
    job_record: dict[str, Any] | None = field(default=None, repr=False)


# The grid


def multirun_cells(layout: RunLayout, study: str) -> set[Cell]:
    """The cells of the sweep saved in the study's multirun.yaml, as the sweeper made them."""
    path = layout.sweep(study).config
    if not path.is_file():
        return set()
    hydra = OmegaConf.load(path).hydra
    if hydra.job.name != TRAIN_APP:  # written by an evaluation sweep before it had a file of its own
        return set()
    sources = [s for s in hydra.runtime.config_sources if s.provider == "main" and s.schema == "file"]
    if not sources:
        return set()
    range_keys = list(hydra.sweeper.get("range_keys") or ["seed"])
    params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
    grid = cell_overrides(params + list(hydra.overrides.task), range_keys)

    def compose_cell(overrides: list[str]) -> Any:
        # Launcher and other hydra.* settings do not move a cell.
        task = [o for o in overrides if not o.startswith("hydra.")]
        return compose(config_name=str(hydra.job.config_name), overrides=task)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=sources[0].path, version_base="1.3", job_name=str(hydra.job.name)):
            cells = cells_of(grid, compose_cell)
    finally:
        GlobalHydra.instance().clear()
    return {cell for cell in cells if cell is not None and cell.study == study}


def recorded_cells(records: list[dict[str, Any]], study: str) -> dict[Cell, dict[str, Any]]:
    """The latest training job recorded for each cell of the study."""
    return {cell: record for (stage, cell), record in latest_jobs(records, study).items() if stage == TRAIN}


# One cell


def _alive_here(status: dict[str, Any]) -> bool | None:
    """Whether the process that wrote `status` still runs; None when it ran elsewhere."""
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return None
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_job_id(status: dict[str, Any]) -> str | None:
    """The SLURM job that last ran the cell, as submitit names it (array_task for arrays)."""
    if status.get("slurm_array_job_id") and status.get("slurm_array_task_id") is not None:
        return f"{status['slurm_array_job_id']}_{status['slurm_array_task_id']}"
    return status.get("slurm_job_id")


def classify(status: dict[str, Any], has_checkpoint: bool, slurm: dict[str, str] | None,
             alive: bool | None) -> tuple[CellState, str]:
    """(state, note) of one cell. `slurm`: its latest job's state, None when unknown;
    `alive`: whether its process runs here, None when that cannot be told."""
    state = status.get("state")
    job = slurm.get("state") if slurm else None
    if state == CellState.DONE:
        return CellState.DONE, ""
    if job in SLURM_WAITING:
        reason = f" ({slurm['reason']})" if slurm.get("reason") else ""
        return CellState.QUEUED, ("requeued" if state else "waiting") + reason
    if job in SLURM_RUNNING:
        return CellState.RUNNING, ""
    resume = "a rerun resumes it" if has_checkpoint else "no checkpoint: a rerun starts it over"
    if state == CellState.FAILED:
        return CellState.FAILED, status.get("error") or ""
    if state == CellState.INTERRUPTED:
        why = f" ({status['error']})" if status.get("error") else ""
        if job is not None and job not in ("COMPLETED", GONE):
            # the trainer checkpointed on the way out of a scancel, a last time limit, a lost
            # node: nothing requeues it, so the study has a failed cell to resubmit
            return CellState.FAILED, f"its job ended {slurm.get('text') or job}{why}; {resume}"
        return CellState.RESUMABLE, f"interrupted{why}; {resume}"
    if state == CellState.RUNNING:
        if alive:
            return CellState.RUNNING, ""
        if job == GONE:
            return CellState.FAILED, f"SLURM no longer knows its job; {resume}"
        if job is not None:
            return CellState.FAILED, f"its job ended {job} while training; {resume}"
        if alive is False:
            return CellState.FAILED, f"process {status.get('pid')} is gone; {resume}"
        return CellState.RUNNING, f"on {status.get('host')} (not verified here)"
    if job == GONE:
        return CellState.FAILED, "its job left the queue without running and without a SLURM record (cancelled while pending?)"
    if job is not None and job != "COMPLETED":
        return CellState.FAILED, f"its job ended {job} before the cell started"
    if has_checkpoint:
        return CellState.RESUMABLE, resume
    return CellState.NOT_STARTED, ""


def collect(layout: RunLayout, study: str, use_slurm: bool = True) -> list[Row]:
    records = recorded_cells(job_records.read(layout.jobs_file(study)), study)
    try:
        grid = multirun_cells(layout, study)
    except Exception as e:  # e.g. a config renamed since the sweep: still show what is there
        print(f"warning: cannot expand the sweep of {layout.sweep(study).config} ({type(e).__name__}: {e}); "
              "showing the cells on disk and in jobs.jsonl", file=sys.stderr)
        grid = set()
    cells = {c.cell for c in layout.cells(study)} | grid | set(records)
    dirs = {cell: CellDir(layout.root, cell) for cell in cells}
    statuses, damaged = {}, {}
    for cell, d in dirs.items():
        try:
            statuses[cell] = d.status()
        except CellDamaged as e:  # one bad cell is reported, the others still are
            statuses[cell], damaged[cell] = {}, str(e)
    job_ids = {
        cell: (records[cell]["job_id"] if cell in records else status_job_id(statuses[cell]))
        for cell in cells
    }
    # Jobs of submitit's local executor are processes, not SLURM jobs.
    in_slurm = {
        cell: job_ids[cell] is not None and (cell not in records or records[cell].get("executor") == "slurm")
        for cell in cells
    }
    slurm = query_slurm({job_ids[c] for c in cells if in_slurm[c]}) if use_slurm else None

    rows = []
    for cell in sorted(cells):
        status, job_id = statuses[cell], job_ids[cell]
        job = slurm.get(job_id, {"state": GONE}) if (slurm is not None and in_slurm[cell]) else None
        state, note = classify(status, dirs[cell].has_checkpoint(), job, _alive_here(status))
        left = state == CellState.RESUMABLE or (state == CellState.FAILED and status.get("state") == CellState.INTERRUPTED)
        if left and not dirs[cell].config.exists():
            damaged[cell] = (f"{dirs[cell].path} has training results but no config.yaml; a rerun is refused "
                             "(restore it, or overwrite=true)")
        elif left:
            try:  # what the resume reads besides the checkpoint
                dirs[cell].recorded_config()
                MetricsCSV(dirs[cell].metrics).rows()
            except CellDamaged as e:
                damaged[cell] = str(e)
        if cell in damaged:
            state, note = CellState.FAILED, damaged[cell]
        if state == CellState.NOT_STARTED and in_slurm[cell] and slurm is None:
            note = f"job {job_id} submitted; SLURM does not answer here"
        progress = f"{status['update']}/{status['num_updates']}" if "num_updates" in status else "-"
        rows.append(Row(
            cell=cell, state=state, progress=progress, job_id=job_id,
            # a finished cell's job may be long purged from accounting: no news
            slurm_state=job["state"] if job and not (state == CellState.DONE and job["state"] == GONE) else None,
            host=status.get("host"),
            restarts=int(status.get("slurm_restart_count") or 0), note=note,
            job_record=records.get(cell),
        ))
    return rows


# Output


def render(rows: list[Row], study: str) -> str:
    header = ("cell", "state", "update", "job", "slurm", "host", "restarts", "note")
    table = [header] + [
        (r.cell.key, r.state, r.progress, r.job_id or "-", r.slurm_state or "-", r.host or "-",
         str(r.restarts), r.note)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)) + "  " + line[-1] for line in table]
    counts = defaultdict(int)
    for r in rows:
        counts[r.state] += 1
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    lines.append(f"{study}: {len(rows)} cells: {summary or 'none found'}")
    return "\n".join(line.rstrip() for line in lines)


def _tail(path: Path | None, n: int = TAIL_LINES) -> list[str]:
    try:
        lines = Path(path).read_text(errors="replace").splitlines() if path else []
    except OSError:
        return []
    return lines[-n:]


def job_log(layout: RunLayout, row: Row) -> Path | None:
    """The stderr of the cell's job: recorded at submission, else submitit's folder."""
    if row.job_record and row.job_record.get("stderr"):
        return Path(row.job_record["stderr"])
    if row.job_id:
        found = sorted(layout.sweep(row.cell.study).submitit_dir(row.job_id).glob("*_log.err"))
        return found[0] if found else None
    return None


def failure_details(layout: RunLayout, rows: list[Row]) -> str:
    out = []
    for row in rows:
        if row.state != CellState.FAILED:
            continue
        out.append(f"--- {row.cell.key}: failed" + (f" ({row.note})" if row.note else ""))
        train_log = CellDir(layout.root, row.cell).train_log
        for title, path in (("train.log", train_log), ("job log", job_log(layout, row))):
            lines = _tail(path)
            if lines:
                out.append(f"{title} ({path}), last {len(lines)} lines:")
                out.extend(f"  {line}" for line in lines)
    return "\n".join(out)


# Rerunning


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def base_overrides(layout: RunLayout, study: str) -> list[str]:
    """The command line of the study's latest training sweep (launcher settings included),
    less the cell keys."""
    candidates: list[tuple[float, list[str]]] = []
    for record in job_records.read(layout.jobs_file(study)):
        if record.get("app") == TRAIN_APP:
            candidates.append((record.get("submitted", 0), list(record.get("sweep_overrides") or [])))
    multirun = layout.sweep(study).config
    if multirun.is_file():
        saved = OmegaConf.load(multirun).hydra
        if saved.job.name == TRAIN_APP:
            hydra_overrides = [o for o in saved.overrides.get("hydra") or [] if not o.startswith("hydra.mode=")]
            candidates.append((multirun.stat().st_mtime, list(saved.overrides.task) + hydra_overrides))
    if not candidates:
        return []
    latest = max(candidates, key=lambda c: c[0])[1]
    return [o for o in latest if _key(o) not in CELL_KEYS]


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    # quoted when Hydra's grammar would read it as something else (a list, a sweep, ...)
    return f"'{text}'" if any(c in text for c in " ,[]{}()='\"\\:") else text


def recorded_overrides(layout: RunLayout, cell: Cell, base: list[str]) -> tuple[str, ...]:
    """What the cell's config.yaml records that `base` + the cell's keys would not compose
    to (a cell trained without -m, or with overrides of its own): the overrides that make
    the rerun train what the cell started, instead of being refused as a changed config."""
    d = CellDir(layout.root, cell)
    if not d.config.is_file():
        return ()
    try:
        recorded = training_identity(d.recorded_config())
    except CellDamaged:  # the rerun refuses the cell in one line naming the file
        return ()
    task = [o for o in base if not o.startswith("hydra")]
    cell_keys = [f"study={cell.study}", f"game={cell.game}", f"model={cell.model}", f"seed={cell.seed}"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=TRAIN_APP):
            composed = compose(config_name=TRAIN_APP, overrides=task + cell_keys)
    finally:
        GlobalHydra.instance().clear()
    # only what the cell recorded: a key its config.yaml lacks says nothing about it
    return tuple(f"{key}={_override_value(old)}" for key, old, _ in changes(recorded, training_identity(composed))
                 if old is not None)


def rerun_commands(layout: RunLayout, study: str, rows: list[Row], python: str = "python",
                   script: str = "src/train.py") -> list[list[str]]:
    """One `-m` sweep per (model, seeds, the cells' own overrides) group, covering exactly
    the cells to rerun."""
    base = base_overrides(layout, study)
    seeds: dict[tuple[str, str, tuple[str, ...]], set[int]] = defaultdict(set)
    for row in rows:
        if row.state in TO_RERUN:
            own = recorded_overrides(layout, row.cell, base)
            seeds[(row.cell.game, row.cell.model, own)].add(row.cell.seed)
    groups: dict[tuple[str, tuple[int, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for (game, model, own), s in sorted(seeds.items()):
        groups[(model, tuple(sorted(s)), own)].append(game)
    return [
        [python, script, "-m", f"study={study}", f"run_root={layout.root}", f"game={','.join(games)}",
         f"model={model}", f"seed={','.join(map(str, seed_list))}", *base, *own]
        for (model, seed_list, own), games in sorted(groups.items(), key=lambda g: (g[0][0], g[1], g[0][1], g[0][2]))
    ]


def _shown(path: Path) -> str:
    """`path` as a user here would type it: relative to the working directory when inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="the study (runs/<study>/)")
    parser.add_argument("--run-root", default="runs", help="where run directories go (default: runs)")
    parser.add_argument("--resubmit-failed", action="store_true",
                        help="print the command(s) that rerun the failed, resumable and not-started cells")
    parser.add_argument("--run", action="store_true", help="with --resubmit-failed: run them")
    parser.add_argument("--no-slurm", action="store_true", help="do not ask squeue/sacct")
    parser.add_argument("--cancel", action="store_true",
                        help="cancel every queued or running job of the study (the last stages first)")
    args = parser.parse_args(argv)
    if args.run and not args.resubmit_failed:
        parser.error("--run goes with --resubmit-failed")

    layout = RunLayout(args.run_root)
    if args.cancel:
        return progress.cancel(layout, args.study)
    rows = collect(layout, args.study, use_slurm=not args.no_slurm)
    if not rows:
        raise ConfigError(f"no cells of study {args.study!r} under {args.run_root}/ "
                          f"(studies there: {', '.join(layout.studies()) or 'none'})")
    print(render(rows, args.study))
    details = failure_details(layout, rows)
    if details:
        print("\n" + details)
    stage_rows, analysis = progress.collect_stages(layout, args.study, rows, use_slurm=not args.no_slurm)
    print("\n" + progress.render(stage_rows, analysis, layout.analysis_dir(args.study)))
    print(progress.eta(layout, rows))
    if not args.resubmit_failed:
        return 0

    python, train_script = _shown(Path(sys.executable)), _shown(TRAIN_SCRIPT)
    commands = rerun_commands(layout, args.study, rows, python, train_script)
    if not commands:
        print("\nnothing to rerun")
        return 0
    print("\nrerun the failed and missing cells with:")
    for cmd in commands:
        print("  " + shlex.join(cmd))
    if not args.run:
        return 0
    rc = 0
    for cmd in commands:
        print(f"\n$ {shlex.join(cmd)}", flush=True)
        rc = subprocess.call([sys.executable, str(TRAIN_SCRIPT), *cmd[2:]]) or rc
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
