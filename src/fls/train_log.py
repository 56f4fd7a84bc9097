"""Where training metrics go: the cell's metrics.csv, W&B, and the console.

metrics.csv is the record the analysis package reads: one row per PPO update, appended
and flushed as each update ends. On resume it is cut back to the checkpoint's update
(atomically), so a kill never leaves duplicate or orphan rows; a last row a kill or a full
disk tore (no line end) is not a row, and goes too.

W&B is optional and offline by default (no prompt, no network). The run is named
`<game>/<model>/seed_<k>`, grouped by `<game>/<model>`, carries the flattened config, and
its charts use game frames as the x-axis, so grouping runs by `model` draws Figure 3's
seed bands. A resumed cell continues the same W&B run id.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from fls.durable import atomic_write_text, durable_step, write_refused
from fls.errors import CellDamaged
from fls.rundir import EPREWMEAN, METRIC_COLUMNS as COLUMNS, X_AXIS, CellDir

log = logging.getLogger(__name__)


REPAIR = "remove that line (rows after the checkpoint are dropped on resume anyway), or overwrite=true"


class MetricsCSV:
    """Append-only metrics file with a fixed header."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: io.TextIOWrapper | None = None
        self.torn = ""  # the last line, when a kill or a full disk cut it short (read by rows())

    def truncate_after(self, update: int) -> int:
        """Drop rows past `update` (written after the last checkpoint) and a torn last row.
        Returns rows kept."""
        rows = self.rows()
        kept = [r for r in rows if int(r["update"]) <= update]
        if len(kept) != len(rows) or self.torn:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(self.path, buf.getvalue())
            if self.torn:
                log.warning("metrics.csv: dropped its torn last line %r (a write cut short)", self.torn)
                self.torn = ""
            if len(kept) != len(rows):
                log.info("metrics.csv: dropped %d rows logged after the checkpoint", len(rows) - len(kept))
        return len(kept)

    def rows(self) -> list[dict[str, str]]:
        """The whole rows written so far; CellDamaged names the file and the first bad row. A
        last line without its line end (torn by a kill or a full disk) is left out, in `torn`."""
        self.torn = ""
        if not self.path.exists():
            return []
        try:
            text = self.path.read_bytes().decode()
        except UnicodeDecodeError as e:
            raise CellDamaged(f"{self.path}: damaged ({e}); {REPAIR}") from None
        if text and not text.endswith("\n"):
            text, _, self.torn = text.rpartition("\n")
            text += "\n" if text else ""
        try:
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise CellDamaged(f"{self.path}: damaged ({e}); {REPAIR}") from None
        for line, row in enumerate(rows, start=2):
            value = row.get("update")
            if value is None or not value.isdigit() or None in row or None in row.values():
                raise CellDamaged(f"{self.path}: line {line} is not a metrics row (update={value!r}); {REPAIR}")
        return rows

    def write(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:  # a name the file has no column for: fls.rundir.METRIC_COLUMNS names them all
            raise ValueError(f"metrics row: no column {sorted(unknown)} in fls.rundir.METRIC_COLUMNS")
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        line = buf.getvalue()
        try:
            if self._file is None:
                new = not self.path.exists() or self.path.stat().st_size == 0
                self._file = self.path.open("a", newline="")
                if new:
                    self._file.write(",".join(COLUMNS) + "\n")
                    self._file.flush()
            durable_step("append", self.path, torn=lambda: self._append(line[: len(line) // 2]))
            self._append(line)
        except OSError as e:
            raise write_refused(self.path, e) from None

    def _append(self, text: str) -> None:
        assert self._file is not None
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # a flush that a full disk refused: the row was reported when written
                pass
            self._file = None


def _fmt(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class WandbRun:
    """The W&B side: one run per cell, continued on resume (a packed job holds several)."""

    def __init__(self, logger_cfg: Any, cell: CellDir, config: dict[str, Any], run_id: str | None,
                 job_type: str = "train"):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        c = cell.cell
        cell.wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            mode=logger_cfg.mode,
            dir=str(cell.path),  # wandb adds its own wandb/ folder
            id=run_id,
            resume="allow",
            # the cells of a packed job have one W&B run each, open at once in one process
            reinit="create_new",
            name=c.key,
            group=f"{c.game}/{c.model}",
            # train; evaluate and saliency resume the run with their results (fls.wandb_results)
            job_type=job_type,
            tags=[c.study, c.game, c.model, f"seed_{c.seed}", *logger_cfg.tags],
            config=flatten(config),
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric(X_AXIS)
        for prefix in ("charts/*", "losses/*", "global_step", "update"):
            self.run.define_metric(prefix, step_metric=X_AXIS)
        self.run.define_metric(EPREWMEAN, step_metric=X_AXIS, summary="max")

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if v is not None and not _isnan(v)})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class Progress:
    """A tqdm bar on a terminal; plain periodic lines in batch jobs (SLURM logs)."""

    def __init__(self, total_steps: int, start_step: int, every_s: float, name: str, position: int = 0):
        self.interactive = sys.stderr.isatty()
        self.every_s = every_s
        self.name = name
        self.last = 0.0
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            # position: one line per cell of a packed job
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", unit_scale=True,
                            desc=name, dynamic_ncols=True, position=position)
        self.step = start_step
        self.total = total_steps

    def update(self, step: int, row: dict[str, Any]) -> None:
        eprew = row.get(EPREWMEAN)
        text = f"SPS={row['charts/SPS']:.0f} eprewmean={'-' if _isnan(eprew) else f'{eprew:.2f}'}"
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix_str(text, refresh=False)
        elif time.monotonic() - self.last >= self.every_s or step >= self.total:
            self.last = time.monotonic()
            log.info("%s step %d/%d (%.0f%%) %s", self.name, step, self.total, 100 * step / self.total, text)
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrainLog:
    """Each update's row, to its three sinks: metrics.csv (cut back to the checkpoint on
    resume), W&B when `logger=wandb`, and the progress bar or log lines."""

    def __init__(self, cfg: Any, cell: CellDir, config: dict[str, Any], *, start_update: int, start_step: int,
                 total_steps: int, wandb_id: str | None, position: int = 0):
        self.metrics = MetricsCSV(cell.metrics)
        self.metrics.truncate_after(start_update)
        self.wandb = WandbRun(cfg.logger, cell, config, wandb_id) if cfg.logger.name == "wandb" else None
        self.progress = Progress(total_steps, start_step, cfg.log_every_s, cell.cell.key, position)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb else None

    def write(self, row: dict[str, Any]) -> None:
        self.metrics.write(row)
        if self.wandb:
            self.wandb.log(row)
        self.progress.update(int(row["global_step"]), row)

    def close(self, exit_code: int = 0) -> None:
        self.progress.close()
        self.metrics.close()
        if self.wandb:
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None
