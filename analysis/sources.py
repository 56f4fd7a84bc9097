"""Where the analysis reads a study from: its run directories (the default) or W&B."""

from __future__ import annotations

from pathlib import Path

from analysis.load import FileSource
from analysis.wandb_source import WandbSource


def open_source(spec: str, run_root: Path | str, study: str) -> FileSource | WandbSource:
    """`files` (the default) or `wandb:<entity>/<project>`."""
    if spec in (None, "", "files"):
        return FileSource(run_root, study)
    if spec.startswith("wandb:"):
        return WandbSource(spec.removeprefix("wandb:"), study, files=FileSource(run_root, study))
    raise ValueError(f"--source {spec!r}: expected 'files' or 'wandb:<entity>/<project>'")
