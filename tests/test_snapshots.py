"""snapshots=<n>: the trainer keeps the weights at evenly spaced updates (fp16), and a run
killed and resumed ends with the same set, none duplicated or lost, each from the training
that the final checkpoint continues."""

from __future__ import annotations

import subprocess
import time

import pytest
import torch

from fls import checkpoint
from fls.schedule import Schedule
from fls.trained_cell import load_model, load_snapshot

from test_train import STEPS_PER_UPDATE, cell, run, train_cmd
from conftest import REPO


def test_the_snapshot_updates_are_evenly_spaced_from_the_initial_weights_to_the_last_update():
    schedule = Schedule(256, 128, 2.5e-4, True)
    assert schedule.snapshot_updates(8) == (0, 18, 37, 55, 73, 91, 110, 128)
    assert schedule.snapshot_updates(0) == ()
    assert schedule.snapshot_updates(1) == (128,)
    assert schedule.snapshot_updates(2) == (0, 128)
    assert Schedule(256, 6, 2.5e-4, True).snapshot_updates(7) == tuple(range(7))


@pytest.mark.slow  # two trainer starts and a kill: 20-40 s here; the fixture of tests/test_checks.py keeps snapshots in the default suite
def test_snapshots_are_written_at_their_updates_and_a_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    updates = 6  # snapshots=3: updates 0, 3, 6; a checkpoint every 2 updates
    args = (f"total_timesteps={updates * STEPS_PER_UPDATE}", "checkpoint_every=2", "snapshots=3")
    c = cell(tmp_path)
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not c.snapshot(3).exists():  # kill -9 as soon as update 3's snapshot is written
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    saved = c.status()["checkpoint_update"]
    assert saved in (2, 4)  # update 4's checkpoint comes more than a second after snapshot 3
    before = {u: p.read_bytes() for u, p in c.snapshots().items()}
    assert set(before) == {0, 3}

    res = run(tmp_path, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(c.snapshots()) == [0, 3, 6]
    assert sorted(p.name for p in c.snapshots_dir.iterdir()) == ["update_0.pt", "update_3.pt", "update_6.pt"]
    # the snapshot of the weights as initialised is the one written first
    assert c.snapshot(0).read_bytes() == before[0]
    # snapshot 3 past the checkpoint belonged to training lost with the kill: trained again and
    # written again; one the checkpoint had passed is kept as it was
    assert (c.snapshot(3).read_bytes() == before[3]) == (saved == 4)
    for update in (0, 3, 6):
        state = checkpoint.load_snapshot(c.snapshot(update))
        assert state["update"] == update and state["global_step"] == update * STEPS_PER_UPDATE
        assert all(v.dtype == torch.float16 for v in state["state_dict"].values() if v.is_floating_point())
    # the last snapshot is the final checkpoint's model, in fp16
    last, final = load_snapshot(c, 6, torch.device("cpu")), load_model(c, torch.device("cpu"))
    assert last.global_step == final.global_step
    for (name, a), (_, b) in zip(last.model.state_dict().items(), final.model.state_dict().items()):
        assert torch.equal(a, b.half().float()), name


def test_more_snapshots_than_updates_are_refused_in_one_line(tmp_path):
    res = run(tmp_path, f"total_timesteps={2 * STEPS_PER_UPDATE}", "snapshots=4")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: snapshots=4: expected 0 (none) to 3 (the weights as "
                                               "initialised and after each of the run's 2 updates)"]
    assert not any(tmp_path.rglob("*"))
