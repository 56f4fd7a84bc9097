"""Writing an artefact: Markdown (printed and saved), tidy CSV, LaTeX; figures as PNG + SVG.

A table artefact is built once as numbers (`Artefact.data`, one row per cell: the CSV) and
as display strings (`Artefact.sections`, the wide tables of the paper's layout). Display
strings use two conventions that each format renders its own way: `**x**` is bold, and
`—` marks a cell with no result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fls.rundir import artefact_file

MISSING = "—"
PM = "±"


@dataclass
class Artefact:
    name: str
    """the paper's name for it: table3, fig3, ...; also the output files' stem"""
    title: str
    data: pd.DataFrame
    """tidy numbers, one row per table cell: the CSV"""
    sections: list[tuple[str | None, pd.DataFrame]]
    """(heading, display table of strings) in reading order"""
    notes: list[str] = field(default_factory=list)
    """what is missing or partial, and how to read the table"""


@dataclass
class Skipped:
    """An artefact the study has no data for: the one line that says why (printed, nothing written)."""

    reason: str
    name: str | None = None
    """the artefact's own name when it differs from the one asked for (efficiency_<game>)"""


@dataclass
class FigureArtefact:
    name: str
    """the paper's name for it: fig3, fig8, ...; also the output files' stem"""
    title: str
    figure: "matplotlib.figure.Figure"
    data: pd.DataFrame
    """what is plotted, one row per point or curve sample: the CSV"""
    notes: list[str] = field(default_factory=list)
    """what is missing or partial, and how to read the figure"""


def fmt_number(x: float, digits: int | None = None) -> str:
    """Scores vary from 0.3 to 50,000 across games: keep about three significant digits."""
    if x is None or not math.isfinite(x):
        return MISSING
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 1 else 2
    return f"{x:,.{digits}f}"


def fmt_mean_std(mean: float, std: float, digits: int | None = None) -> str:
    if mean is None or not math.isfinite(mean):
        return MISSING
    if digits is None:  # one precision for both, chosen by the mean
        digits = 0 if abs(mean) >= 100 else 1 if abs(mean) >= 1 else 2
    if std is None or not math.isfinite(std):
        return fmt_number(mean, digits)
    return f"{fmt_number(mean, digits)} {PM} {fmt_number(std, digits)}"


def bold(text: str) -> str:
    return f"**{text}**"


# Markdown


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub pipe table, padded so that it also reads well in a terminal."""
    header = [str(c) for c in table.columns]
    rows = [[_md_cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    numeric = [i > 0 and all(_NUMERIC.match(r[i]) for r in rows if r[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


_NUMERIC = re.compile(r"^(\*\*)?[-+]?\d|^—|^n/a$")  # right-aligned: numbers, missing marks


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(artefact: Artefact) -> str:
    parts = [f"## {artefact.title}", ""]
    for heading, table in artefact.sections:
        if heading:
            parts += [f"### {heading}", ""]
        parts += [markdown_table(table), ""]
    parts += [f"- {note}" for note in artefact.notes]
    return "\n".join(parts).rstrip() + "\n"


# LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_LATEX_SYMBOLS = {PM: r"$\pm$", MISSING: "---", "·": r"$\cdot$", "×": r"$\times$", "≥": r"$\geq$", "†": r"$^\dagger$"}


def latex_cell(value: object) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(value))
    text = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", text)
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def latex(artefact: Artefact) -> str:
    """One booktabs tabular; several sections share its columns, each under a spanning heading."""
    widths = {len(t.columns) for _, t in artefact.sections}
    if len(widths) != 1:
        raise ValueError(f"{artefact.name}: sections differ in width; cannot share one tabular")
    (ncols,) = widths
    lines = [
        "% " + f"{artefact.title} (python -m analysis {artefact.name}); needs \\usepackage{{booktabs}}",
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{l" + "r" * (ncols - 1) + "}", r"\toprule",
        " & ".join(latex_cell(c) for c in artefact.sections[0][1].columns) + r" \\",
    ]
    for heading, table in artefact.sections:
        lines.append(r"\midrule")
        if heading:
            lines += [rf"\multicolumn{{{ncols}}}{{c}}{{\emph{{{latex_cell(heading)}}}}} \\", r"\midrule"]
        lines += [" & ".join(latex_cell(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_cell(artefact.title)}}}",
              rf"\label{{tab:{artefact.name}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(artefact: Artefact, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [artefact_file(out_dir, artefact.name, ext) for ext in ("md", "csv", "tex")]
    paths[0].write_text(markdown(artefact))
    artefact.data.to_csv(paths[1], index=False)
    paths[2].write_text(latex(artefact))
    return paths


def write_figure(figure, name: str, out_dir: Path, data: pd.DataFrame | None = None) -> list[Path]:
    """PNG at the figure's own size (no tight bbox: pixels = figsize x dpi), SVG, and the plotted data as CSV."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [artefact_file(out_dir, name, "png"), artefact_file(out_dir, name, "svg")]
    figure.savefig(paths[0], metadata={"Software": None})
    figure.savefig(paths[1], metadata={"Date": None})  # no timestamp: a re-run yields the same file
    plt.close(figure)
    if data is not None:
        paths.append(artefact_file(out_dir, name, "csv"))
        data.to_csv(paths[-1], index=False)
    return paths
