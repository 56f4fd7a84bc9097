"""The record of submitted jobs: which cell each cluster job runs.

The submitit launchers (src/hydra_plugins/fls_launchers) append one JSON line per job to
the sweep's jobs file (fls.rundir: SweepDir.jobs_file, `<run_root>/<study>/jobs.jsonl`) as
they submit. sweep-status (studies/status.py) reads it to name the job of a cell that has
no directory yet (queued, or killed before it started) and to find a job's submitit logs.

A line: job_id, app (train / evaluate / ...), stage (the study stage: train, evaluate,
breakout_infinite, saliency, analysis; studies/stages.py), executor, submitted_at (ISO) and
submitted (epoch seconds), overrides (the cell's), sweep_overrides (the sweep's command line, hydra.*
overrides included), cells (the {study, game, model, seed} it runs: one, several for a packed
job, none for an app without cells), cell (the first of them, or null),
stdout, stderr (the job's submitit logs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def append(jobs_file: Path | str, records: Iterable[dict[str, Any]]) -> None:
    path = Path(jobs_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write per line, in append mode: concurrent sweeps into one study interleave lines,
    # never bytes within a line.
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()


def read(jobs_file: Path | str) -> list[dict[str, Any]]:
    """Every record, oldest first; a line cut short by a crash is skipped."""
    try:
        lines = Path(jobs_file).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
