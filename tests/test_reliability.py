"""Bad input and damaged state: one line, a non-zero exit, and nothing written or lost.

Every value of the command line is checked before Hydra makes a directory (fls.cli); a cell
whose files are damaged is reported in one line naming the file, and sweep-status reports it
without failing for the rest of the study.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fls.cli import check_overrides
from fls.training_cell import check_train_config
from fls.errors import ConfigError
from fls.rundir import LOCK_PREFIX, RunLayout
from studies import status as sweep_status

from conftest import PYTHON, REPO

STEPS_PER_UPDATE = 256  # experiment=smoke: 4 envs x 64 steps


def train(run_root: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's -m goes before the overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    return subprocess.run([PYTHON, "src/train.py", *flags, "experiment=smoke", f"run_root={run_root}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def smoke_cell(run_root: Path, seed: int = 1):
    return RunLayout(run_root).cell("smoke", "breakout", "nature_cnn", seed)


def results(cell) -> dict[str, bytes]:
    """The cell's files, less the log and the lock (which only names its last holder)."""
    return {str(p.relative_to(cell.path)): p.read_bytes() for p in cell.path.rglob("*")
            if p.is_file() and p.name != "train.log" and not p.name.startswith(LOCK_PREFIX)}


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run root with one finished smoke cell (2 updates), copied by each test that uses it."""
    root = tmp_path_factory.mktemp("finished")
    res = train(root, f"total_timesteps={2 * STEPS_PER_UPDATE}")
    assert res.returncode == 0, res.stderr
    return root


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run root with one resumable smoke cell: stopped by SIGUSR2 after its first updates."""
    root = tmp_path_factory.mktemp("interrupted")
    proc = subprocess.Popen([PYTHON, "src/train.py", "experiment=smoke", f"run_root={root}",
                             f"total_timesteps={12 * STEPS_PER_UPDATE}", "checkpoint_every=1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell = smoke_cell(root)
    import time

    deadline = time.monotonic() + 180
    while not (cell.status().get("checkpoint_update") or 0) >= 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR2)
    proc.communicate(timeout=120)
    assert cell.status()["state"] == "interrupted"
    return root


def copy_of(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "runs"
    shutil.copytree(root, dest)
    return dest


# Every bad value, in process: fls.cli composes the command line as Hydra will and checks it.

BAD = [
    ("seed=-1", "seed=-1: expected an integer from 0"),
    ("seed=1.0", "seed=1.0: expected an integer"),
    ("seed=5000000000", "seed=5000000000: expected an integer from 0"),
    ("ppo.learning_rate=-1", "ppo.learning_rate=-1: expected a positive number"),
    ("ppo.update_epochs=0", "ppo.update_epochs=0: expected a positive integer"),
    ("ppo.gamma=abc", "ppo.gamma=abc: expected a number"),
    ("ppo.gamma=1.5", "ppo.gamma=1.5: expected a number from 0 to 1"),
    ("ppo.clip_coef=0", "ppo.clip_coef=0: expected a positive number"),
    ("ppo.ent_coef=-0.1", "ppo.ent_coef=-0.1: expected a number >= 0"),
    ("ppo.norm_adv=maybe", "ppo.norm_adv=maybe: expected true or false"),
    ("env.frame_skip=abc", "env.frame_skip=abc: expected a positive integer"),
    ("ppo.num_steps=0", "ppo.num_steps=0: expected a positive integer"),
    ("total_timesteps=1e3", "total_timesteps=1000.0: less than one rollout"),
    ("game=pong", "game=pong: no such game; expected one of beamrider, breakout"),
    ("model=foo", "model=foo: no such model; expected one of daqn"),
    ("logger=foo", "logger=foo: no such logger; expected one of none, wandb, wandb_online"),
    ("experiment=nope", "experiment=nope: no such experiment"),
    ("foo=1", "foo=1: no such key in train's config"),
    ("ppo.lr=1", "ppo.lr=1: no such key"),
    ("study=a/b", "study=a/b: expected a name"),
    ("study=", "study=: expected a name"),
    ("study=..", "study=..: expected a name"),
    ("game=breakout,seaquest", "a sweep needs -m"),
    ("torch_threads=-1", "torch_threads=-1"),
    ("overwrite=no", "overwrite=no: expected true or false"),
    ("env.episodic_life=2", "env.episodic_life=2: expected true or false"),
    ("env.fire_reset=abc", "env.fire_reset=abc: expected true or false"),
    ("log_every_s=abc", "log_every_s=abc: expected a number"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_every_bad_value_is_refused_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_overrides("train", [f"run_root={tmp_path}", override], check_train_config)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["game=breakout,pong"], "game=pong: no such game"),
    (["model=glob(*)", "foo=1"], "foo=1: no such key"),
    (["logger=none,foo"], "logger=foo: no such logger"),
])
def test_a_sweep_is_checked_before_hydra_runs_it(tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        check_overrides("train", ["-m", f"run_root={tmp_path}", *args], check_train_config)


def test_good_command_lines_pass_as_they_compose(tmp_path):
    cfg = check_overrides("train", [f"run_root={tmp_path}", "experiment=smoke", "ppo.gamma=0.9"], check_train_config)
    assert (cfg.study, cfg.ppo.gamma, cfg.run_root) == ("smoke", 0.9, str(tmp_path))
    # a sweep is composed with the first value of each swept key; the sweeper checks every cell
    cfg = check_overrides("train", ["-m", f"run_root={tmp_path}", "game=breakout,seaquest", "model=sparse_fls",
                                    "seed=0-4"], check_train_config)
    assert (cfg.game.name, cfg.model.name, cfg.seed) == ("breakout", "sparse_fls", 0)
    cfg = check_overrides("train", ["-m", f"run_root={tmp_path}", "experiment=paper"], check_train_config)
    assert (cfg.study, cfg.total_timesteps, cfg.plan.breakout_infinite) == ("paper", 50_000_000, True)
    assert not any(tmp_path.iterdir())


def test_run_roots_that_cannot_be_written_are_refused(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=f"run_root={a_file}/runs: {a_file} is a file, not a folder"):
        check_overrides("train", [f"run_root={a_file}/runs"], check_train_config)
    # /sys refuses new entries to every user, root included
    with pytest.raises(ConfigError, match=r"run_root=/sys/fls-runs: cannot write in /sys \("):
        check_overrides("train", ["run_root=/sys/fls-runs"], check_train_config)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("args", [
    ["seed=-1"], ["model=foo"], ["foo=1"], ["study=a/b"], ["run_root=/sys/fls-runs"],
    ["-m", "game=breakout,pong"], ["-m", "seed=0-1", "ppo.gamma=2"],
])
def test_the_entry_points_print_one_line_and_write_nothing(tmp_path, args):
    runs = tmp_path / "runs"
    res = train(runs, *args)
    assert res.returncode == 2
    one_error_line(res)
    assert not runs.exists() or not any(runs.rglob("*"))


def test_evaluate_and_saliency_check_their_command_lines_too(tmp_path):
    for script, arg in (("src/evaluate.py", "eval.games=0"), ("src/saliency.py", "saliency.normalize=foo")):
        res = subprocess.run([PYTHON, script, f"run_root={tmp_path}", arg], cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 2, (script, res.stderr)
        assert arg.split("=")[0] in one_error_line(res)
    assert not any(tmp_path.iterdir())


def test_a_total_that_is_not_a_multiple_of_the_rollout_is_said_by_the_cells_that_train(tmp_path):
    said = ("total_timesteps=300 is 1 whole rollouts of 256 agent steps (num_envs x ppo.num_steps): "
            "1 updates = 256 agent steps, as Baselines' ppo2 counts them")
    res = train(tmp_path, "total_timesteps=300")
    assert res.returncode == 0, res.stderr
    assert said in res.stdout + res.stderr
    cell = smoke_cell(tmp_path)
    assert cell.status()["global_step"] == 256
    assert cell.train_log.read_text().count(said) == 1
    # a rerun of the finished cell, and a refused one, train nothing and say nothing of it
    for extra in ((), ("ppo.gamma=0.5",)):
        res = train(tmp_path, "total_timesteps=300", *extra)
        assert said not in res.stdout + res.stderr
        assert cell.train_log.read_text().count(said) == 1


# A finished cell is never discarded for a bad rerun, and one without its config is refused


def test_overwrite_with_a_bad_value_keeps_the_finished_cell(finished, tmp_path):
    root = copy_of(finished, tmp_path)
    cell = smoke_cell(root)
    before = results(cell)
    res = train(root, f"total_timesteps={2 * STEPS_PER_UPDATE}", "overwrite=true", "ppo.learning_rate=-1")
    assert res.returncode == 2 and "ppo.learning_rate=-1" in one_error_line(res)
    assert results(cell) == before


def test_a_switch_that_is_not_a_boolean_never_discards_a_finished_cell(finished, tmp_path):
    # overwrite=no is the string "no", which is true: it retrained the cell
    root = copy_of(finished, tmp_path)
    cell = smoke_cell(root)
    before = results(cell)
    res = train(root, f"total_timesteps={2 * STEPS_PER_UPDATE}", "overwrite=no")
    assert res.returncode == 2 and one_error_line(res) == "error: overwrite=no: expected true or false"
    assert results(cell) == before


def test_a_cell_with_results_but_no_config_is_refused(finished, tmp_path):
    root = copy_of(finished, tmp_path)
    cell = smoke_cell(root)
    cell.config.unlink()
    before = results(cell)
    res = train(root, f"total_timesteps={4 * STEPS_PER_UPDATE}")
    assert res.returncode == 2
    assert "has training results but no config.yaml" in one_error_line(res)
    assert results(cell) == before


# Damaged files: one line naming the file; sweep-status reports the cell and the others


def test_a_damaged_status_is_one_line_everywhere(finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    cell = smoke_cell(root)
    cell.status_file.write_text("{ not json")
    res = train(root, f"total_timesteps={2 * STEPS_PER_UPDATE}")
    assert res.returncode == 1 and f"{cell.status_file}: damaged" in one_error_line(res)
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", f"run_root={root}", "eval.games=1"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and f"{cell.status_file}: damaged" in one_error_line(res)

    # a second, healthy cell of the study is still reported
    assert train(root, f"total_timesteps={STEPS_PER_UPDATE}", "seed=2").returncode == 0
    assert sweep_status.main(["--study", "smoke", "--run-root", str(root), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "breakout/nature_cnn/seed_2  done" in out
    assert "breakout/nature_cnn/seed_1  failed" in out and "status.json: damaged" in out


def test_a_damaged_metrics_row_is_named_and_not_called_resumable(interrupted, tmp_path, capsys):
    root = copy_of(interrupted, tmp_path)
    cell = smoke_cell(root)
    with cell.metrics.open("a") as f:
        f.write("garbage,row\n")
    assert sweep_status.main(["--study", "smoke", "--run-root", str(root), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "seed_1  failed" in out and "metrics.csv: line" in out
    res = train(root, f"total_timesteps={12 * STEPS_PER_UPDATE}", "checkpoint_every=1")
    assert res.returncode == 1
    assert f"{cell.metrics}: line" in one_error_line(res) and "is not a metrics row" in res.stderr


def test_the_temporary_file_of_a_killed_checkpoint_write_is_removed_on_resume(interrupted, tmp_path):
    root = copy_of(interrupted, tmp_path)
    cell = smoke_cell(root)
    # what atomic_write_bytes leaves when its process dies mid-write (kill -9)
    leftover = cell.path / ".checkpoint.pt.4242.0123abcd.tmp"
    leftover.write_bytes(cell.checkpoint.read_bytes()[:4096])
    res = train(root, f"total_timesteps={12 * STEPS_PER_UPDATE}", "checkpoint_every=1",
                timeout=600)
    assert res.returncode == 0, res.stderr
    assert not leftover.exists() and "removed 1 temporary file(s)" in res.stdout + res.stderr


def test_resubmit_failed_reruns_a_cell_trained_without_m_with_its_own_overrides(tmp_path, capsys):
    root = tmp_path / "runs"
    proc = subprocess.Popen([PYTHON, "src/train.py", "experiment=smoke", f"run_root={root}", "ppo.num_steps=32",
                             "ppo.ent_coef=0.02", f"total_timesteps={12 * 128}", "checkpoint_every=1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell = smoke_cell(root)
    import time

    deadline = time.monotonic() + 180
    while not (cell.status().get("checkpoint_update") or 0) >= 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert sweep_status.main(["--study", "smoke", "--run-root", str(root), "--no-slurm", "--resubmit-failed"]) == 0
    out = capsys.readouterr().out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith(("python", PYTHON, ".venv")))
    assert "ppo.num_steps=32" in command and "ppo.ent_coef=0.02" in command and "total_timesteps=1536" in command
    import shlex

    res = subprocess.run([PYTHON, *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert cell.status()["state"] == "done" and "resuming at update" in res.stdout + res.stderr


def test_make_sweep_status_takes_a_run_root_with_a_space(finished, tmp_path):
    root = tmp_path / "a b"
    shutil.copytree(finished, root)
    res = subprocess.run(["make", "-s", "sweep-status", f"PY={PYTHON}", "SETUP=", f"RUN_ROOT={root}", "STUDY=smoke"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "smoke: 1 cells: 1 done" in res.stdout


def test_a_sweep_whose_every_cell_is_refused_names_the_reasons_not_a_log(finished, tmp_path):
    root = copy_of(finished, tmp_path)
    cell = smoke_cell(root)
    before = results(cell)
    # the finished cell was trained with another gamma: refused when it is opened, in the job
    res = subprocess.run([PYTHON, "src/train.py", "-m", "experiment=smoke", f"run_root={root}",
                          f"total_timesteps={2 * STEPS_PER_UPDATE}", "ppo.gamma=0.5"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert f"ConfigError: {cell.path} was started with a different config (ppo.gamma: 0.99 -> 0.5)" in out
    assert out.strip().splitlines()[-1] == \
        "error: 1 of 1 cells failed (the others finished); each one's reason is listed above"
    assert results(cell) == before


def test_every_app_computes_on_the_threads_it_is_given(tmp_path):
    import torch

    from fls.config import use_device

    before = torch.get_num_threads()
    try:
        cfg = OmegaConf.create({"device": "cpu", "torch_threads": 1})
        assert use_device(cfg) == torch.device("cpu") and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        use_device(OmegaConf.create({"device": "cpu", "torch_threads": 0}))  # 0: torch's own count stays
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for script in ("src/evaluate.py", "src/saliency.py"):
        res = subprocess.run([PYTHON, script, f"run_root={tmp_path}", "torch_threads=-1"], cwd=REPO,
                             capture_output=True, text=True)
        assert res.returncode == 2 and "torch_threads=-1" in one_error_line(res), (script, res.stderr)
    assert not any(tmp_path.iterdir())
