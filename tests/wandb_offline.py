"""Read an offline W&B run (`<cell>/wandb/offline-run-*/run-<id>.wandb`) with no server.

The file is W&B's transaction log: a 7-byte header (`:W&B`, magic 0xBEE1, version) and
then LevelDB-log framed records (32 KiB blocks; each record a 7-byte header of CRC-32,
length and type FULL/FIRST/MIDDLE/LAST) whose payloads are `wandb_internal_pb2.Record`
protobufs, W&B's own message type. Recent wandb releases dropped their Python reader;
this is the small part of it we need: the run, its config, its history rows, its summary
and the files it saved (a logged table or image is a file under the run's files/ folder,
named by its history or summary item: `load_media`).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

HEADER = b":W&B\xe1\xbe"
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    if not data.startswith(HEADER):
        raise ValueError("not a W&B transaction log (bad header)")
    off, pending = 7, b""
    while off + 7 <= len(data):
        left = BLOCK - off % BLOCK
        if left < 7:  # block trailer padding
            off += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[off : off + 7])
        if kind == 0 and length == 0:
            off += left
            continue
        payload = data[off + 7 : off + 7 + length]
        if len(payload) < length:
            break  # a run still being written: its last record is incomplete
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"corrupt record at byte {off}")
        off += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""


@dataclass
class OfflineRun:
    id: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    job_type: str = ""
    folder: Path | None = None


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: Path | str) -> OfflineRun:
    """Parse one `run-<id>.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(folder=Path(path).parent)
    for payload in _payloads(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.project = r.run_id, r.display_name, r.run_group, r.project
            run.tags = list(r.tags)
            run.job_type = r.job_type
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
    return run


def load_media(run: OfflineRun, item: dict[str, Any]) -> Any:
    """The file of a logged table (its JSON: {"columns", "data"}) or image (its path), from the
    history or summary item that names it (`_type` table-file / image-file, `path`)."""
    assert run.folder is not None
    path = run.folder / "files" / item["path"]
    return json.loads(path.read_text()) if item.get("_type") == "table-file" else path


def find_runs(wandb_dir: Path | str) -> list[Path]:
    """The transaction logs under a cell's wandb/ folder, oldest first."""
    return sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))
