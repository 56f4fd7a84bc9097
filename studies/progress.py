"""Where each stage of a study is, its ETA, and cancelling it: the stage half of sweep-status.

    python -m studies.status --study paper              the cell table, then the stages and the ETA
    python -m studies.status --study paper --cancel     cancel every queued or running job of the study

A stage's cell is, from its run directory and its latest job (jobs.jsonl, asked of SLURM):
  done      its result is there (the stage's own output: eval/<game>/, saliency/trials.csv)
  running   its job runs
  queued    its job waits for resources or priority (or was requeued)
  waiting   its job waits for another job (a dependency: the training of its cells)
  failed    its job failed, was cancelled by a user, or ended without the result; the line
            ends with the last line of the job's log
  not run   SLURM cancelled its job because the job it waited for failed: the training of
            the cell did not finish (a resubmission of the study runs it after the retraining)
  to do     no job of it is known
Training's states are sweep-status's own (studies/status.py), in the same words.

The ETA is rough, and says so: the remaining agent steps of the training cells, at the
steps per second each running cell measures now (metrics.csv's charts/SPS, since its
latest start), the cells still to train at the mean of those of their model, spread over
as many cells as run now. How many jobs share a node changes SPS; evaluation, scoring and
queue waits are not counted.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fls import job_records
from fls.errors import CellDamaged
from fls.rundir import SPS, Cell, CellDir, CellState, RunLayout
from fls.train_log import MetricsCSV
from studies.slurm import DEAD, GONE, RUNNING, WAITING, array_of, query_slurm, queue, run_slurm
from studies.stages import ANALYSIS, ORDER, TRAIN, latest_jobs, record_cells, record_stage, stage_done

STATES = ("done", "running", "queued", "waiting", "failed", "not run", "to do")
# training's states (fls.rundir.CellState) in the stage table's words
FROM_CELL_STATE = {CellState.DONE: "done", CellState.RUNNING: "running", CellState.QUEUED: "queued",
                   CellState.FAILED: "failed", CellState.RESUMABLE: "to do", CellState.NOT_STARTED: "to do"}


@dataclass
class StageCell:
    stage: str
    cell: Cell
    state: str
    job_id: str | None = None
    note: str = ""


# What a job's stderr ends with after the error: srun's and slurmstepd's own lines, submitit's
# closing lines.
NOISE = re.compile(r"^(srun: |slurmstepd: |submitit (INFO|WARNING) )")
ERROR = re.compile(r"^([\w.]*(Error|Exception|Refused|Died|Interrupt)\b|error: )|\bERROR\b")


def last_line(path: str | Path | None) -> str:
    """The line of a job's log that says why it failed: its last error (an exception's
    line, an `error:` line), else its last line that is not SLURM's or submitit's."""
    if not path:
        return ""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if ERROR.search(line)]
    plain = [line for line in lines if not NOISE.match(line)]
    return (errors or plain or lines or [""])[-1]


def classify_stage(done: bool, job: dict[str, str] | None, record: dict[str, Any] | None) -> tuple[str, str]:
    """(state, note) of a later stage's cell from its result and its latest job's SLURM state."""
    if done:
        return "done", ""
    if job is None:
        return "to do", "" if record is None else f"job {record['job_id']} submitted; SLURM does not answer here"
    state, text, reason = job.get("state", ""), job.get("text", ""), job.get("reason", "")
    log = last_line(record.get("stderr") if record else None)
    if state in RUNNING:
        return "running", ""
    if state == "PENDING" and reason == "DependencyNeverSatisfied":
        return "not run", "the job it waited for failed (its training); SLURM cancels it"
    if state == "PENDING" and reason == "Dependency":
        return "waiting", f"on {job.get('dependency') or 'its training'}"
    if state in WAITING:
        return "queued", reason
    if state == "CANCELLED" and text.strip() == "CANCELLED":
        return "not run", "cancelled by SLURM: the job it waited for failed (its training)"
    if state == "CANCELLED":
        return "failed", f"{text} (a user's scancel)"
    if state == GONE:
        return "failed", "its job left the queue without running and without a SLURM record (cancelled while pending?)"
    if state == "COMPLETED":
        return "failed", f"its job ended without the result; log: {log or '-'}"
    return "failed", f"its job ended {text or state}; log: {log or '-'}"


def stages_of(records: list[dict[str, Any]], study: str) -> list[str]:
    """The later stages the study has jobs of, in the order they run."""
    seen = {record_stage(r) for r in records if record_cells(r, study)}
    return [s for s in ORDER[1:] if s in seen]


def collect_stages(layout: RunLayout, study: str, train_rows: list[Any], use_slurm: bool = True,
                   query: Callable[[set[str]], dict[str, dict[str, str]] | None] = query_slurm,
                   ) -> tuple[list[StageCell], dict[str, Any] | None]:
    """Every (stage, cell) of the study's later stages, and its analysis job (record and
    SLURM state). `train_rows`: sweep-status's rows (studies.status.collect)."""
    records = job_records.read(layout.jobs_file(study))
    latest = latest_jobs(records, study)
    analysis = max((r for r in records if record_stage(r) == ANALYSIS), key=lambda r: r.get("submitted", 0), default=None)
    later = stages_of(records, study)
    ids = {r["job_id"] for (stage, _), r in latest.items() if stage != TRAIN} | ({analysis["job_id"]} if analysis else set())
    slurm = query(ids) if use_slurm else None

    out = [StageCell(TRAIN, r.cell, FROM_CELL_STATE.get(r.state, str(r.state)), r.job_id, r.note) for r in train_rows]
    for stage in later:
        cells = sorted({c for (s, c) in latest if s == stage})
        for cell in cells:
            record = latest.get((stage, cell))
            job = None
            if record is not None and slurm is not None and record.get("executor", "slurm") == "slurm":
                job = slurm.get(record["job_id"], {"state": GONE})
            state, note = classify_stage(stage_done(CellDir(layout.root, cell), stage), job, record)
            out.append(StageCell(stage, cell, state, record["job_id"] if record else None, note))
    analysis_state = None
    if analysis is not None:
        analysis_state = {"record": analysis, "job": (slurm or {}).get(analysis["job_id"], {"state": GONE}) if slurm is not None else None}
    return out, analysis_state


# ETA


def _last_metrics_row(d: CellDir) -> dict[str, str] | None:
    try:
        rows = MetricsCSV(d.metrics).rows()
    except (OSError, CellDamaged):
        return None
    return rows[-1] if rows else None


def _sps(row: dict[str, str] | None) -> float | None:
    try:
        value = float(row[SPS]) if row else 0.0
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def eta(layout: RunLayout, train_rows: list[Any], now: float | None = None) -> str:
    """One line: the estimated time until the training in the queue (running and queued
    cells) is done, and what it rests on."""
    now = time.time() if now is None else now
    running: list[tuple[Cell, float, float]] = []  # cell, SPS, seconds left
    measured: dict[str, list[float]] = defaultdict(list)
    queued: list[tuple[Cell, int]] = []  # cells waiting in the queue: steps to train
    outside = 0  # failed, resumable, not started: nothing runs them until a resubmission
    for row in train_rows:
        d = CellDir(layout.root, row.cell)
        try:
            status = d.status()
        except CellDamaged:
            status = {}
        total = int(status.get("total_timesteps") or 0)
        step = int(status.get("global_step") or 0)
        sps = _sps(_last_metrics_row(d)) if d.metrics.exists() else None
        if sps and row.state in (CellState.DONE, CellState.RUNNING):
            measured[row.cell.model].append(sps)
        if row.state == CellState.RUNNING and sps and total:
            made = max(0.0, now - d.metrics.stat().st_mtime) * sps  # since its last metrics row
            running.append((row.cell, sps, max(0.0, (total - step - made) / sps)))
        elif row.state in (CellState.RUNNING, CellState.QUEUED):
            queued.append((row.cell, max(0, (total or _study_steps(layout, row.cell)) - step)))
        elif row.state != CellState.DONE:
            outside += 1
    not_queued = f"; {outside} cell(s) failed or not submitted are not counted" if outside else ""
    if not running and not queued:
        return f"ETA: no training in the queue{not_queued}" if train_rows else "ETA: no training cells"
    every = [v for values in measured.values() for v in values]
    if not every:
        return "ETA: unknown until a training cell has measured its speed (metrics.csv's charts/SPS)"
    seconds_left = [s for _, _, s in running]
    for cell, steps in queued:
        sps_of = measured.get(cell.model) or every
        seconds_left.append(steps / _mean(sps_of))
    at_once = max(1, len(running))
    total_s = max(max((s for _, _, s in running), default=0.0), sum(seconds_left) / at_once)
    speed = _mean([s for _, s, _ in running]) if running else _mean(every)
    return (f"ETA of the training: ~{_duration(total_s)} (rough: {len(running)} cell(s) running at {speed:.0f} agent "
            f"steps/s each, {len(queued)} queued, {at_once} at a time; evaluation, scoring and queue waits not "
            f"counted{not_queued})")


def _study_steps(layout: RunLayout, cell: Cell) -> int:
    """A cell not started yet: its study's steps per cell, from a cell that has started."""
    for other in layout.cells(cell.study):
        try:
            total = other.status().get("total_timesteps")
        except CellDamaged:
            continue
        if total:
            return int(total)
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# Output


def _ids(ids: list[str], most: int = 8) -> str:
    ids = sorted(set(ids))
    return " ".join(ids[:most]) + (f" (+{len(ids) - most} more)" if len(ids) > most else "")


def render(rows: list[StageCell], analysis: dict[str, Any] | None, analysis_dir: Path) -> str:
    stages = [s for s in ORDER if any(r.stage == s for r in rows)]
    counts: dict[str, dict[str, int]] = {s: defaultdict(int) for s in stages}
    for r in rows:
        counts[r.stage][r.state] += 1
    header = ("stage", "cells", *STATES)
    table = [header] + [(s, str(sum(counts[s].values())), *(str(counts[s][k]) if counts[s][k] else "-" for k in STATES))
                        for s in stages]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths))).rstrip()
             for line in table]
    for stage in stages:
        mine = [r for r in rows if r.stage == stage]
        for state in ("running", "queued", "waiting"):
            jobs = [r.job_id for r in mine if r.state == state and r.job_id]
            if jobs and stage != TRAIN:
                notes = sorted({r.note for r in mine if r.state == state and r.note})
                lines.append(f"  {stage} {state}: job {_ids(jobs)}" + (f" ({'; '.join(notes[:3])})" if notes else ""))
        for r in mine:
            if r.state in ("failed", "not run") and stage != TRAIN:
                lines.append(f"  {stage} {r.cell.key}: {r.state}, job {r.job_id or '-'}: {r.note}")
    if analysis is not None:
        record, job = analysis["record"], analysis["job"]
        state = job["state"] if job else "?"
        if job and state == "PENDING" and job.get("reason") == "Dependency":
            what = f"waiting for {job.get('dependency') or 'the stages'}"
        elif job and state == "COMPLETED":
            what = f"done: {analysis_dir}"
        elif job and state in RUNNING:
            what = "running"
        elif job and state in DEAD | {"CANCELLED", GONE}:
            what = f"{job.get('text') or state}; log: {last_line(record.get('stderr')) or record.get('stderr')}"
        else:
            what = state.lower()
        lines.append(f"analysis: job {record['job_id']}, {what}")
    return "\n".join(lines)


# Cancelling


def cancel(layout: RunLayout, study: str, say: Callable[[str], None] = print) -> int:
    """scancel every queued or running job of the study, the last stages first: cancelling
    the training first would let the analysis job (afterany) start on what is there. A
    ServiceError when SLURM does not answer or refuses."""
    records = job_records.read(layout.jobs_file(study))
    alive = queue()
    order = [ANALYSIS, *reversed(ORDER)]
    by_stage: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.get("executor", "slurm") == "slurm" and record["job_id"] in alive:
            by_stage[record_stage(record)].add(record["job_id"])
    # a pending array is listed task by task, so its recorded tasks are its tasks
    cancelled = 0
    for stage in [*order, *sorted(set(by_stage) - set(order))]:
        ids = sorted(by_stage.get(stage, ()))
        if not ids:
            continue
        run_slurm("scancel", *ids, timeout=120)
        cancelled += len(ids)
        arrays = sorted({array_of(i) for i in ids})
        say(f"{stage}: cancelled {len(ids)} job(s) ({' '.join(arrays)})")
    if not cancelled:
        say(f"{study}: no job of the study is queued or running")
    return 0
