"""A whole study as a SLURM job chain (studies/chain.py) on the one-node SLURM of
cluster/slurm-local (make test-slurm): `make study ... LAUNCHER=slurm_local` submits every
stage and returns while the jobs run; the stages run in order with nothing of ours waiting;
a cell cancelled mid-training fails alone and its dependents are not run; a requeued one
resumes and its chain completes; a resubmission queues only what is missing; the W&B runs
hold the evaluation and saliency rows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from fls import job_records
from fls.rundir import RunLayout
from studies.slurm import query_slurm, queue
from studies.stages import ANALYSIS, record_cells, record_stage

from conftest import ATARI_HEAD_SAMPLE, PYTHON, REPO
from test_slurm import slurm, slurm_env, wait_until  # noqa: F401 - slurm_env is a fixture
from wandb_offline import find_runs, load_media, read_run

pytestmark = pytest.mark.slurm

STUDY = "paper_tiny"


def make(*args: str, run_root: Path, atari_head: bool = True, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "ATARI_HEAD_ROOT"}
    if atari_head:
        env["ATARI_HEAD_ROOT"] = str(ATARI_HEAD_SAMPLE)
    start = time.monotonic()
    res = subprocess.run(["make", "-s", *args, f"RUN_ROOT={run_root}", f"PY={PYTHON}", "SETUP="], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout, env=env)
    return res, time.monotonic() - start


def study(run_root: Path, demo_args: str = "", **kw) -> tuple[subprocess.CompletedProcess, float]:
    return make("study", f"EXPERIMENT={STUDY}", "LAUNCHER=slurm_local", *([f"DEMO_ARGS={demo_args}"] if demo_args else []),
                run_root=run_root, **kw)


def status(run_root: Path) -> str:
    res, _ = make("sweep-status", f"STUDY={STUDY}", run_root=run_root, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def records(run_root: Path) -> list[dict]:
    return job_records.read(RunLayout(run_root).jobs_file(STUDY))


@pytest.fixture
def run_root(slurm_env, tmp_path):
    """The study's run root; whatever a failed test leaves in SLURM is cancelled."""
    root = tmp_path / "runs"
    yield root
    left = {r["job_id"] for r in records(root)}
    if left:
        subprocess.run(["scancel", *sorted(left)], capture_output=True, timeout=60)


def analysis_done(run_root: Path, after: int = 0, timeout: float = 900) -> str:
    """Wait for the latest analysis job (the chain's last) to end; its id."""
    def ended():
        jobs = [r for r in records(run_root) if record_stage(r) == ANALYSIS]
        if len(jobs) <= after:
            return None
        job_id = jobs[-1]["job_id"]
        state = (query_slurm({job_id}) or {}).get(job_id, {}).get("state")
        return job_id if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None
    job_id = wait_until(ended, timeout, "the chain's analysis job to end", every=3)
    state = query_slurm({job_id})[job_id]
    assert state["state"] == "COMPLETED", (state, Path(records(run_root)[-1]["stderr"]).read_text()[-3000:])
    return job_id


def times(job_ids: set[str]) -> dict[str, tuple[float, float]]:
    """sacct's start and end of each job (array tasks one by one)."""
    out = slurm(dict(os.environ), "sacct", "-X", "-n", "-P", "-o", "JobID,Start,End",
                "-j", ",".join(sorted({j.split("_")[0] for j in job_ids})))
    stamp = lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").timestamp()  # noqa: E731
    return {p[0]: (stamp(p[1]), stamp(p[2])) for p in (line.split("|") for line in out.splitlines())
            if p[0] in job_ids and p[1] not in ("Unknown", "None")}


def test_make_study_submits_the_chain_returns_and_the_jobs_carry_the_study_to_its_analysis(run_root, capsys):
    res, seconds = study(run_root, "logger=wandb")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    out = res.stdout
    recs = records(run_root)
    analysis = next(r["job_id"] for r in recs if record_stage(r) == ANALYSIS)
    # it returned while the chain was still to run: the analysis job waits for the stages, and
    # each task of a later stage for the training tasks of its own cells (no training task
    # ends within seconds of its start, so none of these dependencies is fulfilled yet)
    waiting = queue()
    assert waiting[analysis]["reason"] == "Dependency"
    train_of = {c: r["job_id"] for r in recs if record_stage(r) == "train" for c in record_cells(r, STUDY)}
    for r in recs:
        if record_stage(r) in ("evaluate", "breakout_infinite", "saliency"):
            upstream = sorted({train_of[c] for c in record_cells(r, STUDY)})
            assert waiting[r["job_id"]]["dependency"] == ",".join(f"afterok:{u}(unfulfilled)" for u in upstream) \
                or waiting[r["job_id"]]["dependency"] == f"afterok:{':'.join(upstream)}(unfulfilled)", waiting[r["job_id"]]
    with capsys.disabled():
        print(f"\nmake study (paper_tiny, 4 stage arrays + analysis) returned in {seconds:.0f} s")
    for line in ("train: 8 cell(s) in 4 job(s)", "evaluate: 8 cell(s) in 4 job(s)", "breakout_infinite: 4 cell(s) in 2 job(s)",
                 "saliency: 4 cell(s) in 2 job(s)", f"analysis: job {analysis}, after every array",
                 f"Progress: make sweep-status STUDY={STUDY} RUN_ROOT={run_root}"):
        assert line in out, out
    assert "saliency: no breakout trial in" in out

    analysis_done(run_root)
    layout = RunLayout(run_root)
    for game in ("breakout", "mspacman"):
        for model in ("nature_cnn", "sparse_fls"):
            for seed in (1, 2):
                cell = layout.cell(STUDY, game, model, seed)
                assert cell.is_done() and cell.eval_summary().exists(), cell.path
                assert cell.eval_summary("breakout_infinite").exists() == (game == "breakout"), cell.path
                assert cell.saliency_trials.exists() == (game == "mspacman"), cell.path
    drawn = layout.analysis_dir(STUDY)
    for name in ("table3.md", "table4.md", "table5.md", "fig3.png", "fig4.png", "fig5.png", "fig8.png",
                 "wandb_report.json", "wandb_workspace.json"):
        assert (drawn / name).is_file(), name
    report = json.loads((drawn / "wandb_report.json").read_text())
    assert "Table 4" in json.dumps(report) and "charts/eprewmean" in json.dumps(report)

    # every task started after the training tasks of its own cells ended; the analysis after all
    when = times({r["job_id"] for r in recs})
    for r in recs:
        if record_stage(r) in ("evaluate", "breakout_infinite", "saliency"):
            upstream = {train_of[c] for c in record_cells(r, STUDY)}
            assert when[r["job_id"]][0] >= max(when[u][1] for u in upstream), (r["job_id"], upstream)
    assert when[analysis][0] >= max(end for job, (_, end) in when.items() if job != analysis)

    shown = status(run_root)
    assert re.search(r"evaluate\s+8\s+8\s", shown) and re.search(r"saliency\s+4\s+4\s", shown), shown
    assert f"analysis: job {analysis}, done" in shown

    # the W&B run of a cell: training, then its evaluation and scoring, read back from the files
    cell = layout.cell(STUDY, "mspacman", "sparse_fls", 1)
    runs = {r.job_type: r for r in map(read_run, find_runs(cell.wandb_dir))}
    # evaluation and scoring both wait for the training only: either may run first
    assert sorted(runs) == ["evaluate", "saliency", "train"] and len({r.id for r in runs.values()}) == 1
    evaluated, scored = runs["evaluate"], runs["saliency"]
    summary = json.loads(cell.eval_summary().read_text())
    assert evaluated.summary["eval/mspacman/mean"] == pytest.approx(summary["mean"])
    assert evaluated.summary["eval/mspacman/n"] == summary["n"] == 2
    table = load_media(evaluated, {"_type": "table-file", "path": evaluated.summary["eval/mspacman/table/path"]})
    row = dict(zip(table["columns"], table["data"][0]))
    assert (row["game"], row["model"], row["seed"], row["eval_game"]) == ("mspacman", "sparse_fls", 1, "mspacman")
    assert row["mean"] == pytest.approx(summary["mean"])
    games = load_media(evaluated, {"_type": "table-file", "path": evaluated.summary["eval/mspacman/games/path"]})
    assert len(games["data"]) == 2 and "score" in games["columns"]
    trials = pd.read_csv(cell.saliency_trials)
    model_nss = trials[trials["map"] == "model"]["nss"].mean()
    assert scored.summary["saliency/spec/210x160/spec/model/nss"] == pytest.approx(model_nss, rel=1e-5)  # trials.csv: 6 digits
    table = load_media(scored, {"_type": "table-file", "path": scored.summary["saliency/trials/path"]})
    assert len(table["data"]) == len(trials) and {"nss", "kl", "sauc", "map"} <= set(table["columns"])
    assert scored.summary["saliency/maps/count"] >= 1
    assert all((scored.folder / "files" / f).is_file() for f in scored.summary["saliency/maps/filenames"])
    breakout = [read_run(p) for p in find_runs(layout.cell(STUDY, "breakout", "nature_cnn", 2).wandb_dir)]
    [infinite] = [r for r in breakout if "eval/breakout_infinite/mean" in r.summary]  # Table 5's evaluation
    assert infinite.job_type == "evaluate" and infinite.summary["eval/breakout_infinite/mean"] == pytest.approx(
        json.loads(layout.cell(STUDY, "breakout", "nature_cnn", 2).eval_summary("breakout_infinite").read_text())["mean"])

    # a second submission finds nothing to do and submits nothing
    again, _ = study(run_root, "logger=wandb")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    for stage in ("train", "evaluate", "breakout_infinite", "saliency"):
        assert f"[study {STUDY}] {stage}: every cell done; nothing to do" in again.stdout
    assert "analysis: nothing new to draw" in again.stdout
    assert len(records(run_root)) == len(recs)


def test_a_cancelled_cell_fails_alone_a_requeued_one_resumes_and_a_resubmission_redoes_only_what_is_missing(run_root):
    # two cells, one job each: breakout and mspacman, Nature CNN, seed 1, 16 updates
    small = "model=nature_cnn seed=1 total_timesteps=4096 checkpoint_every=1 plan.saliency=false"
    res, _ = study(run_root, small, atari_head=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    layout = RunLayout(run_root)
    cells = {g: layout.cell(STUDY, g, "nature_cnn", 1) for g in ("breakout", "mspacman")}
    train = {c.game: r["job_id"] for r in records(run_root) if record_stage(r) == "train" for c in record_cells(r, STUDY)}
    wait_until(lambda: all(c.status().get("update", 0) >= 2 for c in cells.values()), 300, "both cells' second update")

    slurm(dict(os.environ), "scancel", train["breakout"])  # a user's scancel mid-training
    slurm(dict(os.environ), "scontrol", "requeue", train["mspacman"])  # what a preemption does
    def requeued():
        shown = " ".join(slurm(dict(os.environ), "scontrol", "show", "job", train["mspacman"]).split())
        return re.search(r"JobState=PENDING .*Restarts=1", shown)
    wait_until(requeued, 60, "the requeue")
    slurm(dict(os.environ), "scontrol", "update", f"JobId={train['mspacman']}", "StartTime=now")  # SLURM holds it ~2 min

    analysis = analysis_done(run_root)
    assert cells["mspacman"].is_done() and cells["mspacman"].status()["slurm_restart_count"] == "1"
    assert "resuming at update" in cells["mspacman"].train_log.read_text()
    assert cells["mspacman"].eval_summary().exists()
    assert not cells["breakout"].is_done() and cells["breakout"].status()["state"] == "interrupted"
    assert not cells["breakout"].eval_summary().exists() and not cells["breakout"].eval_summary("breakout_infinite").exists()
    shown = status(run_root)
    assert re.search(r"breakout/nature_cnn/seed_1\s+failed\s.*its job ended CANCELLED by \d+", shown), shown
    assert "evaluate breakout/nature_cnn/seed_1: not run" in shown
    assert "breakout_infinite breakout/nature_cnn/seed_1: not run" in shown
    assert f"analysis: job {analysis}, done" in shown

    # the resubmission: the cancelled cell and its dependents only, then the analysis
    before = {r["job_id"] for r in records(run_root)}
    again, _ = study(run_root, small, atari_head=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    new = [r for r in records(run_root) if r["job_id"] not in before]
    assert sorted((record_stage(r), [c.key for c in record_cells(r, STUDY)]) for r in new) == [
        ("analysis", []), ("breakout_infinite", ["breakout/nature_cnn/seed_1"]),
        ("evaluate", ["breakout/nature_cnn/seed_1"]), ("train", ["breakout/nature_cnn/seed_1"])]
    analysis_done(run_root, after=1)
    assert cells["breakout"].is_done() and "resuming at update" in cells["breakout"].train_log.read_text()
    assert cells["breakout"].eval_summary().exists() and cells["breakout"].eval_summary("breakout_infinite").exists()
    table3 = (layout.analysis_dir(STUDY) / "table3.md").read_text()
    assert "Breakout" in table3 and "MsPacman" in table3


def test_cancel_stops_the_whole_chain_the_analysis_first(run_root):
    res, _ = study(run_root, "model=nature_cnn seed=1 plan.saliency=false plan.breakout_infinite=false", atari_head=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    ids = {r["job_id"] for r in records(run_root)}
    assert len(ids) == 5  # 2 training tasks, 2 evaluation tasks, the analysis
    out, _ = make("sweep-status", f"STUDY={STUDY}", "STATUS_ARGS=--cancel", run_root=run_root, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "cancelled" in line]
    assert [line.split(":")[0] for line in lines] == ["analysis", "evaluate", "train"], out.stdout
    wait_until(lambda: not (set(queue()) & ids), 60, "the queue to empty")
    # the analysis job never started: cancelling the training first would have let it run
    analysis = next(r["job_id"] for r in records(run_root) if record_stage(r) == ANALYSIS)
    assert query_slurm({analysis})[analysis]["text"].startswith("CANCELLED") and analysis not in times({analysis})
    again, _ = make("sweep-status", f"STUDY={STUDY}", "STATUS_ARGS=--cancel", run_root=run_root, timeout=120)
    assert f"{STUDY}: no job of the study is queued or running" in again.stdout
