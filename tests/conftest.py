"""Shared test fixtures: the repository and the data it ships (data/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ATARI_HEAD_SAMPLE = REPO / "data" / "atari_head_sample"
PYTHON = sys.executable

# Tests never talk to W&B's servers and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# With pytest-xdist (`make test` runs one worker per core), every process the tests start
# takes one CPU thread: two workers' torch thread pools on two cores would spin against
# each other and run several times slower than either alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def atari_head_sample() -> Path:
    """The real Atari-HEAD excerpt the repository ships (data/atari_head_sample/PROVENANCE.md)."""
    return ATARI_HEAD_SAMPLE


@pytest.fixture(scope="session")
def mspacman_smoke_runs(tmp_path_factory) -> Path:
    """Two tiny real Ms. Pac-Man cells of study `smoke`, trained once per session: sparse_fls and
    nature_cnn, seed 1, each with its 3 snapshots (updates 0, 1, 2: tests/test_checks.py).
    Read-only: modules that write into cells copy it (`copy_runs`)."""
    root = tmp_path_factory.mktemp("mspacman_smoke")
    res = subprocess.run([PYTHON, "src/train.py", "-m", "experiment=smoke", "game=mspacman",
                          "model=sparse_fls,nature_cnn", "snapshots=3", f"run_root={root}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def copy_runs(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
