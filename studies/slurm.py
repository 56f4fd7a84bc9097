"""What SLURM says of our jobs, and what the studies ask of it: squeue and sacct for
sweep-status and the job chain, scontrol and scancel for the chain and --cancel.

A job's state is a dict: `state` (the state's name), `reason` (why a pending job waits),
`exit` (sacct's exit code), `text` (the state as SLURM says it: `CANCELLED by 0` is a user's
scancel, a plain CANCELLED before it started a dependency that failed) and `dependency`
(what a pending job still waits for, squeue's %E).
"""

from __future__ import annotations

import shlex
import subprocess

from fls.errors import ServiceError

# SLURM job states (squeue/sacct), by what they mean for a cell
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
DEAD = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# Neither squeue nor sacct knows the job: SLURM keeps no record of an array task cancelled
# while it waited (Slurm 22.05), nor of jobs purged from accounting.
GONE = "GONE"
# squeue's line for one job (pending array tasks one by one, with -r)
SQUEUE = ["squeue", "-h", "-r", "--me", "-o", "%i|%T|%r|%E"]


def array_of(job_id: str) -> str:
    """The array of an array task's id (`<array>_<task>`), or the job's own id."""
    return str(job_id).split("_")[0]


def run_slurm(*cmd: str, timeout: float = 60) -> str:
    """A SLURM client command's output; ServiceError with its message when it fails."""
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"{shlex.join(cmd)}: {e}") from None
    if res.returncode != 0:
        raise ServiceError(f"{shlex.join(cmd)}: {(res.stderr or res.stdout).strip() or f'exit {res.returncode}'}")
    return res.stdout


def _answer(cmd: list[str]) -> str | None:
    """A query's output, None when SLURM does not answer (no SLURM here, a timeout)."""
    try:
        return run_slurm(*cmd, timeout=30)
    except ServiceError:
        return None


def _queued(out: str) -> dict[str, dict[str, str]]:
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            dependency = parts[3] if len(parts) > 3 and parts[3] != "(null)" else ""
            jobs[parts[0]] = {"state": parts[1], "reason": "" if parts[2] == "None" else parts[2], "exit": "",
                              "text": parts[1], "dependency": dependency}
    return jobs


def queue() -> dict[str, dict[str, str]]:
    """Every job of ours squeue lists (pending or running), task by task; ServiceError when
    it does not answer (a submission must not guess what is queued)."""
    return _queued(run_slurm(*SQUEUE))


def query_slurm(job_ids: set[str]) -> dict[str, dict[str, str]] | None:
    """State of each job: sacct for the past, squeue for the present (it lists pending
    array tasks one by one, sacct as a range). None when neither answers."""
    if not job_ids:
        return {}
    states: dict[str, dict[str, str]] = {}
    ids = sorted({array_of(j) for j in job_ids})
    acct = _answer(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(ids)])
    for line in (acct or "").splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and "[" not in parts[0]:
            states[parts[0]] = {"state": parts[1].split()[0] if parts[1] else "UNKNOWN", "reason": "", "exit": parts[2],
                                "text": parts[1], "dependency": ""}
    listed = _answer(SQUEUE)
    states.update({j: s for j, s in _queued(listed or "").items() if j in job_ids})
    if acct is None and listed is None:
        return None
    return states
