"""The record of submitted jobs: which cell each cluster job runs.

The submitit launchers (src/hydra_plugins/fls_launchers) append one JSON line per job to
`jobs.jsonl` in the sweep directory (`<run_root>/<study>/`, beside multirun.yaml) as they
submit. sweep-status reads it to name the job of a cell that has no directory yet (queued,
or killed before it started) and to find a job's submitit logs.

A line: job_id, app (train / evaluate / ...), executor, submitted_at (ISO) and submitted
(epoch seconds), overrides (the cell's), sweep_overrides (the sweep's command line, hydra.*
overrides included), cell ({study, game, model, seed}, or null for an app without cells),
stdout, stderr (the job's submitit logs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fls.rundir import JOBS_FILE


def jobs_file(sweep_dir: Path | str) -> Path:
    return Path(sweep_dir) / JOBS_FILE


def append(sweep_dir: Path | str, records: Iterable[dict[str, Any]]) -> None:
    path = jobs_file(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write per line, in append mode: concurrent sweeps into one study interleave lines,
    # never bytes within a line.
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()


def read(sweep_dir: Path | str) -> list[dict[str, Any]]:
    """Every record, oldest first; a line cut short by a crash is skipped."""
    try:
        lines = jobs_file(sweep_dir).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
