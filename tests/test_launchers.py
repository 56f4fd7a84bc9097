"""Launcher profiles, the submitit launchers' handling of dead jobs, and sweep-status.

No SLURM needed: profiles are composed and rendered to sbatch scripts, the launchers run
on submitit's local executor, sweep-status reads synthetic run directories written through
fls.rundir. tests/test_slurm.py runs the same on a real SLURM (make test-slurm).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fls import job_records
from fls.rundir import RunLayout, SweepDir
from studies import status as sweep_status

from conftest import PYTHON, REPO, copy_runs

PROFILES = ("local", "submitit_local", "slurm", "slurm_local")


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="train"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# Profiles


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes_with_the_users_sweep(profile):
    cfg = composed(f"launcher={profile}", "game=seaquest", "model=sparse_fls", "seed=3")
    target = cfg.hydra.launcher._target_
    expected = {
        "local": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "submitit_local": "hydra_plugins.fls_launchers.fls_launchers.FlsLocalLauncher",
        "slurm": "hydra_plugins.fls_launchers.fls_launchers.FlsSlurmLauncher",
        "slurm_local": "hydra_plugins.fls_launchers.fls_launchers.FlsSlurmLauncher",
    }[profile]
    assert target == expected
    assert cfg.hydra.sweeper._target_.endswith("FlsSweeper")  # the launcher leaves the sweeper alone
    assert (cfg.game.name, cfg.model.name, cfg.seed) == ("seaquest", "sparse_fls", 3)


def test_evaluation_goes_through_the_same_launchers():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="evaluate"):
        cfg = compose("evaluate", overrides=["launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.fls_launchers.fls_launchers.FlsSlurmLauncher"


def test_slurm_profile_is_a_gpu_template_overridable_from_the_command_line():
    launcher = composed("launcher=slurm").hydra.launcher
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.signal_delay_s) == (1, 10, 120)
    assert launcher.max_num_timeout > 0 and launcher.wait is True
    assert launcher.submitit_folder == "runs/default/.submitit/%j"  # beside the cells of the study

    launcher = composed(
        "launcher=slurm", "hydra.launcher.partition=gpu-long", "hydra.launcher.timeout_min=60",
        "+hydra.launcher.additional_parameters.constraint=a100", "hydra.launcher.wait=false",
    ).hydra.launcher
    assert (launcher.partition, launcher.timeout_min, launcher.wait) == ("gpu-long", 60, False)
    assert launcher.additional_parameters == {"constraint": "a100"}


def test_slurm_local_is_slurm_with_this_machines_resources():
    cfg = composed("launcher=slurm_local")
    slurm = composed("launcher=slurm").hydra.launcher
    local = cfg.hydra.launcher
    assert (local.partition, local.gpus_per_node, local.cpus_per_task) == ("local", None, 1)
    assert local.signal_delay_s == slurm.signal_delay_s and local.name == slurm.name
    # one CPU per cell, and threads to match it
    assert (cfg.torch_threads, cfg.env.num_threads) == (1, 1)


def path_without_slurm() -> str:
    """PATH less every folder that holds SLURM's client tools (this machine may have them)."""
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not any((Path(d) / tool).exists() for tool in ("sbatch", "srun", "squeue")))


def fake_slurm_clients(folder: Path) -> str:
    """A PATH on which submitit finds `srun` (it looks before it renders anything); these
    stand-ins fail if called, and rendering a script never calls them."""
    folder.mkdir()
    for tool in ("sbatch", "srun", "squeue", "sacct", "scancel"):
        (folder / tool).write_text("#!/bin/sh\necho 'not a real SLURM' >&2; exit 1\n")
        (folder / tool).chmod(0o755)
    return f"{folder}{os.pathsep}{path_without_slurm()}"


def test_slurm_profile_renders_the_sbatch_script_of_a_job_array(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_slurm_clients(tmp_path / "bin"))
    cfg = composed("launcher=slurm", f"run_root={tmp_path}", "study=paper")
    launcher = instantiate(cfg.hydra.launcher)
    executor = launcher._executor()._executor
    assert executor.max_num_timeout == cfg.hydra.launcher.max_num_timeout
    executor.parameters["map_count"] = 10  # what submitit sets when it submits 10 cells
    script = executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for flag in ("--array=0-9%10", "--gpus-per-node=1", "--cpus-per-task=10", "--mem=32GB",
                 "--partition=gpu", "--time=720", "--signal=USR2@120", "--job-name=train-paper",
                 f"--output={tmp_path}/paper/.submitit/%A_%a/%A_%a_0_log.out"):
        assert f"#SBATCH {flag}\n" in script, flag


def test_launcher_slurm_without_slurm_is_refused_in_one_line_before_anything_is_written(tmp_path):
    res = subprocess.run(
        [PYTHON, "src/train.py", "-m", "game=breakout", "model=nature_cnn", "seed=1", "launcher=slurm",
         f"run_root={tmp_path}", "study=s"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path_without_slurm()},
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "launcher=slurm" in lines[0] and "not found on PATH" in lines[0], res.stderr
    assert not any(tmp_path.iterdir())


def test_the_trainer_shows_the_slurm_launcher_config(tmp_path):
    res = subprocess.run(
        [PYTHON, "src/train.py", "game=seaquest", "launcher=slurm", "hydra.launcher.partition=a100",
         "--cfg", "hydra", "--package", "hydra.launcher"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    shown = OmegaConf.create(res.stdout)
    assert shown._target_ == "hydra_plugins.fls_launchers.fls_launchers.FlsSlurmLauncher"
    assert (shown.partition, shown.gpus_per_node) == ("a100", 1)


# The launchers, on submitit's local executor

APP = textwrap.dedent(
    """
    import os, signal
    from dataclasses import dataclass
    import hydra
    from hydra.core.config_store import ConfigStore

    @dataclass
    class Cfg:
        mode: str = "ok"

    ConfigStore.instance().store(name="cfg", node=Cfg)

    @hydra.main(config_path=None, config_name="cfg", version_base="1.3")
    def main(cfg):
        if cfg.mode == "raise":
            raise ValueError("this cell raises")
        if cfg.mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would: no result, no trace
        return cfg.mode

    if __name__ == "__main__":
        main()
    """
)


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(APP)
    cmd = [PYTHON, str(app), "-m", "hydra/launcher=fls_submitit_local", "hydra/sweeper=fls",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)


def test_a_dead_job_fails_its_cell_alone_and_the_sweep_reports_every_failure(tmp_path):
    res = run_app(tmp_path, "mode=ok,raise,die,fine")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: 2 of 4 cells failed (the others finished)")
    assert "mode=raise: ValueError: this cell raises" in out
    assert "mode=die: CellJobDied: job " in out and "ended without a result" in out
    records = job_records.read(SweepDir(tmp_path / "sweep").jobs_file)
    assert [r["overrides"] for r in records] == [[f"mode={m}"] for m in ("ok", "raise", "die", "fine")]
    assert all(r["cell"] is None and r["app"] == "app" and r["executor"] == "local" for r in records)
    # the job of the cell that raised ends with exit status 1 (SLURM would count it COMPLETED
    # and start what depends on it); the others do not
    ends = {r["overrides"][0]: "the job ends with exit status 1" in Path(r["stdout"]).read_text() + Path(r["stderr"]).read_text()
            for r in records if r["overrides"] != ["mode=die"]}
    assert ends == {"mode=ok": False, "mode=raise": True, "mode=fine": False}


def test_wait_false_submits_and_returns_at_once(tmp_path):
    start = time.monotonic()
    res = run_app(tmp_path, "mode=ok,fine", "hydra.launcher.wait=false")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "not waiting (hydra.launcher.wait=false)" in res.stdout + res.stderr
    records = job_records.read(SweepDir(tmp_path / "sweep").jobs_file)
    assert len(records) == 2
    # The jobs finish on their own, after the sweep has returned.
    results = [Path(r["stdout"]).with_name(Path(r["stdout"]).name.replace("_0_log.out", "_0_result.pkl")) for r in records]
    while not all(p.exists() for p in results):
        assert time.monotonic() - start < 120, "the jobs did not finish"
        time.sleep(0.5)


# sweep-status on synthetic run directories


def write_multirun(study_dir: Path, overrides: list[str], params: dict | None = None, app: str = "train",
                   hydra_overrides: tuple[str, ...] = ("hydra.mode=MULTIRUN",)):
    """The part of a sweeper's multirun.yaml that sweep-status reads."""
    study_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(
        {"hydra": {
            "runtime": {"config_sources": [{"path": str(REPO / "conf"), "schema": "file", "provider": "main"}]},
            "sweeper": {"params": params, "range_keys": ["seed"]},
            "overrides": {"task": overrides, "hydra": list(hydra_overrides)},
            "job": {"name": app, "config_name": app},
        }},
        SweepDir(study_dir).config,
    )


@pytest.fixture
def study(tmp_path):
    """A 2-game x 4-seed study in every state sweep-status knows, without SLURM."""
    layout = RunLayout(tmp_path)
    here = socket.gethostname()
    write_multirun(layout.study_dir("s"), ["game=breakout,seaquest", "model=sparse_fls", "seed=0-3",
                                           "study=s", f"run_root={tmp_path}", "launcher=slurm",
                                           "total_timesteps=2048"])
    cell = lambda game, seed: layout.cell("s", game, "sparse_fls", seed)  # noqa: E731
    cell("breakout", 0).write_status(state="done", update=2, num_updates=2, host=here)
    cell("breakout", 1).write_status(state="running", update=1, num_updates=2, host=here, pid=os.getpid())
    dead = subprocess.Popen(["true"])
    dead.wait()
    cell("breakout", 2).write_status(state="running", update=1, num_updates=2, host=here, pid=dead.pid)
    cell("breakout", 2).checkpoint.write_bytes(b"ckpt")
    failed = cell("breakout", 3)
    failed.write_status(state="failed", update=0, num_updates=2, host=here, error="CheckpointError: damaged")
    failed.train_log.write_text("line one\nCheckpointError: damaged checkpoint\n")
    cell("seaquest", 0).write_status(state="interrupted", update=1, num_updates=2, host=here, signal=12)
    cell("seaquest", 0).checkpoint.write_bytes(b"ckpt")
    cell("seaquest", 1).path.mkdir(parents=True)
    cell("seaquest", 1).checkpoint.write_bytes(b"ckpt")
    for seed in (0, 1):  # a started cell has recorded its config (here only the keys it names)
        cell("seaquest", seed).config.write_text(f"seed: {seed}\n")
    # seaquest seeds 2 and 3: in the grid, never started; seed 3 was submitted as a job
    job_records.append(layout.jobs_file("s"), [{
        "job_id": "77_7", "app": "train", "executor": "slurm", "submitted": time.time(),
        "overrides": ["game=seaquest", "model=sparse_fls", "seed=3"],
        "sweep_overrides": ["game=breakout,seaquest", "model=sparse_fls", "seed=0-3", "launcher=slurm",
                           "total_timesteps=2048", f"run_root={tmp_path}", "hydra.launcher.wait=false"],
        "cell": {"study": "s", "game": "seaquest", "model": "sparse_fls", "seed": 3},
        "stdout": str(tmp_path / "77_7_0_log.out"), "stderr": str(tmp_path / "77_7_0_log.err"),
    }])
    return layout


def test_status_finds_every_cell_of_the_grid_in_its_state(study):
    rows = {(r.cell.game, r.cell.seed): r for r in sweep_status.collect(study, "s", use_slurm=False)}
    assert {k: r.state for k, r in rows.items()} == {
        ("breakout", 0): "done",
        ("breakout", 1): "running",
        ("breakout", 2): "failed",
        ("breakout", 3): "failed",
        ("seaquest", 0): "resumable",
        ("seaquest", 1): "resumable",
        ("seaquest", 2): "not started",
        ("seaquest", 3): "not started",
    }
    assert "is gone; a rerun resumes it" in rows[("breakout", 2)].note
    assert rows[("breakout", 3)].note == "CheckpointError: damaged"
    assert rows[("seaquest", 3)].job_id == "77_7"
    assert "SLURM does not answer" in rows[("seaquest", 3)].note


def test_status_table_and_failure_details(study, capsys):
    assert sweep_status.main(["--study", "s", "--run-root", str(study.root), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["cell", "state", "update", "job", "slurm", "host", "restarts", "note"]
    assert any(line.startswith("breakout/sparse_fls/seed_0") and " done " in line for line in lines)
    assert "s: 8 cells: 1 done, 1 running, 2 failed, 2 resumable, 2 not started" in out
    assert "--- breakout/sparse_fls/seed_3: failed (CheckpointError: damaged)" in out
    assert "  CheckpointError: damaged checkpoint" in out


def test_resubmit_failed_prints_a_sweep_of_just_the_cells_to_rerun(study, capsys):
    assert sweep_status.main(["--study", "s", "--run-root", str(study.root), "--no-slurm", "--resubmit-failed"]) == 0
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.split("rerun the failed and missing cells with:\n")[1].splitlines()]
    assert [c[2:] for c in commands] == [
        ["-m", "study=s", f"run_root={study.root}", "game=breakout", "model=sparse_fls", "seed=2,3",
         "launcher=slurm", "total_timesteps=2048", "hydra.launcher.wait=false"],
        ["-m", "study=s", f"run_root={study.root}", "game=seaquest", "model=sparse_fls", "seed=0,1,2,3",
         "launcher=slurm", "total_timesteps=2048", "hydra.launcher.wait=false"],
    ]
    assert commands[0][1].endswith("src/train.py")


def test_rerun_commands_group_games_that_miss_the_same_seeds(study):
    rows = [r for r in sweep_status.collect(study, "s", use_slurm=False)]
    for r in rows:
        r.state = "failed" if r.cell.seed in (1, 2) else "done"
    commands = sweep_status.rerun_commands(study, "s", rows)
    assert len(commands) == 1 and "game=breakout,seaquest" in commands[0] and "seed=1,2" in commands[0]


def test_status_uses_the_experiments_grid(tmp_path):
    layout = RunLayout(tmp_path)
    write_multirun(layout.study_dir("demo"), ["experiment=demo", f"run_root={tmp_path}"],
                   params={"model": "nature_cnn,sparse_fls", "seed": "1,9"})
    rows = sweep_status.collect(layout, "demo", use_slurm=False)
    assert {(r.cell.game, r.cell.model, r.cell.seed, r.state) for r in rows} == {
        ("breakout", m, s, "not started") for m in ("nature_cnn", "sparse_fls") for s in (1, 9)
    }


def test_a_local_sweeps_rerun_keeps_its_launcher_settings(tmp_path):
    layout = RunLayout(tmp_path)
    write_multirun(layout.study_dir("s"), ["study=s", "model=nature_cnn", "seed=1-2", "launcher=slurm", "logger=none"],
                   hydra_overrides=("hydra.launcher.partition=a100", "hydra.mode=MULTIRUN"))
    layout.cell("s", "breakout", "nature_cnn", 1).write_status(state="done")
    [command] = sweep_status.rerun_commands(layout, "s", sweep_status.collect(layout, "s", use_slurm=False))
    assert command[2:] == ["-m", "study=s", f"run_root={tmp_path}", "game=breakout", "model=nature_cnn", "seed=2",
                           "launcher=slurm", "logger=none", "hydra.launcher.partition=a100"]


def test_status_survives_a_sweep_it_cannot_expand(tmp_path, capsys):
    layout = RunLayout(tmp_path)
    write_multirun(layout.study_dir("s"), ["model=no_such_model", "seed=1"])
    layout.cell("s", "breakout", "nature_cnn", 1).write_status(state="done")
    assert [r.state for r in sweep_status.collect(layout, "s", use_slurm=False)] == ["done"]
    assert "warning: cannot expand the sweep of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "status, checkpoint, job, alive, expected",
    [
        ({"state": "done"}, True, {"state": "RUNNING"}, None, "done"),
        ({}, False, {"state": "PENDING", "reason": "Resources"}, None, "queued"),
        ({"state": "interrupted"}, True, {"state": "PENDING", "reason": "BeginTime"}, None, "queued"),
        ({"state": "running"}, True, {"state": "RUNNING"}, None, "running"),
        ({"state": "running"}, True, {"state": "OUT_OF_MEMORY"}, None, "failed"),
        ({"state": "running"}, False, None, None, "running"),
        ({"state": "running"}, False, None, False, "failed"),
        ({}, False, {"state": "CANCELLED"}, None, "failed"),
        ({}, False, {"state": "COMPLETED"}, None, "not started"),
        # scancel, a time limit past its requeues, a lost node: nothing resumes it by itself
        ({"state": "interrupted"}, True, {"state": "CANCELLED"}, None, "failed"),
        ({"state": "interrupted"}, True, {"state": "TIMEOUT"}, None, "failed"),
        ({"state": "interrupted"}, True, {"state": "COMPLETED"}, None, "resumable"),
        ({"state": "failed", "error": "x"}, True, {"state": "COMPLETED"}, None, "failed"),
        ({}, True, None, None, "resumable"),
        ({}, False, {"state": "GONE"}, None, "failed"),
        ({"state": "running"}, True, {"state": "GONE"}, None, "failed"),
        ({"state": "interrupted"}, True, {"state": "GONE"}, None, "resumable"),
    ],
)
def test_classify(status, checkpoint, job, alive, expected):
    assert sweep_status.classify(status, checkpoint, job, alive)[0] == expected


def test_requeued_cells_say_so(study):
    state, note = sweep_status.classify({"state": "interrupted"}, True, {"state": "PENDING", "reason": "BeginTime"}, None)
    assert (state, note) == ("queued", "requeued (BeginTime)")


def test_status_without_slurm_commands_degrades_to_the_directories(study, monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert sweep_status.query_slurm({"77_7"}) is None
    rows = sweep_status.collect(study, "s")
    assert len(rows) == 8 and all(r.slurm_state is None for r in rows)


def test_status_reads_squeue_and_sacct(study, monkeypatch, tmp_path):
    """Fake squeue/sacct with the output formats of Slurm 22.05 (pending array tasks come
    from squeue one by one; sacct shows them as a range, which is skipped)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/sh\nprintf '77_1|COMPLETED|0:0\\n77_[5-7%%2]|PENDING|0:0\\n77_2|CANCELLED by 0|0:15\\n'\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nprintf '77_7|PENDING|JobArrayTaskLimit\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert sweep_status.query_slurm({"77_1", "77_2", "77_7"}) == {
        "77_1": {"state": "COMPLETED", "reason": "", "exit": "0:0", "text": "COMPLETED", "dependency": ""},
        "77_2": {"state": "CANCELLED", "reason": "", "exit": "0:15", "text": "CANCELLED by 0", "dependency": ""},
        "77_7": {"state": "PENDING", "reason": "JobArrayTaskLimit", "exit": "", "text": "PENDING", "dependency": ""},
    }
    rows = {(r.cell.game, r.cell.seed): r for r in sweep_status.collect(study, "s")}
    assert (rows[("seaquest", 3)].state, rows[("seaquest", 3)].note) == ("queued", "waiting (JobArrayTaskLimit)")


def test_jobs_of_the_local_executor_are_not_looked_up_in_slurm(tmp_path, monkeypatch):
    layout = RunLayout(tmp_path)
    job_records.append(layout.jobs_file("s"), [{
        "job_id": "4242", "app": "train", "executor": "local", "submitted": time.time(), "overrides": [],
        "sweep_overrides": [], "cell": {"study": "s", "game": "breakout", "model": "nature_cnn", "seed": 1},
    }])
    monkeypatch.setattr(sweep_status, "query_slurm", lambda ids: {} if not ids else pytest.fail(f"asked SLURM for {ids}"))
    [row] = sweep_status.collect(layout, "s")
    assert (row.state, row.job_id, row.slurm_state) == ("not started", "4242", None)


def test_status_command_line(study):
    res = subprocess.run([PYTHON, "-m", "studies.status", "--study", "s", "--run-root", str(study.root), "--no-slurm"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "s: 8 cells:" in res.stdout
    res = subprocess.run([PYTHON, "-m", "studies.status", "--study", "nope", "--run-root", str(study.root)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == f"error: no cells of study 'nope' under {study.root}/ (studies there: s)"


def test_an_evaluation_sweep_over_other_cells_is_not_taken_for_the_studys_grid(mspacman_smoke_runs, tmp_path):
    """Issue 36: an evaluation sweep used to overwrite <study>/multirun.yaml, and sweep-status
    read its grid as the study's: cells never trained were listed and proposed for rerun."""
    root = copy_runs(mspacman_smoke_runs, tmp_path / "runs")
    layout = RunLayout(root)
    trained = {(r.cell.model, r.cell.seed) for r in sweep_status.collect(layout, "smoke", use_slurm=False)}
    assert trained == {("nature_cnn", 1), ("sparse_fls", 1)}
    grid = layout.sweep("smoke").config.read_bytes()
    res = subprocess.run([PYTHON, "src/evaluate.py", "-m", "experiment=smoke", "game=mspacman",
                          "model=nature_cnn,sparse_fls", "seed=1,2", "eval.games=1", "eval.num_envs=1",
                          "eval.max_frames=200", f"run_root={root}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert layout.cell("smoke", "mspacman", "nature_cnn", 1).eval_summary().is_file()
    assert layout.sweep("smoke").config.read_bytes() == grid
    assert layout.sweep("smoke").config_of("evaluate").is_file()
    rows = sweep_status.collect(layout, "smoke", use_slurm=False)
    assert {(r.cell.model, r.cell.seed, r.state) for r in rows} == {("nature_cnn", 1, "done"), ("sparse_fls", 1, "done")}
    assert sweep_status.rerun_commands(layout, "smoke", rows) == []
