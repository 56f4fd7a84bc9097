"""The numbers the README shows are the output of the commands it names.

`make readme-numbers` reruns them (the demo study, the saliency demo, the post-hoc demo) and
keeps their tables in docs/demo/. Each README block of numbers follows a marker naming its
file, `<!-- numbers: docs/demo/<file>.md -->`, and holds that file's table rows. The slow test
reruns the commands from scratch and finds the same tables: the demo is deterministic on one
machine (one torch thread, seeded envs and bootstraps; another CPU's kernels may round the
training differently).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

MARKER = re.compile(r"<!-- numbers: (docs/demo/[\w.]+\.md) -->")


def table_rows(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.lstrip().startswith("|")]


def readme_blocks(readme: str) -> dict[str, list[str]]:
    """Each marker's file and the table rows of the block after it (to the next blank line
    outside a code fence)."""
    blocks = {}
    lines = readme.splitlines()
    for i, line in enumerate(lines):
        m = MARKER.search(line)
        if not m:
            continue
        rows, fenced = [], False
        for after in lines[i + 1:]:
            if after.startswith("```"):
                fenced = not fenced
                if not fenced:
                    break
                continue
            if not after.strip() and not fenced and rows:
                break
            rows += table_rows(after)
        blocks[m.group(1)] = rows
    return blocks


def test_every_number_block_of_the_readme_is_its_commands_output():
    blocks = readme_blocks((REPO / "README.md").read_text())
    kept = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs" / "demo").glob("*.md"))
    assert sorted(blocks) == kept, "every docs/demo/ table is shown, and every shown block names its file"
    for name, rows in blocks.items():
        assert rows == table_rows((REPO / name).read_text()), f"README's block under {name} is not that file's tables"


def test_a_block_that_differs_from_its_file_is_found(tmp_path):
    real = (REPO / "docs" / "demo" / "demo_table3.md").read_text()
    rows = table_rows(real)
    changed = rows[:2] + [rows[2].replace("1", "7", 1) if "1" in rows[2] else rows[2] + " x"] + rows[3:]
    readme = "\n".join(["<!-- numbers: docs/demo/demo_table3.md -->", "```", *changed, "```", ""])
    assert readme_blocks(readme)["docs/demo/demo_table3.md"] != rows


@pytest.mark.slow
def test_the_commands_give_the_numbers_again(tmp_path):
    """About 15 minutes on 2 cores: the whole demo, the saliency demo and the post-hoc demo."""
    out = tmp_path / "numbers"
    res = subprocess.run(["make", "-s", "readme-numbers", f"README_RUNS={tmp_path / 'runs'}", f"README_NUMBERS={out}"],
                         cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    for kept in sorted((REPO / "docs" / "demo").glob("*.md")):
        assert table_rows((out / kept.name).read_text()) == table_rows(kept.read_text()), kept.name
