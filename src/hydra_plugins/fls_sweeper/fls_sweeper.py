"""Hydra's basic sweeper plus what a study needs.

- `seed=0-4` is an inclusive integer range (also inside lists: `seed=0-2,9`). Hydra's own
  `seed=1,9,17` and `seed=range(0,5)` keep working. Which keys take ranges is
  `hydra.sweeper.range_keys`. The grid (fls.grid) is shared with the launchers' job
  records, the studies and sweep-status.
- Preflight: every cell's config is composed and checked (`hydra.sweeper.preflight`, a
  dotted path to a function that raises on a bad config) before any cell is launched, so
  bad input fails with one line and writes nothing.
- A failed cell never stops the others: every batch runs to the end, then the sweep
  reports the failed cells in one summary and exits non-zero.
- `pack=seeds`: the cells that differ only in seed are one job (`pack.seeds=[...]`,
  fls.grid.pack_seeds), trained or evaluated together in one process (fls.seed_pack).
"""


import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from fls.cli import say
from fls.errors import CellsFailed, Refusal, Skipped, SweepError
from fls.grid import cell_overrides, pack_seeds, packed_seeds
from fls.rundir import SweepDir

log = logging.getLogger(__name__)


@dataclass
class FlsSweeperConf:
    _target_: str = "hydra_plugins.fls_sweeper.fls_sweeper.FlsSweeper"
    # cells per launch batch (null: all at once)
    max_batch_size: Optional[int] = None
    # sweep parameters from configs (experiment files), as in Hydra's basic sweeper
    params: Optional[Dict[str, str]] = None
    # keys whose values may be inclusive integer ranges `lo-hi`
    range_keys: List[str] = field(default_factory=lambda: ["seed"])
    # dotted path of `check(cfg)`, run on every composed cell config before launching
    preflight: Optional[str] = None


ConfigStore.instance().store(group="hydra/sweeper", name="fls", node=FlsSweeperConf, provider="fls-sweeps")


SHOWN = 10  # skipped cells listed by name in a sweep's summary


def _skips(value: Any) -> List[Skipped]:
    """The cells of one job's return value that had nothing to use (a packed job returns a
    value per cell)."""
    if isinstance(value, Skipped):
        return [value]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, Skipped)]
    return []


def import_callable(path: str) -> Callable[[DictConfig], Any]:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise SweepError(f"hydra.sweeper.preflight={path}: cannot import it ({e})") from e


class FlsSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: Optional[int] = None,
        params: Optional[Dict[str, str]] = None,
        range_keys: Sequence[str] = ("seed",),
        preflight: Optional[str] = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.range_keys = list(range_keys)
        self.preflight = import_callable(preflight) if preflight else None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every cell (as Hydra does) and run the preflight check on it."""
        assert self.hydra_context is not None and self.config is not None
        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )
            if self.preflight is not None:
                try:
                    self.preflight(cfg)
                except ValueError as e:
                    raise SweepError(f"{e} (cell: {' '.join(overrides)})") from e

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return self._sweep(arguments)
        except Refusal as e:
            # One line and its exit status, without Hydra's hint about stack traces.
            raise SystemExit(say(e)) from None

    def _sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None

        cells = cell_overrides(self._parse_config() + list(arguments), self.range_keys,
                               self.hydra_context.config_loader)
        if OmegaConf.select(self.config, "pack.by") == "seeds":
            cells = pack_seeds(cells)
        self.overrides = list(self.split_overrides_to_chunks(cells, self.max_batch_size))

        # Check every batch before launching any, so a bad value anywhere writes nothing.
        for batch in self.overrides:
            self.validate_batch_is_legal(batch)
        launcher_check = getattr(self.launcher, "preflight", None)
        if launcher_check is not None:
            try:
                launcher_check()
            except ValueError as e:
                raise SweepError(str(e)) from e

        sweep_dir = SweepDir(self.config.hydra.sweep.dir)
        sweep_dir.path.mkdir(parents=True, exist_ok=True)
        # train's is the study's grid (sweep-status reads it); the other apps' go beside it
        OmegaConf.save(self.config, sweep_dir.config_of(str(self.config.hydra.job.name)))

        returns: List[Sequence[JobReturn]] = []
        failed: List[JobReturn] = []
        skipped: List[str] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            failed += [r for r in results if r.status == JobStatus.FAILED]
            skipped += [s.reason for r in results if r.status == JobStatus.COMPLETED for s in _skips(r.return_value)]
            initial_job_idx += len(batch)
            returns.append(results)

        def cells(job: Sequence[str]) -> int:  # a packed job runs several
            return len(packed_seeds(job) or [None])

        total = sum(cells(job) for b in self.overrides for job in b)
        if skipped:
            shown = skipped[:SHOWN] + ([f"... and {len(skipped) - SHOWN} more"] if len(skipped) > SHOWN else [])
            log.warning("%d of %d cells skipped, with nothing to use:\n%s", len(skipped), total,
                        "\n".join(f"  {line}" for line in shown))
        if failed:
            lines = [
                f"  {' '.join(r.overrides or [])}: {type(r._return_value).__name__}: {r._return_value}"
                for r in failed
            ]
            # a packed job names its refused cells (CellsRefused); a dead one lost them all
            n_failed = sum(len(getattr(r._return_value, "cells", None) or [None] * cells(r.overrides or []))
                           for r in failed)
            log.error("%d of %d cells failed:\n%s", n_failed, total, "\n".join(lines))
            # a refusal's whole reason is its line above; anything else left a traceback in the cell's log
            crashed = [r for r in failed if not isinstance(r._return_value, Refusal)]
            where = (f"tracebacks in each failed cell's {self.config.hydra.job.name}.log, or `make sweep-status`"
                     if crashed else "each one's reason is listed above")
            raise CellsFailed(f"{n_failed} of {total} cells failed (the others finished); {where}")
        return returns
