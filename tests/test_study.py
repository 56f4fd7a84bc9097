"""`make study` / `make paper` (studies/study.py): a tiny version of the paper's study, every
stage for real (train, Table 3 and Table 5 evaluations, Atari-HEAD scoring on the bundled
sample, the analysis), then a second run that does nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fls.rundir import RunLayout

from conftest import ATARI_HEAD_SAMPLE, PYTHON, REPO

GAMES, MODELS, SEEDS = ("breakout", "mspacman"), ("nature_cnn", "sparse_fls"), (1, 2)


def make_study(run_root: Path, launcher: str, atari_head: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATARI_HEAD_ROOT"}
    if atari_head:
        env["ATARI_HEAD_ROOT"] = str(ATARI_HEAD_SAMPLE)
    return subprocess.run(["make", "-s", "study", "EXPERIMENT=paper_tiny", f"LAUNCHER={launcher}", f"RUN_ROOT={run_root}",
                           f"PY={PYTHON}", "SETUP="], cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)


def stamps(run_root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run_root.rglob("*") if p.is_file()}


def check_the_study(run_root: Path, launcher: str) -> None:
    res = make_study(run_root, launcher, atari_head=True)
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
    again = make_study(run_root, launcher, atari_head=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    for stage in ("train", "evaluate", "breakout_infinite"):
        assert f"[study paper_tiny] {stage}: every cell done; nothing to do" in again.stdout
    assert "saliency: skipped, ATARI_HEAD_ROOT is not set" in again.stdout
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


@pytest.mark.slurm
def test_make_study_on_slurm_waits_stage_after_stage_and_a_rerun_does_nothing(tmp_path: Path):
    check_the_study(tmp_path / "runs", "slurm_local")
