"""The analysis of a paper-sized study: `python -m analysis all` (every table, the interval
estimates of `stats`, every figure) on 75 synthetic cells written through the project's own
writers, timed on this machine. Target (issue 32): under 60 s on 2 cores.

The study: 3 games x 5 models x 5 seeds (Breakout, Ms. Pac-Man, Seaquest, the Atari-HEAD
games, so Table 4 has rows; nature_cnn, daqn, rs_ppo, sparse_fls, dense_fls), each cell at
the paper's size: a metrics.csv of 48,828 PPO updates (5e7 agent steps at 1,024 a update),
8,192 evaluated games, the Breakout cells also on BreakoutInfinite (Table 5), and, for the
models with a map, a trials.csv of 20 Atari-HEAD trials x (model, centre, uniform) at the two
resolutions and alignments. The reference, in the same run: the same analysis with 100
bootstrap resamples instead of the default, so the ratio is what the intervals cost.

    python bench/bench_analysis.py [--root DIR] [--keep]
    run() -> dict                                   # for `make bench` (part P6)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fls.evaluation import GAME_COLUMNS, summarize, write_results
from fls.rundir import RunLayout
from fls.facts import REPO
from fls.rundir import METRIC_COLUMNS as COLUMNS, X_AXIS

STUDY = "bench_analysis"
GAMES = ("breakout", "mspacman", "seaquest")
MODELS = ("nature_cnn", "daqn", "rs_ppo", "sparse_fls", "dense_fls")
SEEDS = (1, 9, 17, 25, 33)
UPDATES = 48_828  # 5e7 agent steps / (8 envs x 128 steps)
EVAL_GAMES = 8192
TRIALS = 20
TARGET_SECONDS = 60.0


def write_study(root: Path) -> int:
    """The 75 cells; returns the number of cells written."""
    layout = RunLayout(root)
    rng = np.random.default_rng(0)
    frames = np.arange(1, UPDATES + 1, dtype="int64") * 4096
    for g, game in enumerate(GAMES):
        for m, model in enumerate(MODELS):
            for seed in SEEDS:
                cell = layout.cell(STUDY, game, model, seed)
                cell.path.mkdir(parents=True)
                cell.write_status(state="done")
                level = 10.0 * (g + 1) * (1 + 0.2 * m)
                curve = level * (1 - np.exp(-frames / 5e7)) + rng.normal(0, 0.5, UPDATES)
                metrics = pd.DataFrame({c: np.nan for c in COLUMNS}, index=range(UPDATES))
                metrics["update"] = np.arange(1, UPDATES + 1)
                metrics["global_step"] = frames // 4
                metrics[X_AXIS] = frames
                metrics["charts/eprewmean"] = curve
                metrics.to_csv(cell.metrics, index=False)
                for target in ((game, "breakout_infinite") if game == "breakout" else (game,)):
                    write_eval(cell, target, rng.gamma(2.0, level, EVAL_GAMES).round())
                if model not in ("nature_cnn",):
                    write_trials(cell, rng, 0.5 + 0.1 * m)
    return len(GAMES) * len(MODELS) * len(SEEDS)


def write_eval(cell, target: str, scores: np.ndarray) -> None:
    n = len(scores)
    games = pd.DataFrame({"env": np.arange(n) % 16, "game": np.arange(n) // 16, "score": scores,
                          "frames": np.full(n, 20_000), "agent_steps": np.full(n, 5_000), "seconds": np.full(n, 4.0),
                          "truncated": np.zeros(n, bool)})
    games = games[GAME_COLUMNS].astype({"env": "int32", "game": "int32", "score": "float64", "frames": "int64",
                                        "agent_steps": "int64", "seconds": "float64", "truncated": "bool"})
    settings = {"eval_game": target, "games": n, "num_envs": 16, "max_frames": 400_000, "seed": 1_000_000_000,
                "sample": True, "checkpoint_global_step": 50_000_000, "env": {"backend": "gymnasium"}}
    write_results(cell, target, games, {**summarize(games), "seconds": 1.0, "settings": settings,
                                        "cell": cell.cell.key, "checkpoint_update": UPDATES})


def write_trials(cell, rng: np.random.Generator, level: float) -> None:
    rows = []
    for resolution in ("210x160", "84x84"):
        for alignment in ("spec", "paper"):
            for k in range(TRIALS):
                trial = f"{100 + k}_RZ_{k}"
                for name, base in (("model", level), ("center", 0.8), ("uniform", np.nan)):
                    rows.append({"trial": trial, "map": name, "preset": "spec", "resolution": resolution,
                                 "alignment": alignment, "nss": base + rng.normal(0, 0.1),
                                 "kl": 2.5 + rng.normal(0, 0.1), "sauc": np.nan if name == "uniform" else 0.55,
                                 "nss_frames": 9000, "kl_frames": 9000, "sauc_frames": 9000, "frames": 9000,
                                 "checkpoint_global_step": 50_000_000})
    cell.saliency_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(cell.saliency_trials, index=False)


def timed(root: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "analysis", *args, "--study", STUDY, "--run-root", str(root)],
                         cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"analysis {' '.join(args)} failed: {res.stderr[-2000:]}")
    return seconds, res.stdout


def run(root: Path | None = None, keep: bool = False) -> dict:
    owned = root is None
    root = Path(tempfile.mkdtemp(prefix="bench_analysis_")) if owned else Path(root)
    try:
        start = time.perf_counter()
        cells = write_study(root)
        written = time.perf_counter() - start
        reference, _ = timed(root, "all", "--reps", "100")
        full, out = timed(root, "all")
        drawn = sorted(p.name for p in RunLayout(root).analysis_dir(STUDY).iterdir())
        return {"id": "P6", "cells": cells, "write_seconds": written, "all_seconds": full,
                "reference_seconds": reference, "ratio": full / reference, "target_seconds": TARGET_SECONDS,
                "files": len(drawn), "skipped": [line for line in out.splitlines() if line.endswith("; skipped")]}
    finally:
        if owned and not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="write the study here (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary study")
    args = parser.parse_args()
    r = run(args.root, args.keep)
    print(f"{r['cells']} cells written in {r['write_seconds']:.0f} s; analysis all: {r['all_seconds']:.1f} s "
          f"(target < {r['target_seconds']:.0f} s); with 100 resamples "
          f"{r['reference_seconds']:.1f} s (ratio {r['ratio']:.2f}); {r['files']} files")
    for line in r["skipped"]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
