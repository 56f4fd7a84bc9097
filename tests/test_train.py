"""The trainer for real: tiny runs of src/train.py, interrupted, killed, resumed, refused."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fls.rundir import LOCK_PREFIX, RunLayout
from wandb_offline import find_runs, read_run

from conftest import PYTHON, REPO

# experiment=smoke: Nature CNN, 4 envs x 64 steps = 256 agent steps per update.
STEPS_PER_UPDATE = 256


def train_cmd(run_root: Path, *overrides: str) -> list[str]:
    return [PYTHON, "src/train.py", "experiment=smoke", f"run_root={run_root}", *overrides]


def run(run_root: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(run_root, *overrides), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def cell(run_root: Path, seed: int = 1, model: str = "nature_cnn"):
    return RunLayout(run_root).cell("smoke", "breakout", model, seed)


def metric_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(metric_rows(path)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError(f"no {n} metric rows in {timeout}s")


def test_smoke_run_trains_and_records_everything(tmp_path):
    res = run(tmp_path, "total_timesteps=768")
    assert res.returncode == 0, res.stderr
    c = cell(tmp_path)
    status = c.status()
    assert status["state"] == "done" and status["global_step"] == 768 and status["update"] == 3
    rows = metric_rows(c.metrics)
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    assert [int(r["global/game_frames"]) for r in rows] == [1024, 2048, 3072]  # 4 frames per agent step
    assert float(rows[-1]["charts/learning_rate"]) == pytest.approx(2.5e-4 / 3)  # annealed
    for key in ("losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac", "charts/SPS"):
        assert rows[-1][key] != ""
    assert c.checkpoint.exists() and c.config.exists() and c.train_log.exists()

    # Re-running a finished cell skips it and changes nothing.
    before = c.checkpoint.stat().st_mtime_ns
    again = run(tmp_path, "total_timesteps=768")
    assert again.returncode == 0 and "is done" in again.stderr + again.stdout
    assert c.checkpoint.stat().st_mtime_ns == before and len(metric_rows(c.metrics)) == 3


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_checkpoints_and_resume_continues_without_duplicates(tmp_path, sig):
    updates = 12
    args = (f"total_timesteps={updates * STEPS_PER_UPDATE}", "checkpoint_every=100")
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = cell(tmp_path)
    wait_for_rows(c.metrics, 2, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + sig, proc.stderr.read()
    status = c.status()
    assert status["state"] == "interrupted" and status["signal"] == sig
    stopped_at = status["checkpoint_update"]
    assert 2 <= stopped_at < updates  # the update in progress finished, then the checkpoint
    assert len(metric_rows(c.metrics)) == stopped_at

    res = run(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert f"resuming at update {stopped_at}/{updates}" in res.stdout + res.stderr
    rows = metric_rows(c.metrics)
    assert [int(r["update"]) for r in rows] == list(range(1, updates + 1))
    assert c.status()["state"] == "done"


def test_kill_9_loses_at_most_one_checkpoint_interval(tmp_path):
    updates, every = 14, 3
    args = (f"total_timesteps={updates * STEPS_PER_UPDATE}", f"checkpoint_every={every}")
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = cell(tmp_path)
    wait_for_rows(c.metrics, 5, proc)
    proc.kill()
    proc.wait()
    logged = len(metric_rows(c.metrics))
    saved = c.status()["checkpoint_update"]
    assert logged - every <= saved <= logged and saved % every == 0

    res = run(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert f"resuming at update {saved}/" in res.stdout + res.stderr
    rows = metric_rows(c.metrics)
    assert [int(r["update"]) for r in rows] == list(range(1, updates + 1))


def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(tmp_path):
    args = (f"total_timesteps={8 * STEPS_PER_UPDATE}", "checkpoint_every=1")
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = cell(tmp_path)
    wait_for_rows(c.metrics, 2, proc)
    proc.send_signal(signal.SIGUSR2)
    proc.wait(timeout=60)
    damaged = c.checkpoint.read_bytes()[:1000]
    c.checkpoint.write_bytes(damaged)

    res = run(tmp_path, *args)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "checkpoint.pt is unreadable" in lines[-1]
    assert c.checkpoint.read_bytes() == damaged
    assert c.status()["state"] == "failed"


def test_changed_config_is_refused_and_overwrite_discards(tmp_path):
    assert run(tmp_path, "total_timesteps=512").returncode == 0
    c = cell(tmp_path)
    # results; the lock file only names its last holder
    snapshot = {p.name: p.read_bytes() for p in c.path.iterdir() if p.is_file() and p.name != "train.log"
                and not p.name.startswith(LOCK_PREFIX)}

    res = run(tmp_path, "total_timesteps=1024", "ppo.ent_coef=0.02")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "total_timesteps: 512 -> 1024" in res.stderr and "ppo.ent_coef: 0.01 -> 0.02" in res.stderr
    assert {p: (c.path / p).read_bytes() for p in snapshot} == snapshot

    # Settings that do not change what is trained may differ on a re-run.
    assert run(tmp_path, "total_timesteps=512", "device=cpu", "checkpoint_every=7").returncode == 0

    res = run(tmp_path, "total_timesteps=1024", "overwrite=true")
    assert res.returncode == 0, res.stderr
    assert c.status()["global_step"] == 1024 and len(metric_rows(c.metrics)) == 4


@pytest.mark.parametrize(
    "override, message",
    [("total_timesteps=0", "total_timesteps=0"), ("seed=0-4", "is a range"), ("num_envs=-2", "num_envs=-2")],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, override, message):
    res = run(tmp_path, override)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip().splitlines()[-1]]
    assert message in res.stderr
    assert not any(tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_device_cuda_without_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run(tmp_path, "device=cuda")
    assert res.returncode == 2 and "device=cuda" in res.stderr
    assert not any(tmp_path.rglob("*"))


def test_wandb_offline_run_holds_config_and_history_and_resumes_same_id(tmp_path):
    args = (f"total_timesteps={10 * STEPS_PER_UPDATE}", "logger=wandb", "checkpoint_every=1")
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = cell(tmp_path)
    wait_for_rows(c.metrics, 2, proc)
    proc.send_signal(signal.SIGUSR2)
    proc.wait(timeout=60)
    assert run(tmp_path, *args).returncode == 0

    logs = find_runs(c.wandb_dir)
    assert len(logs) == 2  # the first process and the resumed one
    first, second = read_run(logs[0]), read_run(logs[1])
    assert first.id == second.id == c.status()["wandb_run_id"]
    assert first.name == "breakout/nature_cnn/seed_1" and first.group == "breakout/nature_cnn"
    assert {"smoke", "breakout", "nature_cnn", "seed_1"} <= set(first.tags)
    assert first.config["game.name"] == "breakout" and first.config["ppo.clip_coef"] == 0.1
    updates = [row["update"] for row in first.history + second.history if "update" in row]
    csv_rows = metric_rows(c.metrics)
    assert sorted(set(updates)) == list(range(1, 11)) == [int(r["update"]) for r in csv_rows]
    last = second.history[-1]
    assert last["global/game_frames"] == 4 * last["global_step"] == 4 * 10 * STEPS_PER_UPDATE


def test_env_groups_change_the_schedule_not_the_games(tmp_path):
    """speed.env_groups=2 steps two halves of the envs alternately: same games, same data."""
    args = ("total_timesteps=768", "seed=3")
    one = run(tmp_path / "one", *args)
    two = run(tmp_path / "two", *args, "speed.env_groups=2", "speed.channels_last=true")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a = metric_rows(RunLayout(tmp_path / "one").cell("smoke", "breakout", "nature_cnn", 3).metrics)
    b = metric_rows(RunLayout(tmp_path / "two").cell("smoke", "breakout", "nature_cnn", 3).metrics)
    for ra, rb in zip(a, b, strict=True):
        # The same actions were sampled, so the same games were played ...
        assert (ra["charts/games"], ra["charts/eprewmean"], ra["charts/eplenmean"]) == (
            rb["charts/games"], rb["charts/eprewmean"], rb["charts/eplenmean"])
        # ... and the losses agree up to float rounding (batched vs split inference).
        for key in ("losses/value_loss", "losses/entropy", "losses/approx_kl"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-2, abs=1e-6)


def test_a_second_writer_of_a_cell_is_refused_naming_the_holder(tmp_path):
    updates_planned = 6
    args = (f"total_timesteps={updates_planned * STEPS_PER_UPDATE}", "checkpoint_every=100")
    first = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = cell(tmp_path)
    try:
        wait_for_rows(c.metrics, 2, first)
        # paused, the holder is alive and holds the lock however long the second takes to start
        os.kill(first.pid, signal.SIGSTOP)
        rows_before = len(metric_rows(c.metrics))
        second = run(tmp_path, *args)
        assert second.returncode == 1
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "train is already running" in lines[0] and f"pid {first.pid} on" in lines[0], second.stderr
        # the second process wrote nothing: the paused holder's rows, each update once, and its status
        assert c.status()["pid"] == first.pid
        assert [int(r["update"]) for r in metric_rows(c.metrics)] == list(range(1, rows_before + 1))
    finally:
        first.kill()
        first.wait()
    # a lock left by a killed process does not block the cell: the next run resumes it
    res = run(tmp_path, *args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    updates = [int(r["update"]) for r in metric_rows(c.metrics)]
    assert updates == list(range(1, updates_planned + 1))  # every update once
