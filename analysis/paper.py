"""The paper's published numbers (data/paper_values/), for side-by-side comparison.

Read from data/paper_values/ by default; `--paper-values`
points elsewhere. When they are not there, tables are built without the comparison.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fls.facts import REPO

DEFAULT_DIR = REPO / "data" / "paper_values"


class PaperValues:
    def __init__(self, directory: Path | str | None = None):
        self.dir = Path(directory) if directory is not None else DEFAULT_DIR

    def table(self, name: str) -> pd.DataFrame | None:
        """`table4` or `table5` as published (config names for models and games), or None."""
        path = self.dir / f"{name}.csv"
        if not path.is_file():
            return None
        return pd.read_csv(path)

    def missing_note(self, name: str) -> str:
        return f"Paper values not found ({self.dir / f'{name}.csv'}); comparison skipped (--paper-values DIR)."
