"""Real `-m` sweeps of src/train.py: the user's own command, ranges, skips, failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from fls.rundir import Cell, RunLayout
from fls.grid import cell_overrides, cells_of

from conftest import PYTHON, REPO

USER_COMMAND = "src/train.py -m game=breakout,seaquest model=sparse_fls seed=0-4"


def sweep(run_root: Path, *args: str, command: str = "src/train.py -m", timeout: float = 900):
    cmd = [PYTHON, *command.split(), *args, f"run_root={run_root}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_the_users_command_trains_ten_cells_and_a_rerun_skips_them(tmp_path):
    res = sweep(tmp_path, "total_timesteps=1024", command=USER_COMMAND)
    assert res.returncode == 0, res.stderr[-3000:]
    cells = list(RunLayout(tmp_path).cells("default"))
    assert [(c.cell.game, c.cell.seed) for c in cells] == [(g, s) for g in ("breakout", "seaquest") for s in range(5)]
    assert len({c.path for c in cells}) == 10
    for c in cells:
        status = c.status()
        assert (c.cell.model, status["state"], status["global_step"]) == ("sparse_fls", "done", 1024), c
        assert c.checkpoint.exists() and c.metrics.exists()
        assert len(list(c.wandb_dir.glob("offline-run-*"))) == 1  # default logger: W&B offline
    stamps = {c.path: c.checkpoint.stat().st_mtime_ns for c in cells}

    again = sweep(tmp_path, "total_timesteps=1024", command=USER_COMMAND)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("is done") == 10
    assert {c.path: c.checkpoint.stat().st_mtime_ns for c in cells} == stamps


def test_seed_lists_and_hydra_ranges_still_sweep(tmp_path):
    res = sweep(tmp_path, "experiment=smoke", "seed=range(3,5)", "model=nature_cnn,daqn")
    assert res.returncode == 0, res.stderr[-3000:]
    done = {(c.cell.model, c.cell.seed) for c in RunLayout(tmp_path).cells("smoke") if c.is_done()}
    assert done == {("nature_cnn", 3), ("nature_cnn", 4), ("daqn", 3), ("daqn", 4)}

    res = sweep(tmp_path, "experiment=smoke", "seed=7,1-2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert {c.cell.seed for c in RunLayout(tmp_path).cells("smoke") if c.cell.model == "nature_cnn"} == {1, 2, 3, 4, 7}


def test_the_grid_is_one_cross_product_with_inclusive_ranges():
    """The one expansion the sweeper, the launchers' job records and sweep-status share."""
    grid = cell_overrides(["model=a,b", "game=breakout", "seed=0-1,9"], range_keys=["seed"])
    assert grid == [["model=a", "game=breakout", "seed=0"], ["model=a", "game=breakout", "seed=1"],
                    ["model=a", "game=breakout", "seed=9"], ["model=b", "game=breakout", "seed=0"],
                    ["model=b", "game=breakout", "seed=1"], ["model=b", "game=breakout", "seed=9"]]
    composed = []

    def compose(overrides):
        composed.append(overrides)
        model = overrides[0].split("=")[1]
        return OmegaConf.create({"run_root": "runs", "study": "s", "game": {"name": "breakout"},
                                 "model": {"name": model}, "seed": 1})

    assert cells_of(grid, compose) == [Cell("s", "breakout", m, k) for m in ("a", "b") for k in (0, 1, 9)]
    assert len(composed) == 2  # cells that differ only in seed share one composition
    assert cells_of([["mode=ok"]], lambda overrides: OmegaConf.create({"mode": "ok"})) == [None]


def test_bad_ranges_fail_in_one_line_and_launch_nothing(tmp_path):
    for bad, says in [("seed=4-0", "seed=4-0: a range runs from low to high"), ("seed=a-b", "seed=a-b: expected an integer")]:
        res = sweep(tmp_path, "experiment=smoke", bad)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), res.stderr
        assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_preflight_refuses_a_bad_cell_before_any_runs(tmp_path):
    res = sweep(tmp_path, "experiment=smoke", "game=breakout,breakout_infinite", "env.backend=native")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: env.backend=native")
    assert not tmp_path.exists() or not any(tmp_path.rglob("*.csv"))


def test_unknown_names_list_the_choices_in_one_line(tmp_path):
    for bad, says in [("game=pong", "game=pong: no such game; expected one of beamrider, breakout"),
                      ("model=transformer", "model=transformer: no such model; expected one of daqn"),
                      ("game=breakout,pong", "game=pong: no such game")]:
        res = sweep(tmp_path, bad)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {says}"), res.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_failing_cell_fails_alone(tmp_path):
    layout = RunLayout(tmp_path)
    broken = layout.cell("smoke", "breakout", "nature_cnn", 2)
    # A cell whose checkpoint is damaged cannot resume: it must fail without stopping the rest.
    assert sweep(tmp_path, "experiment=smoke", "seed=2", "total_timesteps=256").returncode == 0
    broken.write_status(state="interrupted")
    broken.checkpoint.write_bytes(b"not a checkpoint")

    res = sweep(tmp_path, "experiment=smoke", "seed=1-3", "total_timesteps=256")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    # a damaged checkpoint is a refusal: its reason is the line the summary points at
    assert lines[-1] == "error: 1 of 3 cells failed (the others finished); each one's reason is listed above"
    lines = (res.stdout + res.stderr).strip().splitlines()
    reason = [line for line in lines if line.strip().startswith("seed=2") or " seed=2" in line]
    assert reason and "checkpoint" in reason[-1], lines[-8:]
    states = {c.cell.seed: c.state for c in layout.cells("smoke")}
    assert states == {1: "done", 2: "failed", 3: "done"}
    assert broken.checkpoint.read_bytes() == b"not a checkpoint"
