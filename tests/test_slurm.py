"""Sweeps on a real SLURM: the one-node cluster of cluster/slurm-local (make test-slurm).

The user's sweep as a job array, a job requeued by SLURM's pre-timeout signal resuming at
the same update, and a failing cell and a killed job failing alone while the rest finish.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from fls import job_records
from fls.rundir import RunLayout
from studies import status as sweep_status

from conftest import PYTHON, REPO

pytestmark = pytest.mark.slurm

USER_COMMAND = "src/train.py -m game=breakout,seaquest model=sparse_fls seed=0-4"
# launcher=slurm with this machine's resources, from the command line (launcher=slurm_local
# is the same as a profile).
ON_THIS_MACHINE = [
    "launcher=slurm", "hydra.launcher.partition=local", "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=30",
    "torch_threads=1", "env.num_threads=1",
]
SMALL = ["model=nature_cnn", "logger=none", "launcher=slurm_local"]


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    # also for the squeue/sacct calls sweep-status makes in this process
    os.environ.setdefault("SLURM_CONF", str(REPO / ".slurm" / "etc" / "slurm.conf"))
    env = dict(os.environ)
    try:
        ping = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        ping = None
    if ping is None or "is UP" not in ping.stdout:
        pytest.skip("no local SLURM: make slurm-up (cluster/slurm-local/up.sh) first")
    return env


@pytest.fixture
def start_sweep(slurm_env, tmp_path):
    """Starts sweeps into tmp_path; what a failed test leaves behind is stopped: the sweep
    processes, and their jobs in SLURM."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, command: str = "src/train.py -m") -> subprocess.Popen:
        procs.append(subprocess.Popen(
            [PYTHON, *command.split(), *args, f"run_root={tmp_path}"], cwd=REPO, env=slurm_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    left = {r["job_id"] for r in job_records.read(RunLayout(tmp_path).jobs_file("default"))}
    if left:
        subprocess.run(["scancel", *sorted(left)], env=slurm_env, capture_output=True, timeout=60)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def slurm(env: dict[str, str], *cmd: str) -> str:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def metric_updates(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["update"]) for row in csv.DictReader(f)]


def epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def test_the_users_sweep_runs_as_a_job_array_and_every_cell_finishes(tmp_path, slurm_env, start_sweep, capsys):
    proc = start_sweep(*ON_THIS_MACHINE, "total_timesteps=1024", command=USER_COMMAND)
    rc, out, err = finish(proc)
    assert rc == 0, (out + err)[-4000:]

    cells = list(RunLayout(tmp_path).cells("default"))
    assert [(c.cell.game, c.cell.model, c.cell.seed) for c in cells] == [
        (g, "sparse_fls", s) for g in ("breakout", "seaquest") for s in range(5)
    ]
    statuses = [c.status() for c in cells]
    assert all((s["state"], s["global_step"]) == ("done", 1024) for s in statuses)
    # one array, one task per (game, model): the SLURM profile packs the five seeds (pack=seeds)
    assert len({s["slurm_array_job_id"] for s in statuses}) == 1
    tasks = {(c.cell.game, c.cell.seed): int(s["slurm_array_task_id"]) for c, s in zip(cells, statuses)}
    assert {tasks[("breakout", s)] for s in range(5)} == {0} and {tasks[("seaquest", s)] for s in range(5)} == {1}
    assert statuses[0]["packed_with"] == [f"breakout/sparse_fls/seed_{s}" for s in range(1, 5)]
    records = job_records.read(RunLayout(tmp_path).jobs_file("default"))
    assert sorted(r["job_id"] for r in records) == sorted({f"{s['slurm_array_job_id']}_{s['slurm_array_task_id']}" for s in statuses})
    assert [[c["seed"] for c in r["cells"]] for r in records] == [list(range(5))] * 2
    # submitit's result file is written before the task's epilogue ends, so SLURM may still
    # show the last tasks RUNNING or COMPLETING for a moment after the sweep returns.
    def settled():
        states = {v["state"] for v in (sweep_status.query_slurm({r["job_id"] for r in records}) or {}).values()}
        return states if not states & {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"} else None
    assert wait_until(settled, 120, "SLURM to record the tasks' end") == {"COMPLETED"}

    assert sweep_status.main(["--study", "default", "--run-root", str(tmp_path)]) == 0
    assert "default: 10 cells: 10 done" in capsys.readouterr().out
    # every cell has its own log of the job
    assert all("packed job: breakout/sparse_fls/seed_0" in c.train_log.read_text() for c in cells[:5])

    # Overhead per job: from submission to the trainer's first update (status `started_at`,
    # written just before the training loop).
    submitted = {(c["game"], c["seed"]): r["submitted"] for r in records for c in r["cells"]}
    waits = sorted(epoch(s["started_at"]) - submitted[(c.cell.game, c.cell.seed)] for c, s in zip(cells, statuses))
    with capsys.disabled():
        print(f"\nsubmission to first training step: first cells {waits[0]:.0f}-{waits[1]:.0f} s, "
              f"median {statistics.median(waits):.0f} s, last {waits[-1]:.0f} s (2 jobs of 5 cells at a time)")


def test_a_signalled_job_is_requeued_and_resumes_at_the_same_update(tmp_path, slurm_env, start_sweep):
    proc = start_sweep(*SMALL, "seed=0", "total_timesteps=8192", "checkpoint_every=1")
    cell = RunLayout(tmp_path).cell("default", "breakout", "nature_cnn", 0)
    wait_until(lambda: cell.status().get("update", 0) >= 2, 180, "two updates")
    job_id = job_records.read(RunLayout(tmp_path).jobs_file("default"))[0]["job_id"]

    # What SLURM sends before a time limit (sbatch --signal=USR2@120)
    slurm(slurm_env, "scancel", "--signal=USR2", job_id)
    def requeued():
        return re.search(r"JobState=PENDING .*Restarts=1", " ".join(slurm(slurm_env, "scontrol", "show", "job", job_id).split()))

    wait_until(requeued, 60, "the requeue")
    interrupted = cell.status()
    assert interrupted["state"] == "interrupted" and interrupted["checkpoint_update"] == interrupted["update"]
    row = next(r for r in sweep_status.collect(RunLayout(tmp_path), "default"))
    assert (row.state, row.job_id) == ("queued", job_id) and row.note.startswith("requeued")
    # SLURM holds a requeued job ~2 minutes before it may start again.
    slurm(slurm_env, "scontrol", "update", f"JobId={job_id}", "StartTime=now")

    rc, out, err = finish(proc)
    assert rc == 0, (out + err)[-4000:]
    status = cell.status()
    assert (status["state"], status["update"], status["global_step"]) == ("done", 8, 8192)
    assert status["slurm_restart_count"] == "1"
    assert len(status["env_reset_seeds"]) == 2  # one start, one resume
    assert metric_updates(cell.metrics) == list(range(1, 9))  # each update once, none lost
    log = cell.train_log.read_text()
    stopped = int(re.search(r"checkpointed at update (\d+); exiting for requeue", log).group(1))
    assert stopped == interrupted["update"] >= 2
    assert f"resuming at update {stopped}/8" in log
    assert "caught SIGUSR2" in log
    job_log = Path(job_records.read(RunLayout(tmp_path).jobs_file("default"))[0]["stderr"])
    assert "Requeued job" in job_log.read_text() or "Requeued job" in log


def test_a_failing_cell_and_a_killed_job_fail_alone(tmp_path, slurm_env, start_sweep):
    layout = RunLayout(tmp_path)
    # A cell that passes preflight and is refused in the trainer: results without a config.yaml.
    broken = layout.cell("default", "breakout", "nature_cnn", 1)
    broken.write_status(state="interrupted")
    broken.checkpoint.write_bytes(b"not a checkpoint")

    # pack=none: a job per cell, so one killed job is one lost cell
    proc = start_sweep(*SMALL, "seed=0-3", "total_timesteps=1024", "pack=none",
                       "hydra.launcher.array_parallelism=2")
    jobs_file = layout.jobs_file("default")
    records = wait_until(lambda: len(job_records.read(jobs_file)) == 4 and job_records.read(jobs_file), 120, "the submission")
    # Killed while it waits for a slot, as an admin or a dead node would (no result, no trace).
    killed = next(r["job_id"] for r in records if r["cell"]["seed"] == 3)
    slurm(slurm_env, "scancel", killed)

    rc, out, err = finish(proc)
    assert rc == 1, (out + err)[-4000:]
    assert err.strip().splitlines()[-1].startswith("error: 2 of 4 cells failed (the others finished)")
    assert "seed=1" in out + err and "has training results but no config.yaml" in out + err
    # SLURM keeps no record of an array task cancelled while pending: submitit alone would wait forever.
    assert f"CellJobDied: job {killed} left the queue without a result and without a SLURM record" in out + err

    # the refused cell's job ends FAILED: a job chain (studies/chain.py) cancels its dependents
    broken_job = next(r["job_id"] for r in records if r["cell"]["seed"] == 1)
    assert wait_until(lambda: sweep_status.query_slurm({broken_job})[broken_job]["state"] not in ("RUNNING", "COMPLETING")
                      and sweep_status.query_slurm({broken_job})[broken_job], 60, "the job's end")["exit"] == "1:0"

    rows = {r.cell.seed: r for r in sweep_status.collect(layout, "default")}
    assert {s: r.state for s, r in rows.items()} == {0: "done", 1: "failed", 2: "done", 3: "failed"}
    assert (rows[3].slurm_state, rows[3].job_id) == ("GONE", killed)
    res = subprocess.run([PYTHON, "-m", "studies.status", "--study", "default", "--run-root", str(tmp_path),
                          "--resubmit-failed"], cwd=REPO, env=slurm_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "default: 4 cells: 2 done, 2 failed" in res.stdout
    # the trainer's error, and the traceback in the cell's train.log and in its job's log
    assert "--- breakout/nature_cnn/seed_1: failed (" in res.stdout and "has training results but no config.yaml" in res.stdout
    assert "ConfigError" in res.stdout
    assert "--- breakout/nature_cnn/seed_3: failed (its job left the queue without running" in res.stdout
    rerun = res.stdout.split("rerun the failed and missing cells with:\n")[1].split()
    assert "seed=1,3" in rerun and "launcher=slurm_local" in rerun and "model=nature_cnn" in rerun
    assert "pack=none" in rerun
