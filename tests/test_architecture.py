"""The import direction of docs/architecture.md, held to the code: every module has its row,
imports only what its row names, the rows name only modules below them, and no import runs
in a circle. The imports are read with ast (lazy ones inside functions too), nothing is run."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

DOC = REPO / "docs" / "architecture.md"
# where our modules live: folder of the import root, and the packages under it
PACKAGES = {REPO / "src": ("fls", "hydra_plugins"), REPO: ("analysis", "studies", "bench")}
SCRIPTS = REPO / "src"  # src/<app>.py: the entry scripts, named by their path


@dataclass
class Row:
    index: int
    module: str  # a module, a script's path, or a folder: `pkg.*`
    allowed: list[str]

    def covers(self, module: str) -> bool:
        return covered(self.module, module)


def covered(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        package = pattern[:-2]
        return module == package or module.startswith(package + ".")
    return module == pattern


def rows(text: str) -> list[Row]:
    """The table of docs/architecture.md whose header is `| layer | module | holds | may import |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\| layer \| module \| holds \| may import \|$", line))
    found = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        module = re.findall(r"`([^`]+)`", cells[1])
        assert len(module) == 1, f"docs/architecture.md: one module per row: {line}"
        found.append(Row(len(found), module[0], re.findall(r"`([^`]+)`", cells[3])))
    return found


def modules() -> dict[str, Path]:
    """Every module of ours by its import name (the entry scripts by their path)."""
    found = {f"src/{p.name}": p for p in sorted(SCRIPTS.glob("*.py"))}
    for root, packages in PACKAGES.items():
        for package in packages:
            for path in sorted((root / package).rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports, wherever in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def ours(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {ours(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in known else ours(base))
    return found - {None, name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def is_face(path: Path) -> bool:
    """A package's __init__.py that imports nothing: it needs no row."""
    tree = ast.parse(path.read_text())
    return path.name == "__init__.py" and not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))


def row_of(table: list[Row], module: str) -> Row | None:
    matches = [r for r in table if r.covers(module)]
    return matches[0] if len(matches) == 1 else None


def violations(table: list[Row], edges: dict[str, set[str]]) -> list[str]:
    """What breaks the declared direction: an import its row does not name, or a row naming a
    module that is not below it."""
    out = []
    for row in table:
        for allowed in row.allowed:
            if covered(row.module, allowed) or allowed == row.module:
                continue  # a folder row within itself
            targets = [r for r in table if r.covers(allowed.removesuffix(".*")) or covered(allowed, r.module.removesuffix(".*"))]
            if not targets:
                out.append(f"{row.module}: may import {allowed}, which has no row")
            elif any(t.index <= row.index for t in targets):
                out.append(f"{row.module}: may import {allowed}, which is not below it (an import that runs back up)")
    for module, targets in sorted(edges.items()):
        row = row_of(table, module)
        if row is None:
            continue  # test_every_module_has_one_row says so
        for target in sorted(targets):
            if covered(row.module, target) and row.module.endswith(".*"):
                continue
            if not any(covered(allowed, target) for allowed in row.allowed):
                out.append(f"{module} imports {target}: its row in docs/architecture.md does not allow it")
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import loops (one path around each strongly connected part of the graph)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


TABLE = rows(DOC.read_text())
GRAPH = graph()


def test_every_module_has_one_row():
    missing = [m for m, p in modules().items() if not is_face(p) and row_of(TABLE, m) is None]
    assert not missing, f"modules without exactly one row in docs/architecture.md: {missing}"
    stale = [r.module for r in TABLE if not any(r.covers(m) for m in GRAPH)]
    assert not stale, f"rows of docs/architecture.md for modules that do not exist: {stale}"


def test_imports_run_the_declared_way():
    assert violations(TABLE, GRAPH) == []


def test_no_import_circle():
    assert circles(GRAPH) == []


@pytest.mark.parametrize("module, target", [
    ("fls.rundir", "fls.training_cell"),  # the layout reaching up to the trainer
    ("fls.config", "fls.zoo.further"),  # the old circle: config -> zoo -> evaluation -> config
    ("fls.errors", "fls.facts"),
])
def test_a_back_import_is_caught(module, target):
    # the check itself: the code as it is, plus one import that runs back up
    edges = {m: set(t) for m, t in GRAPH.items()}
    edges[module].add(target)
    assert f"{module} imports {target}: its row in docs/architecture.md does not allow it" in violations(TABLE, edges)
    # and declaring it does not make it right: the row would name a module above it
    table = [Row(r.index, r.module, [*r.allowed, target] if r.module == module else r.allowed) for r in TABLE]
    assert any(v.startswith(f"{module}: may import {target}, which is not below it") for v in violations(table, edges))


def test_a_circle_is_caught():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c", "a"]]
