"""`make study` / `make paper` (studies/study.py): a tiny version of the paper's study, every
stage for real (train, Table 3 and Table 5 evaluations, Atari-HEAD scoring on the bundled
sample, the analysis), then a second run that does nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fls import job_records
from fls.rundir import RunLayout

from conftest import ATARI_HEAD_SAMPLE, PYTHON, REPO

GAMES, MODELS, SEEDS = ("breakout", "mspacman"), ("nature_cnn", "sparse_fls"), (1, 2)


def make_study(run_root: Path, launcher: str | None, atari_head: bool | Path, *args: str,
               target: str = "study") -> subprocess.CompletedProcess:
    """`make study` (or `target`) of the tiny paper; atari_head: the bundled sample, none, or a path."""
    env = {k: v for k, v in os.environ.items() if k != "ATARI_HEAD_ROOT"}
    if atari_head:
        env["ATARI_HEAD_ROOT"] = str(ATARI_HEAD_SAMPLE if atari_head is True else atari_head)
    experiment = ["EXPERIMENT=paper_tiny"] if target == "study" else []
    return subprocess.run(["make", "-s", target, *experiment, *([f"LAUNCHER={launcher}"] if launcher else []),
                           f"RUN_ROOT={run_root}", f"PY={PYTHON}", "SETUP=", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env=env)


def stamps(run_root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run_root.rglob("*") if p.is_file()}


def check_the_study(run_root: Path, launcher: str, *args: str) -> None:
    res = make_study(run_root, launcher, True, *args)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    layout = RunLayout(run_root)
    for game in GAMES:
        for model in MODELS:
            for seed in SEEDS:
                cell = layout.cell("paper_tiny", game, model, seed)
                assert cell.is_done() and cell.eval_summary().exists(), cell.path
                assert cell.eval_summary("breakout_infinite").exists() == (game == "breakout"), cell.path
                assert cell.saliency_trials.exists() == (game == "mspacman"), cell.path
    assert "saliency: no breakout trial in" in res.stdout
    out = layout.analysis_dir("paper_tiny")
    for name in ("table3.md", "table4.md", "table5.md", "fig3.png", "fig4.png", "fig5.png", "fig8.png", "fig9.png",
                 "fig11.png"):
        assert (out / name).is_file(), name
    assert set(pd.read_csv(out / "table5.csv")["model"]) == set(MODELS)

    before = stamps(run_root)
    again = make_study(run_root, launcher, True, *args)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    for stage in ("train", "evaluate", "breakout_infinite", "saliency"):
        assert f"[study paper_tiny] {stage}: every cell done; nothing to do" in again.stdout
    assert "analysis: nothing new since it was drawn" in again.stdout
    assert stamps(run_root) == before  # not one file written or touched


def test_make_study_runs_the_tiny_paper_stage_after_stage_and_a_rerun_does_nothing(tmp_path: Path):
    check_the_study(tmp_path / "runs", "local")


def test_make_study_refuses_an_unknown_experiment_or_launcher(tmp_path: Path):
    for args, complaint in ((["EXPERIMENT=papr"], "EXPERIMENT=papr: expected one of demo,"),
                            (["EXPERIMENT=paper_tiny", "LAUNCHER=pbs"], "LAUNCHER=pbs: expected one of local,")):
        res = subprocess.run(["make", "-s", "study", *args, f"RUN_ROOT={tmp_path}", f"PY={PYTHON}", "SETUP="],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and complaint in res.stderr, res.stderr
    assert not any(tmp_path.iterdir())


def test_every_stages_input_is_checked_before_the_first_stage_starts(tmp_path: Path):
    """Issue 36: a missing ATARI_HEAD_ROOT was found at the saliency stage, after the training;
    a bad evaluation setting after the last training job. Both are refused before anything runs."""
    run_root = tmp_path / "runs"
    res = make_study(run_root, "local", False)
    assert res.returncode == 2, (res.stdout + res.stderr)[-3000:]
    [line] = [line for line in res.stderr.splitlines() if not line.startswith("make")]
    assert line.startswith("error: the study's plan scores saliency on Atari-HEAD (Table 4), and ATARI_HEAD_ROOT is not set")
    assert "plan.saliency=false" in res.stderr
    res = make_study(run_root, "local", True, "DEMO_ARGS=eval.games=0")
    assert res.returncode == 2 and "error: evaluate stage (breakout): eval.games=0: must be a positive integer" in res.stderr, \
        (res.stdout + res.stderr)[-3000:]
    res = make_study(run_root, "local", tmp_path / "nowhere")
    assert res.returncode == 2 and f"error: saliency stage (breakout): saliency.root={tmp_path / 'nowhere'}" in res.stderr, \
        (res.stdout + res.stderr)[-3000:]
    assert not run_root.exists()  # nothing trained, nothing written


def test_make_paper_without_a_launcher_is_refused_before_anything_is_written(tmp_path: Path):
    """Issue 36: `make paper` with no LAUNCHER trained 450 cells of 5e7 steps on this machine."""
    res = make_study(tmp_path / "runs", None, True, target="paper")
    assert res.returncode != 0
    assert ("error: EXPERIMENT=paper trains 450 cells of 50,000,000 agent steps (2.25e+10 in all: months on one "
            "machine) and no LAUNCHER says where; name one: LAUNCHER=slurm") in res.stderr, res.stderr[-3000:]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slurm
def test_make_study_on_slurm_with_wait_runs_the_stages_here_one_after_the_other(tmp_path: Path):
    """WAIT=1: the SLURM launchers without the chain (tests/test_chain.py has the chain and the
    whole tiny paper); one cell, training and evaluation, each stage waiting for its job."""
    run_root = tmp_path / "runs"
    one = "DEMO_ARGS=game=breakout model=nature_cnn seed=1 plan.breakout_infinite=false plan.saliency=false"
    res = make_study(run_root, "slurm_local", False, "WAIT=1", one)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    cell = RunLayout(run_root).cell("paper_tiny", "breakout", "nature_cnn", 1)
    assert cell.is_done() and cell.eval_summary().exists()
    assert cell.status()["slurm_job_id"]  # trained in a SLURM job, not here
    assert (RunLayout(run_root).analysis_dir("paper_tiny") / "table3.md").is_file()
    records = job_records.read(RunLayout(run_root).jobs_file("paper_tiny"))
    assert [r["stage"] for r in records] == ["train", "evaluate"]  # no chain: no analysis job
    assert "submitted in" not in res.stdout
