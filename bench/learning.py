"""`make bench-learning`: does our default trainer learn as fast as CleanRL's `ppo_atari.py`?

    python -m bench.learning [--cleanrl DIR] [--game breakout] [--seeds 3] [--first-seed 1] [--steps 300000]
                             [--variant NAME="overrides ..."] [--jobs 2] [--out DIR] [--add EARLIER.json]

Ours: `src/train.py` with its defaults (Nature CNN, as CleanRL's network), one process per
seed, 1 torch thread each. The peer: `cleanrl/ppo_atari.py` from a checkout of
vwxyzjn/cleanrl that you point at (its code is never copied here), run in a venv of its own
that this bench makes on first use (gymnasium 0.29 + ale-py 0.8.1, what that script is
written for; ROMs imported from the ale-py this project ships). Same PPO settings on both
sides (CleanRL's defaults are Baselines' Atari settings); same seeds.

The statistic is the paper's `eprewmean`: the mean unclipped score of the last 100 finished
games, read at 6 evenly spaced agent-step marks (ours from metrics.csv, CleanRL from its
`episodic_return` lines). It prints one table (mean +/- std over seeds, and each seed) and
writes learning.md, learning.json and learning.png (mean with a band of one std) in --out.

Each finished run is kept: running the bench again with more seeds or another variant
trains only what is missing (ours skips finished cells; CleanRL's runs keep their logs).
`--variant name="env.backend=native"` adds a column for ours with those overrides, which is
how the causes of a gap are isolated with controlled runs. `--add <earlier learning.json>`
joins the seeds of a table whose runs live elsewhere (known at its six marks only; the plot
draws them as steps between the marks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fls.facts import REPO, group_options, script
from fls.games import game_config
from fls.rundir import RunLayout

OUT = REPO / "bench" / "results" / "learning"
MARKS = 6
WINDOW = 100
# what cleanrl/ppo_atari.py runs on (its requirements at the time of gymnasium 0.29); torch
# is this machine's CPU build, which pip installs from its local copy
CLEANRL_PACKAGES = ["torch==2.13.0", "gymnasium[atari]==0.29.1", "ale-py==0.8.1", "tyro", "tensorboard",
                    "opencv-python-headless", "numpy<2"]
EPISODE = re.compile(r"global_step=(\d+), episodic_return=\[?([-+0-9.eE]+)\]?")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Column:
    """One implementation (or variant) of the table: its runs, one per seed."""

    name: str
    kind: str  # "ours" or "cleanrl"
    overrides: list[str] = field(default_factory=list)
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # seed -> [(step, eprewmean)]


# ---------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------


def ours_command(col: Column, game: str, seed: int, steps: int, run_root: Path) -> list[str]:
    return [sys.executable, str(script("train")), f"game={game}", "model=nature_cnn", f"seed={seed}",
            f"total_timesteps={steps}", f"study=learning_{col.name}", f"run_root={run_root}",
            "logger=none", "torch_threads=1", "env.num_threads=1", "log_every_s=600", *col.overrides]


def ours_curve(run_root: Path, col: Column, game: str, seed: int) -> list[tuple[int, float]]:
    import pandas as pd

    rows = pd.read_csv(RunLayout(run_root).cell(f"learning_{col.name}", game, "nature_cnn", seed).metrics)
    return [(int(s), float(r)) for s, r in zip(rows["global_step"], rows["charts/eprewmean"])]


# ---------------------------------------------------------------------------------------
# CleanRL
# ---------------------------------------------------------------------------------------


def cleanrl_python(venv: Path) -> Path:
    """The venv CleanRL's script runs in, made on first use (a few minutes)."""
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists():
        return python
    log(f"setting up CleanRL's venv in {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, CLEANRL_PACKAGES[0]], check=True)  # torch alone first: the CPU build
    subprocess.run([*pip, *CLEANRL_PACKAGES[1:]], check=True)
    import ale_py

    roms = Path(ale_py.__file__).parent / "roms"
    subprocess.run([str(venv / "bin" / "ale-import-roms"), str(roms)], check=True, capture_output=True)
    ready.touch()
    return python


def cleanrl_command(python: Path, checkout: Path, env_id: str, seed: int, steps: int) -> list[str]:
    return [str(python), str(checkout / "cleanrl" / "ppo_atari.py"), "--env-id", env_id, "--seed", str(seed),
            "--total-timesteps", str(steps), "--no-cuda", "--no-track", "--no-capture-video"]


def cleanrl_returns(logfile: Path) -> list[tuple[int, float]]:
    return [(int(m.group(1)), float(m.group(2))) for m in EPISODE.finditer(logfile.read_text())]


def windowed(returns: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(step, mean of the last WINDOW game scores) after every game, as ours logs it."""
    scores = [r for _, r in returns]
    return [(step, float(np.mean(scores[max(0, i + 1 - WINDOW): i + 1]))) for i, (step, _) in enumerate(returns)]


# ---------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------


def run_logged(command: list[str], logfile: Path, cwd: Path, pythonpath: Path | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    if pythonpath is not None:  # CleanRL imports its cleanrl_utils from the checkout
        env["PYTHONPATH"] = str(pythonpath)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(logfile, "w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        res = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(command[:3])} ... exited {res.returncode}; log: {logfile}")
    log(f"  finished in {time.perf_counter() - started:.0f} s: {logfile}")


def value_at(curve: list[tuple[int, float]], mark: int) -> float:
    """eprewmean of the last record at or before `mark` agent steps (nan before the first game)."""
    before = [v for s, v in curve if s <= mark]
    return before[-1] if before else math.nan


def summarise(columns: list[Column], steps: int) -> dict:
    marks = [round(steps * (i + 1) / MARKS) for i in range(MARKS)]
    out = {"marks": marks, "columns": {}}
    for col in columns:
        per_seed = {seed: [value_at(curve, m) for m in marks] for seed, curve in sorted(col.curves.items())}
        values = np.array(list(per_seed.values()), dtype=float)
        n = len(values)
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1) if n > 1 else np.zeros(len(marks))
        out["columns"][col.name] = {
            "kind": col.kind, "overrides": col.overrides, "seeds": per_seed,
            "mean": mean.tolist(), "std": std.tolist(), "sem": (std / math.sqrt(n)).tolist(),
        }
    return out


def table(summary: dict, game: str) -> str:
    marks = summary["marks"]
    head = "| " + game + " eprewmean | " + " | ".join(f"{m / 1000:.0f}k" for m in marks) + " |"
    lines = [head, "| --- |" + " ---: |" * len(marks)]
    for name, col in summary["columns"].items():
        lines.append(f"| **{name}**, mean +/- std ({len(col['seeds'])} seeds) | "
                     + " | ".join(f"{m:.2f} +/- {s:.2f}" for m, s in zip(col["mean"], col["std"])) + " |")
        for seed, values in col["seeds"].items():
            lines.append(f"| {name}, seed {seed} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def verdict(summary: dict) -> str | None:
    cols = summary["columns"]
    if "ours" not in cols or "cleanrl" not in cols:
        return None
    ours, peer = cols["ours"]["mean"][-1], cols["cleanrl"]
    bar = peer["mean"][-1] - peer["sem"][-1]
    ratio = ours / peer["mean"][-1] if peer["mean"][-1] else math.nan
    word = "PARITY" if ours >= bar else "BEHIND"
    return (f"{word}: at {summary['marks'][-1]:,} steps ours {ours:.2f} vs CleanRL {peer['mean'][-1]:.2f} "
            f"(ratio {ratio:.2f}; bar = CleanRL mean - 1 s.e. = {bar:.2f})")


def plot(summary: dict, columns: list[Column], game: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, summary["marks"][-1], 61)[1:]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for col in columns:
        curves = np.array([[value_at(c, g) for g in grid] for c in col.curves.values()], dtype=float)
        with warnings.catch_warnings():  # seeds known only at the marks (--add) are nan before the first
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
            std = np.nanstd(curves, axis=0)
        ax.plot(grid, mean, label=f"{col.name} ({len(curves)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("agent steps")
    ax.set_ylabel("eprewmean (last 100 games)")
    ax.set_title(f"{game}: Nature CNN, PPO with Baselines' Atari settings")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cleanrl", type=Path, help="a checkout of vwxyzjn/cleanrl (its cleanrl/ppo_atari.py)")
    p.add_argument("--game", default="breakout", help="a game of conf/game/ (default breakout)")
    p.add_argument("--seeds", type=int, default=3, help="N seeds on each side (default 3)")
    p.add_argument("--first-seed", type=int, default=1,
                   help="seeds run from here: K..K+N-1 (default 1); adds seeds to an earlier run's table")
    p.add_argument("--steps", type=int, default=300_000, help="agent steps per run (default 300,000)")
    p.add_argument("--variant", action="append", default=[], metavar='NAME="OVERRIDES"',
                   help="another column of ours with these Hydra overrides (repeatable)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (default: one per core)")
    p.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT.relative_to(REPO)})")
    p.add_argument("--add", type=Path, action="append", default=[], metavar="LEARNING_JSON",
                   help="an earlier run's learning.json (same game and steps): its seeds join this table")
    args = p.parse_args(argv)
    errors = []
    if args.game not in group_options("game"):
        errors.append(f"--game {args.game}: expected one of {', '.join(group_options('game'))}")
    if args.seeds < 1 or args.first_seed < 0 or args.steps < 8 * 128 or args.jobs < 1:
        errors.append("--seeds and --jobs must be >= 1, --first-seed >= 0, --steps >= 1024 (one rollout)")
    if args.cleanrl is not None and not (args.cleanrl / "cleanrl" / "ppo_atari.py").is_file():
        errors.append(f"--cleanrl {args.cleanrl}: no cleanrl/ppo_atari.py there (expected a checkout of vwxyzjn/cleanrl)")
    for v in args.variant:
        name = v.split("=", 1)[0]
        if "=" not in v or not re.fullmatch(r"[a-z0-9_]+", name) or name in ("ours", "cleanrl"):
            errors.append(f"--variant {v}: expected name=\"overrides\" with a new name of [a-z0-9_]")
    for path in args.add:
        try:
            earlier = json.loads(path.read_text())
            if earlier.get("game") != args.game or earlier.get("steps") != args.steps:
                errors.append(f"--add {path}: a table of {earlier.get('game')} at {earlier.get('steps')} steps, "
                              f"not {args.game} at {args.steps}")
        except (OSError, ValueError) as e:
            errors.append(f"--add {path}: not a learning.json ({e})")
    if errors:
        p.error("; ".join(errors))
    return args


def add_earlier(columns: list[Column], path: Path, steps: int) -> list[Column]:
    """The seeds of an earlier run's table (learning.json) added to `columns`, known only at
    its marks; a seed this run has is kept from this run. Columns it alone has are added."""
    earlier = json.loads(path.read_text())
    by_name = {c.name: c for c in columns}
    for name, col in earlier["columns"].items():
        if name not in by_name:
            by_name[name] = Column(name, col["kind"], list(col.get("overrides", [])))
            columns.append(by_name[name])
        for seed, values in col["seeds"].items():
            by_name[name].curves.setdefault(int(seed), list(zip(earlier["marks"], values)))
    return columns


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    game_cfg = game_config(args.game)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    run_root = args.out / "runs"
    columns = [Column("ours", "ours")]
    columns += [Column(v.split("=", 1)[0], "ours", shlex.split(v.split("=", 1)[1])) for v in args.variant]
    if args.cleanrl is None:
        log("CleanRL column left out: it needs a checkout of vwxyzjn/cleanrl "
            "(make bench-learning CLEANRL=<path to the checkout>)")
    else:
        columns.insert(1, Column("cleanrl", "cleanrl"))
        python = cleanrl_python(args.out / "cleanrl-venv")
    jobs = []  # (column, seed, command, logfile, cwd, done marker or None), seed by seed
    for seed in seeds:
        for col in columns:
            if col.kind == "ours":
                logfile = args.out / "logs" / f"{col.name}_{args.game}_seed{seed}.log"
                jobs.append((col, seed, ours_command(col, args.game, seed, args.steps, run_root), logfile, REPO, None))
            else:
                logfile = args.out / "logs" / f"cleanrl_{args.game}_{args.steps}_seed{seed}.log"
                command = cleanrl_command(python, args.cleanrl.resolve(), str(game_cfg.env_id), seed, args.steps)
                jobs.append((col, seed, command, logfile, args.out / "cleanrl-work", logfile.with_suffix(".done")))
    (args.out / "cleanrl-work").mkdir(parents=True, exist_ok=True)

    def run(job) -> None:
        col, seed, command, logfile, cwd, done = job
        if done is not None and done.exists():
            return
        log(f"{col.name} seed {seed}: running ({logfile})")
        run_logged(command, logfile, cwd, None if col.kind == "ours" else args.cleanrl.resolve())
        if done is not None:
            done.touch()

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(run, jobs))

    for col, seed, _, logfile, _, _ in jobs:
        if col.kind == "ours":
            col.curves[seed] = ours_curve(run_root, col, args.game, seed)
        else:
            col.curves[seed] = windowed(cleanrl_returns(logfile))
    for path in args.add:
        columns = add_earlier(columns, path, args.steps)
    summary = summarise(columns, args.steps)
    summary.update(game=args.game, steps=args.steps)
    text = table(summary, args.game)
    line = verdict(summary)
    print(text)
    if line:
        print(line)
    (args.out / "learning.md").write_text(text + "\n" + (line + "\n" if line else ""))
    (args.out / "learning.json").write_text(json.dumps(summary, indent=1))
    plot(summary, columns, args.game, args.out / "learning.png")
    log(f"wrote {args.out / 'learning.md'}, learning.json, learning.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
