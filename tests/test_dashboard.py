"""The study's W&B report and workspace (studies/dashboard.py), offline: built with
wandb-workspaces, written as specs, and one line saying what would be created."""

from __future__ import annotations

import json
import subprocess

from fls.rundir import RunLayout

from conftest import PYTHON, REPO


def dashboard(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "studies.dashboard", "--study", "s", "--run-root", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"})


def test_offline_the_report_and_workspace_are_written_and_said_not_sent(tmp_path):
    layout = RunLayout(tmp_path)
    for game in ("breakout", "mspacman"):
        layout.cell("s", game, "sparse_fls", 1).write_status(state="done")
    out = layout.analysis_dir("s")
    out.mkdir(parents=True)
    (out / "table3.md").write_text("| Model | Breakout |\n| --- | --- |\n| Sparse FLS | 1.5 ± 0.9 |\n")
    res = dashboard(tmp_path, "--project", "fls-test", "--entity", "lab")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("[dashboard s] offline: would create report 's: fls-sweeps study' (2 game panel(s), "
                                 "1 table(s)) and workspace 's' in lab/fls-test")
    report = json.loads((out / "wandb_report.json").read_text())
    text = json.dumps(report)
    assert "Sparse FLS | 1.5" in text and "charts/eprewmean" in text and "global/game_frames" in text
    assert text.count('"panel-grid"') == 2  # one per game
    workspace = json.loads((out / "wandb_workspace.json").read_text())
    assert "eval/mspacman/mean" in json.dumps(workspace) and "eval/breakout_infinite/mean" in json.dumps(workspace)


def test_a_study_without_wandb_gets_no_dashboard(tmp_path):
    RunLayout(tmp_path).cell("s", "breakout", "nature_cnn", 1).write_status(state="done")
    res = dashboard(tmp_path, "--logger", "none")
    assert res.returncode == 0 and "logger=none: its runs are not in W&B" in res.stdout
    assert not RunLayout(tmp_path).analysis_dir("s").exists()
