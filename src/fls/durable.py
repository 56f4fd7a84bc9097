"""How a result reaches the disk whole: atomic writes, results of several files published
under a manifest, earlier results kept, and the fault hook where tests stop a writer.

Files that mark a result as finished are written atomically (temporary file, then rename), so
an interrupted writer never leaves a half-written result that looks done; a result of several
files (an evaluation) is published with a manifest, written last, that names each file's hash,
and a reader trusts it only when they agree (write_result, read_result). docs/durability.md says
what this promises under kills, full disks and tampering; every durable step goes through
`durable_step`, where tests stop the process. What the files are called is fls.rundir's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fls.errors import CellDamaged, CellWriteError

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


def read_result(folder: Path, manifest: str, legacy: tuple[str, str] | None = None) -> Result | None:
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


def write_result(folder: Path, files: dict[str, bytes], summary: dict[str, Any], manifest: str) -> dict[str, Any]:
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


def recover_result(folder: Path, manifest: str) -> None:
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


def keep_result(folder: Path, target_parent: Path, manifest: str) -> Path | None:
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
