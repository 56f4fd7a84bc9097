"""A sweep's grid: its overrides expanded into cells, as the sweeper launches them.

The sweeper (hydra_plugins/fls_sweeper) launches the grid, the launchers
(hydra_plugins/fls_launchers) record which cell each job runs, and a study (studies/study.py)
and sweep-status (studies/status.py) rebuild the grid of a sweep; all of them go through
here, so they agree on what a sweep's cells are. Outside hydra_plugins/, whose modules
Hydra's plugin scan executes again in place.
"""

import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from fls.errors import SweepError
from fls.rundir import Cell, cell_from_config

INT = re.compile(r"^[+-]?\d+$")
PACK_SEEDS = "pack.seeds="
RANGE = re.compile(r"^([+-]?\d+)-([+-]?\d+)$")


def expand_token(key: str, token: str) -> List[str]:
    """One element of a `key=` value: an integer stays, `lo-hi` becomes lo..hi."""
    token = token.strip()
    if INT.match(token):
        return [str(int(token))]
    m = RANGE.match(token)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise SweepError(
                f"{key}={token}: a range runs from low to high (inclusive), e.g. {key}={hi}-{lo}"
            )
        return [str(k) for k in range(lo, hi + 1)]
    raise SweepError(
        f"{key}={token}: expected an integer, an inclusive range like {key}=0-4, "
        f"a list like {key}=1,9,17 or {key}=range(0,5)"
    )


def expand_ranges(arguments: Sequence[str], range_keys: Sequence[str]) -> List[str]:
    """Rewrite `seed=0-4` as `seed=0,1,2,3,4` before Hydra parses the overrides."""
    out = []
    for arg in arguments:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if not sep or bare_key not in range_keys or "(" in value or "[" in value:
            out.append(arg)  # Hydra's own syntax: range(...), choice(...), [..] lists
            continue
        values = [v for token in value.split(",") for v in expand_token(bare_key, token)]
        out.append(f"{key}={','.join(values)}")
    return out


def cell_overrides(arguments: Sequence[str], range_keys: Sequence[str], config_loader: Any = None) -> List[List[str]]:
    """Every cell of a sweep as its override list, in launch order.

    `arguments`: the sweeper's params as `key=value`, then the command line's overrides;
    `range_keys` take inclusive ranges; the rest is Hydra's basic sweeper (a cross product).
    `config_loader` lets Hydra's grammar expand group globs; without it they are refused.
    """
    parser = OverridesParser.create(config_loader=config_loader)
    overrides = parser.parse_overrides(expand_ranges(arguments, range_keys))
    return BasicSweeper.split_arguments(overrides, None)[0]


def cells_of(overrides: Sequence[Sequence[str]], compose: Callable[[List[str]], Any]) -> List[Optional[Cell]]:
    """The cell each override list runs, or None where the composed config names no cell.

    `compose(overrides)` composes one cell's config; its errors are the caller's. Cells that
    differ only in seed share one composition: composing costs ~60 ms, and a paper sweep has
    450 cells but 90 (game, model) pairs.
    """
    composed: Dict[Tuple[str, ...], Optional[Cell]] = {}
    cells: List[Optional[Cell]] = []
    for one in overrides:
        seed = next((o.split("=", 1)[1] for o in one if o.startswith("seed=")), None)
        rest = tuple(o for o in one if not o.startswith("seed="))
        if rest not in composed:
            cfg = compose(list(one))
            try:
                composed[rest] = cell_from_config(cfg).cell
            except Exception:  # an app whose config has no cell (study, game, model, seed)
                composed[rest] = None
        cell = composed[rest]
        if cell is not None and seed is not None:
            cell = Cell(cell.study, cell.game, cell.model, int(seed))
        cells.append(cell)
    return cells


def pack_seeds(cells: Sequence[Sequence[str]]) -> List[List[str]]:
    """The jobs of a sweep under pack=seeds: the cells whose overrides differ only in `seed=`
    become one job, `seed=<first> pack.seeds=[<all>]`, in the order of their first cell; a
    cell with no partner stays a job of its own. fls.seed_pack trains each as it would alone."""
    jobs: List[Tuple[List[str], List[str]]] = []  # (overrides but seed, seeds)
    where: Dict[Tuple[str, ...], int] = {}
    for one in cells:
        seeds = [o.split("=", 1)[1] for o in one if o.startswith("seed=")]
        rest = [o for o in one if not o.startswith("seed=")]
        if len(seeds) != 1:  # no seed override: nothing to pack it with
            jobs.append((list(one), []))
        elif tuple(rest) in where:
            jobs[where[tuple(rest)]][1].append(seeds[0])
        else:
            where[tuple(rest)] = len(jobs)
            jobs.append((rest, seeds))
    packed = []
    for rest, seeds in jobs:
        if len(seeds) > 1:
            rest = [*rest, f"{PACK_SEEDS}[{','.join(seeds)}]"]
        packed.append([*rest, f"seed={seeds[0]}"] if seeds else rest)
    return packed


def packed_seeds(job: Sequence[str]) -> Optional[List[str]]:
    """The seeds of a packed job's overrides (pack_seeds), or None for a job of one cell."""
    for o in job:
        if o.startswith(PACK_SEEDS):
            return [s.strip() for s in o[len(PACK_SEEDS):].strip("[]").split(",") if s.strip()]
    return None


def job_cells(jobs: Sequence[Sequence[str]], compose: Callable[[List[str]], Any]) -> List[List[Cell]]:
    """The cells each job runs (several for a packed job, none for an app without cells)."""
    expanded: List[List[str]] = []
    owners: List[int] = []
    for j, job in enumerate(jobs):
        seeds = packed_seeds(job)
        if seeds is None:
            expanded.append(list(job))
            owners.append(j)
            continue
        rest = [o for o in job if not o.startswith("seed=")]
        for seed in seeds:
            expanded.append([*rest, f"seed={seed}"])
            owners.append(j)
    out: List[List[Cell]] = [[] for _ in jobs]
    for j, cell in zip(owners, cells_of(expanded, compose)):
        if cell is not None:
            out[j].append(cell)
    return out
