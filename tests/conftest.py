"""Shared test fixtures: the repository and the data it ships (data/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ATARI_HEAD_SAMPLE = REPO / "data" / "atari_head_sample"
PYTHON = sys.executable

# Tests never talk to W&B's servers and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def atari_head_sample() -> Path:
    """The real Atari-HEAD excerpt the repository ships (data/atari_head_sample/PROVENANCE.md)."""
    return ATARI_HEAD_SAMPLE
