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
        eval/<eval_game>/     games.parquet (one row per game), summary.json (its manifest:
                              the games file's SHA-256); previous/<time>_<hash>/: every
                              earlier evaluation (other settings, another checkpoint), kept
        video/<eval_game>/    MP4s and contact sheets of the model's own map;
                              <method>/: of a post-hoc map (eval.video.map=<method>)
        saliency/             Atari-HEAD metrics: trials.csv (per trial and preset),
                              frames/<preset>/ (per frame)

Files that mark a result as finished are written atomically (temporary file, then
rename), so an interrupted writer never leaves a half-written result that looks done; a
result of several files (an evaluation) is published with a manifest, written last, that
names each file's hash, and a reader trusts it only when they agree (write_result,
read_result). docs/durability.md says what this promises under kills, full disks and
tampering; every durable step goes through `durable_step`, where tests stop the process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SEED_DIR = re.compile(r"^seed_(-?\d+)$")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Beside multirun.yaml in a study's (= sweep's) directory: the cluster launchers' job records.
JOBS_FILE = "jobs.jsonl"
# The app (hydra.job.name) whose sweeps make a study's grid: src/train.py.
TRAIN_APP = "train"

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


class CellWriteError(RuntimeError):
    """A write of a cell's file that the file system refused (a full disk, a read-only one,
    a quota): the message names the file and the reason. What was there before is intact."""


# Fault injection (tests, docs/durability.md). Every durable step of a writer (a rename that
# publishes a file, a metrics row appended, a folder moved or removed) calls durable_step
# first. FLS_FAULT_AT=<n> stops the process at its n-th step: kill -9 of itself (a torn
# append first writes half its row), or with FLS_FAULT=enospc the step fails as on a full
# disk. FLS_FAULT_LOG=<file> gets one line per step: "<n> <what> <path>".
FAULT_AT, FAULT_KIND, FAULT_LOG = "FLS_FAULT_AT", "FLS_FAULT", "FLS_FAULT_LOG"
_steps = 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def durable_step(what: str, path: Path, torn: Callable[[], None] | None = None) -> None:
    """One step after which the files on disk differ; `torn` writes the half of it a kill
    in its middle would leave."""
    global _steps
    at, log = os.environ.get(FAULT_AT), os.environ.get(FAULT_LOG)
    if not (at or log):
        return
    _steps += 1
    if log:
        with open(log, "a") as f:
            f.write(f"{_steps} {what} {path}\n")
    if at and int(at) == _steps:
        if os.environ.get(FAULT_KIND) == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if torn is not None:
            torn()
        _die()


def write_refused(path: Path, error: OSError) -> CellWriteError:
    """The one line for a write the file system refused."""
    return CellWriteError(f"{path}: cannot write: {error.strerror or error}; what was there before is intact")


TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # atomic_write_bytes' names


def _temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _write_temporary(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `path`, on disk (fsync) before it is published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    # os.open rather than mkstemp, whose 0600 would make results unreadable to the group
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _publish(tmp: Path, path: Path) -> None:
    durable_step("replace", path)
    os.replace(tmp, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power loss (file data is synced before)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder: the rename is what they give
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half.
    Raises CellWriteError (the old file intact) when the file system refuses."""
    path = Path(path)
    tmp = None
    try:
        tmp = _write_temporary(path, data)
        _publish(tmp, path)
    except OSError as e:
        raise write_refused(path, e) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone once published; left by a failure


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def strict_json(value: Any, **kwargs: Any) -> str:
    """JSON without NaN or Infinity (not JSON; strict readers refuse them): those are null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False, **kwargs)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# A result of several files: a manifest (JSON, written last) that names each file's SHA-256.


MANIFEST_HASHES = "sha256"


@dataclass(frozen=True)
class Result:
    """A whole result: its manifest and the bytes of each file it names, as they were read."""

    summary: dict[str, Any]
    files: dict[str, bytes]


def _read_manifest(path: Path) -> dict[str, Any]:
    """A manifest's JSON; CellDamaged when it is not a JSON object."""
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CellDamaged(f"{path}: damaged, not JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise CellDamaged(f"{path}: damaged, not a summary (a JSON {type(manifest).__name__})")
    return manifest


def _result_of(folder: Path, manifest: dict[str, Any], legacy: tuple[str, str] | None) -> Result | str:
    """The Result a manifest describes, or why the files beside it are not that result."""
    hashes = manifest.get(MANIFEST_HASHES)
    if hashes is None and legacy is not None:  # written before manifests: the row count must agree
        name, count = legacy
        try:
            data = (folder / name).read_bytes()
            import pyarrow.parquet as pq  # here: rundir is read by processes that never load pyarrow
            import pyarrow as pa

            rows = pq.read_metadata(pa.BufferReader(data)).num_rows
        except FileNotFoundError:
            return f"{name} is missing"
        except Exception as e:  # pyarrow's errors for a file that is not parquet
            return f"{name} is unreadable ({type(e).__name__})"
        if rows != manifest.get(count):
            return f"it says {count}={manifest.get(count)} but {name} holds {rows} rows"
        return Result(manifest, {name: data})
    if not isinstance(hashes, dict) or not hashes:
        return f"it names no files ({MANIFEST_HASHES})"
    files = {}
    for name, digest in hashes.items():
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            return f"{name} is missing"
        if sha256(data) != digest:
            return f"{name} is not the file it names (SHA-256 differs)"
        files[name] = data
    return Result(manifest, files)


def _candidates(folder: Path, manifest: str) -> list[Path]:
    """Temporary copies of a manifest, newest first: one a writer published the files of
    and was stopped (or is about) to publish itself."""
    found = [p for p in folder.glob(f".{manifest}.*.tmp") if TEMPORARY.match(p.name)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0, reverse=True)


def read_result(folder: Path, manifest: str = "summary.json", legacy: tuple[str, str] | None = None) -> Result | None:
    """The whole result in `folder`, or None when there is none. A manifest whose files
    disagree with it is not trusted: if a writer published the new files and not yet their
    manifest (killed between its renames, or doing it now), that manifest is the result;
    otherwise CellDamaged says what disagrees. `legacy` (file, manifest key): manifests
    written before hashes are checked by that file's row count."""
    folder = Path(folder)
    path = folder / manifest
    for _ in range(3):  # a writer may publish between our reads: read again
        try:
            published = _read_manifest(path)
        except FileNotFoundError:
            published = None
        if published is not None:
            found = _result_of(folder, published, legacy)
            if isinstance(found, Result):
                return found
        for tmp in _candidates(folder, manifest):
            try:
                pending = json.loads(tmp.read_bytes())
            except (OSError, ValueError):
                continue  # being written, or a half left by a kill
            if isinstance(pending, dict) and isinstance(pending.get(MANIFEST_HASHES), dict):
                candidate = _result_of(folder, pending, None)
                if isinstance(candidate, Result):
                    return candidate
        if published is None:
            if not path.exists():
                return None
            continue
        if _read_manifest(path) == published:  # stable: the disagreement is on disk
            raise CellDamaged(f"{path}: does not describe the files beside it ({found})")
    raise CellDamaged(f"{path}: changing while read; is a writer busy there?")


def read_eval_result(folder: Path) -> Result | None:
    """The evaluation in `folder` (eval/<game>/ or one of its previous/ folders): read_result
    of summary.json and games.parquet. Summaries written before they held the games file's
    hash are checked by its row count (`n`)."""
    return read_result(folder, "summary.json", legacy=("games.parquet", "n"))


def write_result(folder: Path, files: dict[str, bytes], summary: dict[str, Any], manifest: str = "summary.json") -> dict[str, Any]:
    """Publish `files` and their manifest (`summary` with each file's SHA-256) in `folder`
    as one result: every temporary file is on disk before the first is published, the
    manifest last, so a kill leaves the old result or the new one (recover_result finishes
    what a kill between the renames left). Returns the manifest. CellWriteError when the
    file system refuses before anything was published (the old result intact)."""
    folder = Path(folder)
    summary = {**summary, MANIFEST_HASHES: {name: sha256(data) for name, data in files.items()}}
    contents = {**files, manifest: (strict_json(summary, indent=2) + "\n").encode()}
    temps: dict[str, Path] = {}
    published = 0
    path = folder / manifest
    try:
        for name, data in contents.items():
            path = folder / name
            temps[name] = _write_temporary(path, data)
        for name in contents:
            path = folder / name
            _publish(temps[name], path)
            published += 1
    except OSError as e:
        if published:  # the files are out, their manifest is not: the next opener publishes it
            raise CellWriteError(f"{path}: cannot write: {e.strerror or e}; the next run on this cell "
                                 "finishes publishing the result") from None
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise write_refused(path, e) from None
    return summary


def recover_result(folder: Path, manifest: str = "summary.json") -> None:
    """For the writer holding the lock of `folder`: finish publishing a result whose files a
    killed writer published and whose manifest it did not, then remove every temporary file."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    path = folder / manifest
    try:
        published = _read_manifest(path)
    except (FileNotFoundError, CellDamaged):
        published = None
    if published is None or not isinstance(_result_of(folder, published, None), Result):
        for tmp in _candidates(folder, manifest):
            try:
                pending = json.loads(tmp.read_bytes())
            except (OSError, ValueError):
                continue
            if (isinstance(pending, dict) and isinstance(pending.get(MANIFEST_HASHES), dict)
                    and isinstance(_result_of(folder, pending, None), Result)):
                try:
                    _publish(tmp, path)
                except OSError as e:
                    raise write_refused(path, e) from None
                break
    remove_temporaries(folder)


def keep_result(folder: Path, target_parent: Path, manifest: str = "summary.json") -> Path | None:
    """A copy of the result in `folder` (its files hard-linked where the file system can) in a
    folder of its own under `target_parent`, named by the time and hash of its manifest: the
    same result kept twice (a run killed after keeping it, then run again) is one folder, two
    results are two. The copy appears whole (built aside, then renamed) or not at all.
    Returns its folder, None when `folder` holds no result."""
    folder, target_parent = Path(folder), Path(target_parent)
    path = folder / manifest
    try:
        data = path.read_bytes()
        manifest_data = json.loads(data)
    except (FileNotFoundError, ValueError):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(path.stat().st_mtime)) + "_" + sha256(data)[:8]
    target = target_parent / stamp
    if (target / manifest).is_file() and (target / manifest).read_bytes() == data:
        return target  # kept already
    names = list((manifest_data.get(MANIFEST_HASHES) or {}) if isinstance(manifest_data, dict) else {})
    names += [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in names]
    partial = target_parent / f".{stamp}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        for name in names:
            if name == manifest:
                continue
            try:
                os.link(folder / name, partial / name)
            except OSError:  # no hard links here (some network file systems): a copy
                shutil.copy2(folder / name, partial / name)
        # the manifest bytes read above, so the copy is what the stamp names
        with open(partial / manifest, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        durable_step("rename", target)
        os.rename(partial, target)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise write_refused(target, e) from None
    _sync_folder(target_parent)
    return target


def remove_partial_copies(parent: Path) -> None:
    """Remove the copies keep_result was building when it was stopped (the result they copy
    is still where it was)."""
    for path in Path(parent).glob(".*.partial"):
        shutil.rmtree(path, ignore_errors=True)


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

    def eval_result(self, eval_game: str | None = None) -> Result | None:
        """The evaluation on `eval_game` when its summary and games agree, None when there is
        none; CellDamaged when they disagree (read_eval_result)."""
        return read_eval_result(self.eval_dir(eval_game))

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
        """Merge `fields` into status.json (atomically, strict JSON: NaN is null) and return
        the new status."""
        status = self.status()
        status.update(fields)
        atomic_write_text(self.status_file, strict_json(status, indent=2, sort_keys=True) + "\n")
        return status

    def recorded_config(self) -> dict[str, Any]:
        """The config the cell started with (config.yaml), resolved; CellDamaged when it is not
        YAML or not a mapping."""
        try:
            config = OmegaConf.to_container(OmegaConf.load(self.config), resolve=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # yaml's and OmegaConf's errors for a file that is not a config
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CellDamaged(f"{self.config}: damaged, not YAML of a config ({type(e).__name__}: {first}); "
                              "restore it, or overwrite=true to discard the cell") from None
        if not isinstance(config, dict):
            raise CellDamaged(f"{self.config}: damaged, not a config (a YAML {type(config).__name__}); "
                              "restore it, or overwrite=true to discard the cell")
        return config

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
        """The study's grid: the composed config and overrides of its latest training sweep,
        as the sweeper saves it (Hydra's name). Only a training sweep writes it: the sweeps
        of the other apps (evaluation, scoring) save theirs beside it (config_of), so a
        sweep over other cells never passes for the study's grid."""
        return self.path / "multirun.yaml"

    def config_of(self, app: str) -> Path:
        """Where the sweeper saves a sweep of `app` (hydra.job.name): `config` for train."""
        return self.config if app == TRAIN_APP else self.path / f"{app}.multirun.yaml"

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:  # a read-only or full file system
            raise CellWriteError(f"{self.path}: cannot write: {e.strerror or e}; "
                                 f"{self.activity} needs to write in {self.cell.path}") from None
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
