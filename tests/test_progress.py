"""The job chain's plan (studies/chain.py) and the stage half of sweep-status
(studies/progress.py), without SLURM: which cells a submission sends and in how few
sweeps, how a later stage's cell reads from its job's state, the ETA. tests/test_chain.py
runs the chain itself on a real SLURM (make test-slurm)."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from fls.rundir import Cell, RunLayout
from studies import chain, progress, stages
from studies.status import Row

STUDY = "s"


def cells(*keys: str) -> list[Cell]:
    out = []
    for key in keys:
        game, model, seed = key.split("/")
        out.append(Cell(STUDY, game, model, int(seed)))
    return out


def expand(sweep: list[str]) -> set[tuple[str, str, int]]:
    values = {o.split("=")[0]: o.split("=")[1].split(",") for o in sweep}
    return {(g, m, int(s)) for g, m, s in itertools.product(values["game"], values["model"], values["seed"])}


@pytest.mark.parametrize("keys, sweeps", [
    (["breakout/a/1", "breakout/a/2", "pong/a/1", "pong/a/2", "breakout/b/1", "breakout/b/2", "pong/b/1", "pong/b/2"], 1),
    (["breakout/a/1", "breakout/a/2", "pong/a/1", "breakout/b/3"], 3),
    (["breakout/a/1"], 1),
])
def test_sweeps_of_covers_exactly_the_cells_in_few_cross_products(keys, sweeps):
    todo = cells(*keys)
    made = chain.sweeps_of(todo)
    covered = [c for sweep in made for c in expand(sweep)]
    assert sorted(covered) == sorted((c.game, c.model, c.seed) for c in todo)  # each once, none more
    assert len(made) == sweeps


def test_a_cell_whose_latest_job_is_alive_is_not_submitted_again():
    todo = cells("breakout/a/1", "breakout/a/2", "pong/a/1")
    latest = {("train", todo[0]): {"job_id": "7_0"}, ("train", todo[1]): {"job_id": "7_1"},
              ("evaluate", todo[0]): {"job_id": "8_0"}}
    [train, evaluate] = chain.plan(["train", "evaluate"], lambda stage: todo, latest, alive={"7_0", "8_0"})
    assert train.live == {todo[0]: "7_0"} and train.todo == todo[1:]  # 7_1 ended: submitted again
    assert evaluate.live == {todo[0]: "8_0"} and evaluate.todo == todo[1:]


def test_records_written_before_stages_were_recorded_still_tell_their_stage():
    assert stages.record_stage({"app": "evaluate", "sweep_overrides": ["eval.game=breakout_infinite"]}) == "breakout_infinite"
    assert stages.record_stage({"app": "evaluate", "sweep_overrides": []}) == "evaluate"
    assert stages.record_stage({"app": "evaluate", "stage": "breakout_infinite"}) == "breakout_infinite"


@pytest.mark.parametrize("done, job, expected", [
    (True, {"state": "FAILED"}, "done"),
    (False, None, "to do"),
    (False, {"state": "RUNNING"}, "running"),
    (False, {"state": "PENDING", "reason": "Dependency", "dependency": "afterok:7_0(unfulfilled)"}, "waiting"),
    (False, {"state": "PENDING", "reason": "DependencyNeverSatisfied"}, "not run"),
    (False, {"state": "PENDING", "reason": "Priority"}, "queued"),
    (False, {"state": "REQUEUE_FED", "reason": ""}, "queued"),  # every waiting state of studies.slurm
    (False, {"state": "CANCELLED", "text": "CANCELLED"}, "not run"),  # by SLURM: its dependency failed
    (False, {"state": "CANCELLED", "text": "CANCELLED by 0"}, "failed"),  # by a user
    (False, {"state": "COMPLETED", "text": "COMPLETED"}, "failed"),  # ended without the result
    (False, {"state": "FAILED", "text": "FAILED"}, "failed"),
    (False, {"state": "GONE"}, "failed"),
])
def test_a_later_stage_reads_its_cell_from_the_result_and_the_job(done, job, expected):
    assert progress.classify_stage(done, job, {"job_id": "8_0"})[0] == expected


def test_the_failed_jobs_line_is_its_error_not_sruns(tmp_path):
    log = tmp_path / "log.err"
    log.write_text("starting\nTraceback (most recent call last):\n  File x\nValueError: the real reason\n"
                   "submitit INFO (t) - Exiting after successful completion\nsrun: error: vm: task 0: Exited with exit code 1\n")
    assert progress.last_line(log) == "ValueError: the real reason"
    log.write_text("one\ntwo\nsrun: error: vm: task 0: Exited with exit code 1\nslurmstepd: error: *** CANCELLED\n")
    assert progress.last_line(log) == "two"  # no error of its own: its last line, not SLURM's


def test_eta_from_the_speed_the_running_cells_measure(tmp_path):
    layout = RunLayout(tmp_path)
    running = layout.cell(STUDY, "breakout", "a", 1)
    running.write_status(state="running", global_step=1000, total_timesteps=3000)
    running.metrics.write_text("update,global_step,charts/SPS\n5,1000,100\n")
    os.utime(running.metrics, (time.time(), time.time()))
    queued = layout.cell(STUDY, "breakout", "a", 2)
    failed = layout.cell(STUDY, "breakout", "a", 3)
    failed.write_status(state="failed", global_step=0, total_timesteps=3000)
    rows = [Row(running.cell, "running"), Row(queued.cell, "queued"), Row(failed.cell, "failed")]
    line = progress.eta(layout, rows, now=time.time())
    # 20 s left for the running cell, 30 s for the queued one after it, one at a time: 50 s
    assert line.startswith("ETA of the training: ~50 s (rough: 1 cell(s) running at 100 agent steps/s each, 1 queued")
    assert "1 cell(s) failed or not submitted are not counted" in line
    assert progress.eta(layout, [Row(failed.cell, "failed")]).startswith("ETA: no training in the queue")


def test_cancel_without_slurm_is_one_refusal_line_and_cancels_nothing(tmp_path, monkeypatch, capsys):
    """--cancel must know what is queued: without squeue it is refused (fls.errors.ServiceError,
    printed by fls.cli), not taken for an empty queue."""
    from studies import status as sweep_status

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert sweep_status.main(["--study", STUDY, "--run-root", str(tmp_path), "--cancel"]) == 1
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert line.startswith("error: squeue -h -r --me") and "No such file" in line and out == ""
