"""The one place that knows the run-directory layout.

Training, evaluation, saliency metrics, sweep status and analysis all find their files
through this module. A cell's directory is a pure function of (study, game, model, seed)
so a re-run or a requeued job lands in its own work:

    <run_root>/<study>/<game>/<model>/seed_<k>/
        config.yaml           composed config, written once when the cell starts
        status.json           state (running / done / failed), step, host, job id, W&B id
        metrics.csv           one row per PPO update, append-only
        checkpoint.pt         latest checkpoint (written atomically)
        train.log             the trainer's log, appended across resumes
        wandb/                the offline W&B run(s)
        eval/<eval_game>/     games.parquet (one row per game), summary.json;
                              previous/<time>/: evaluations with other settings, kept
        video/<eval_game>/    MP4s and contact sheets of the model's own map;
                              <method>/: of a post-hoc map (eval.video.map=<method>)
        saliency/             Atari-HEAD metrics: trials.csv (per trial and preset),
                              frames/<preset>/ (per frame)

Files that mark a result as finished are written atomically (temporary file, then
rename), so an interrupted writer never leaves a half-written result that looks done.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SEED_DIR = re.compile(r"^seed_(-?\d+)$")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Beside multirun.yaml in a study's (= sweep's) directory: the cluster launchers' job records.
JOBS_FILE = "jobs.jsonl"

class CellState(str, Enum):
    """The one vocabulary of a cell's state. The trainer writes the first four to
    status.json; the others are what sweep-status and analysis can tell from outside:
    queued (its job waits), resumable (stopped with a checkpoint to go on from), not
    started (no status yet). Members are str, so they compare equal to what status.json holds."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    QUEUED = "queued"
    RESUMABLE = "resumable"
    NOT_STARTED = "not started"

    def __str__(self) -> str:
        return self.value


# The states the trainer writes, by name.
RUNNING, DONE, FAILED, INTERRUPTED = CellState.RUNNING, CellState.DONE, CellState.FAILED, CellState.INTERRUPTED


@dataclass(frozen=True, order=True)
class Cell:
    """One (study, game, model, seed) point of a sweep grid."""

    study: str
    game: str
    model: str
    seed: int

    def __post_init__(self) -> None:
        for field in ("study", "game", "model"):
            value = getattr(self, field)
            if not isinstance(value, str) or not NAME.match(value):
                raise ValueError(
                    f"{field}={value!r} is not a valid name: use letters, digits, '_', '-', '.'"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} is not an integer")

    @property
    def key(self) -> str:
        """`<game>/<model>/seed_<k>`: the W&B run name and the cell's path in its study."""
        return f"{self.game}/{self.model}/seed_{self.seed}"


class CellDamaged(ValueError):
    """A file of a cell that cannot be read (not JSON, a row that is not a metrics row, ...):
    the message names the file and what to do."""


TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # atomic_write_bytes' names


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open rather than mkstemp, whose 0600 would make results unreadable to the group
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temporaries(folder: Path) -> int:
    """Remove the temporary files of atomic writes that never finished (a writer killed with
    -9 mid-write) directly in `folder`. Only for a caller holding the lock of everything
    written there. Returns how many went."""
    removed = 0
    for path in Path(folder).glob(".*.tmp"):
        if TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class CellDir:
    """The files of one cell. Paths only; nothing is created until a writer asks."""

    def __init__(self, root: Path | str, cell: Cell):
        self.cell = cell
        self.root = Path(root)
        self.path = self.root / cell.study / cell.game / cell.model / f"seed_{cell.seed}"

    def __repr__(self) -> str:
        return f"CellDir({self.path})"

    # Training
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    # Evaluation
    def eval_dir(self, eval_game: str | None = None) -> Path:
        return self.path / "eval" / (eval_game or self.cell.game)

    def eval_games(self, eval_game: str | None = None) -> Path:
        return self.eval_dir(eval_game) / "games.parquet"

    def eval_summary(self, eval_game: str | None = None) -> Path:
        return self.eval_dir(eval_game) / "summary.json"

    def eval_previous(self, eval_game: str | None = None) -> Path:
        """Earlier evaluations with other settings or another checkpoint, one folder each."""
        return self.eval_dir(eval_game) / "previous"

    def video_dir(self, eval_game: str | None = None, saliency_map: str = "model") -> Path:
        folder = self.path / "video" / (eval_game or self.cell.game)
        return folder if saliency_map == "model" else folder / saliency_map

    # Saliency metrics on Atari-HEAD
    @property
    def saliency_dir(self) -> Path:
        return self.path / "saliency"

    @property
    def saliency_trials(self) -> Path:
        """One row per (trial, map, resolution, alignment): metrics averaged over defined frames."""
        return self.saliency_dir / "trials.csv"

    def saliency_frames_dir(self) -> Path:
        return self.saliency_dir / "frames"

    def saliency_frames(self, trial: int, alignment: str, resolution: str, preset: str = "spec") -> Path:
        """Per-frame metrics of every map on one trial, at one frame alignment and resolution,
        under one preset of the metric settings (atari_head=spec or paper)."""
        return self.saliency_frames_dir() / preset / f"trial_{trial}_{alignment}_{resolution}.parquet"

    def lock(self, activity: str) -> CellLock:
        """`with cell.lock("train"):` one writer at a time (raises CellBusy)."""
        return CellLock(self, activity)

    def remove_if_empty(self) -> None:
        """Remove this cell's directory and its empty parents up to the run root: a run
        that found nothing to do leaves nothing behind."""
        remove_if_empty(self.path, self.root)

    # Status
    def status(self) -> dict[str, Any]:
        """The last status written, or {} for a cell that never started."""
        try:
            status = json.loads(self.status_file.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CellDamaged(f"{self.status_file}: damaged, not a status file ({e}); "
                              "delete it to let the trainer rewrite it, or overwrite=true") from None
        if not isinstance(status, dict):
            raise CellDamaged(f"{self.status_file}: damaged, not a status file (a JSON {type(status).__name__}); "
                              "delete it to let the trainer rewrite it, or overwrite=true")
        return status

    def write_status(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json (atomically) and return the new status."""
        status = self.status()
        status.update(fields)
        atomic_write_text(self.status_file, json.dumps(status, indent=2, sort_keys=True) + "\n")
        return status

    @property
    def state(self) -> str | None:
        return self.status().get("state")

    def is_done(self) -> bool:
        return self.state == DONE

    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists()


class SweepDir:
    """The files a sweep keeps in its own directory (hydra.sweep.dir), beside its cells. For
    train, evaluate and metrics that is the study's directory, <run_root>/<study>/."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SweepDir({self.path})"

    @property
    def config(self) -> Path:
        """The sweep's composed config with its overrides, as the sweeper saves it (Hydra's name)."""
        return self.path / "multirun.yaml"

    @property
    def jobs_file(self) -> Path:
        """Every job the submitit launchers submitted for this sweep (fls.job_records)."""
        return self.path / JOBS_FILE

    def submitit_dir(self, job_id: str) -> Path:
        """A job's submitit folder, its logs: hydra-submitit-launcher's default submitit_folder."""
        return self.path / ".submitit" / job_id


LOCK_PREFIX = ".lock-"


class CellBusy(RuntimeError):
    """Another process holds the cell for the same work (training, evaluation, scoring)."""


class CellLock:
    """One writer per cell and activity: an exclusive flock on `<cell>/.lock-<activity>`.

    The kernel drops the lock when its holder dies (kill -9 included), so a dead writer
    never blocks the cell; the file itself only names the last holder (pid, host, since),
    for the one line a refused second writer prints. On file systems without flock across
    nodes (some NFS setups) two nodes are not kept apart; SLURM runs a cell's job once.
    """

    def __init__(self, cell: "CellDir", activity: str):
        self.cell, self.activity = cell, activity
        self.path = cell.path / f"{LOCK_PREFIX}{activity}"
        self._fd: int | None = None

    def __enter__(self) -> "CellLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CellBusy(f"{self.cell.path}: {self.activity} is already running there ({holder}); "
                           "wait for it to end, or stop that process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


class RunLayout:
    """All studies under one run root."""

    def __init__(self, root: Path | str = "runs"):
        self.root = Path(root)

    def study_dir(self, study: str) -> Path:
        return self.root / study

    def analysis_dir(self, study: str) -> Path:
        return self.study_dir(study) / "analysis"

    def sweep(self, study: str) -> SweepDir:
        """The sweep files of a study: its directory is the sweep directory of its sweeps."""
        return SweepDir(self.study_dir(study))

    def jobs_file(self, study: str) -> Path:
        """Every job the submitit launchers submitted for this study (fls.job_records)."""
        return self.sweep(study).jobs_file

    def cell(self, study: str, game: str, model: str, seed: int) -> CellDir:
        return CellDir(self.root, Cell(study, game, model, int(seed)))

    def cells(self, study: str) -> Iterator[CellDir]:
        """Every cell directory of a study found on disk, in sorted order."""
        base = self.study_dir(study)
        if not base.is_dir():
            return
        found = []
        for seed_dir in base.glob("*/*/seed_*"):
            m = SEED_DIR.match(seed_dir.name)
            if not m or not seed_dir.is_dir():
                continue
            game, model = seed_dir.parent.parent.name, seed_dir.parent.name
            if not (NAME.match(game) and NAME.match(model)) or game.startswith("."):
                continue
            found.append(Cell(study, game, model, int(m.group(1))))
        for cell in sorted(found):
            yield CellDir(self.root, cell)

    def studies(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))


def cell_from_config(cfg: Any) -> CellDir:
    """The cell a composed config (train/evaluate/metrics) points at."""
    return RunLayout(cfg.run_root).cell(cfg.study, cfg.game.name, cfg.model.name, cfg.seed)


def remove_if_empty(path: Path, stop: Path) -> None:
    """Remove `path` and its empty parents up to (not including) `stop`.

    Used when a run refuses its config after Hydra created the cell directory: nothing
    written means nothing left behind.
    """
    path, stop = Path(path).resolve(), Path(stop).resolve()
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def _cell_path_resolver(run_root: str, study: str, game: str, model: str, seed: Any) -> str:
    """OmegaConf resolver `${cell_dir:...}` so Hydra's output dir is this layout's path."""
    try:
        cell = Cell(study, game, model, int(seed))
    except (TypeError, ValueError):
        # Not a cell (a range given without -m, study=a/b): the entry point's config check
        # reports it in one line; until then give Hydra a path that is not a cell directory.
        return str((Path(run_root) / ".invalid").absolute())
    # Absolute, because Hydra joins it to hydra.sweep.dir in multirun.
    return str(CellDir(run_root, cell).path.absolute())


# The checkout itself: where the data it ships lives (data/), whatever the working directory.
REPO = Path(__file__).resolve().parents[2]


def _repo_path_resolver(relative: str) -> str:
    """OmegaConf resolver `${repo_path:data/...}`: a file the repository ships, absolute."""
    return str(REPO / relative)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cell_dir"):
        OmegaConf.register_new_resolver("cell_dir", _cell_path_resolver)
    if not OmegaConf.has_resolver("repo_path"):
        OmegaConf.register_new_resolver("repo_path", _repo_path_resolver)


register_resolvers()
