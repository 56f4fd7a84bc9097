"""Atari-HEAD (Zhang et al. 2019, Zenodo record 3451402): trials, labels and frames (docs/protocol.md#saliency-metrics).

Point `AtariHead` at a download; the layout is told from the header of its `meta_data.csv`:

- ``v4`` (the current Zenodo download): header ``GameName,trial_id,subject_id,...``, one
  folder per game (``ms_pacman/``), best-player trials in ``<game>/highscore/`` (GameName
  ``<game>_highscore``).
- ``flat`` (the older release the paper used): header with ``Game`` (``Mspacman``),
  ``TrialNumber``, ``NumberOfFrames``; every trial's files side by side in the root.

Either way a trial is ``<trial>_<subject>_<id>_<date>.tar.bz2`` (one PNG per frame,
``<subject>_<id>_<k>.png``, k from 1) and a label file with the same stem and ``.txt``.
Frames are streamed out of the archive (nothing is extracted to disk).

Bad data raises one `AtariHeadError` (a ValueError) naming the file, and the line where
there is one. Gaps the real dataset is known to have (frames with no gaze sample, written
``null``; 81 in a full Ms. Pac-Man trial) are counted and reported in one warning per file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from fls.errors import AtariHeadError
from fls.games import all_games, atari_head_names

FRAME_SHAPE = (210, 160, 3)  # rows, columns, RGB of a recorded frame
LABEL_HEADER = ("frame_id", "episode_id", "score", "duration(ms)", "unclipped_reward", "action")
# The label fields before the gaze pairs, as `Labels` names them.
SCALAR_FIELDS = ("episode_id", "score", "duration_ms", "unclipped_reward", "action")

# Our games' Atari-HEAD names (conf/game/<game>.yaml: atari_head), and those never recorded.
GAMES = atari_head_names()
NOT_RECORDED = tuple(name for name in all_games() if name not in GAMES)
# Every game Atari-HEAD has (v4 meta_data.csv), normalised: a name outside this list in a
# meta_data.csv is a typo or a foreign file, not a game we merely do not train on.
DATASET_GAMES = frozenset({
    "alien", "asterix", "bankheist", "berzerk", "breakout", "centipede", "demonattack",
    "enduro", "freeway", "frostbite", "hero", "montezumarevenge", "mspacman",
    "namethisgame", "phoenix", "riverraid", "roadrunner", "seaquest", "spaceinvaders",
    "venture",
})

_TRIAL_FILE = re.compile(r"^(\d+)_.+\.(tar\.bz2|txt)$")


class AtariHeadWarning(UserWarning):
    """Known gaps of the real dataset (frames without gaze), counted once per file."""


def _normalise(name: str) -> str:
    """'ms_pacman', 'Mspacman', 'MsPacman', 'ms_pacman_highscore' -> 'mspacman'."""
    name = name.strip().lower()
    if name.endswith("_highscore"):
        name = name[: -len("_highscore")]
    return re.sub(r"[^a-z0-9]", "", name)


def _check_game(game: str, where: Path) -> str:
    if game in NOT_RECORDED:
        raise AtariHeadError(f"{where}: game={game} is not in Atari-HEAD (it was never recorded)")
    if game not in GAMES:
        raise AtariHeadError(
            f"{where}: unknown game {game!r}: expected one of {', '.join(sorted(GAMES))}"
        )
    return GAMES[game]


# ---------------------------------------------------------------------------------------
# meta_data.csv
# ---------------------------------------------------------------------------------------


def _meta_value(text: str) -> Any:
    """Typed value of a meta_data field: ' R' -> 'R', '0.70%' -> 0.007, 'TRUE' -> True."""
    text = text.strip()
    if text in ("TRUE", "FALSE"):
        return text == "TRUE"
    if text.endswith("%"):
        try:  # decimal exponent, not / 100, so '0.70%' is exactly the float 0.007
            return float(f"{text[:-1]}e-2")
        except ValueError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass(frozen=True)
class MetaRow:
    """One trial's row of meta_data.csv."""

    trial_id: int
    dataset_game: str  # as meta_data spells it: 'ms_pacman_highscore', 'Mspacman'
    highscore: bool  # a best-player trial (v4: in <game>/highscore/)
    frames: int | None  # total_frame (v4) / NumberOfFrames (flat): the full trial's length
    line: int  # line number in meta_data.csv
    fields: dict[str, Any]  # every column, typed by _meta_value

    @property
    def game(self) -> str:
        """Normalised ('mspacman'); equal to our registry's name for the games we train on."""
        return _normalise(self.dataset_game)


def not_utf8(path: Path) -> AtariHeadError:
    """The one line for a text file with a byte that is not UTF-8: the line and the byte."""
    for number, line in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return AtariHeadError(f"{path}:{number}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                                  "Atari-HEAD's files are ASCII: a damaged or re-encoded copy?")
    return AtariHeadError(f"{path}: not UTF-8 text")


def read_meta(path: Path) -> tuple[Literal["v4", "flat"], dict[int, MetaRow]]:
    """The layout meta_data.csv's header announces, and its rows by trial id."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fp:
            rows = list(csv.reader(fp))
    except OSError as e:
        raise AtariHeadError(f"{path}: cannot read meta_data.csv ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if not rows:
        raise AtariHeadError(f"{path}:1: empty meta_data.csv")
    header = [h.strip() for h in rows[0]]
    if {"GameName", "trial_id"} <= set(header):
        layout, game_col, trial_col, frames_col = "v4", "GameName", "trial_id", "total_frame"
    elif {"Game", "TrialNumber"} <= set(header):
        layout, game_col, trial_col, frames_col = "flat", "Game", "TrialNumber", "NumberOfFrames"
    else:
        raise AtariHeadError(
            f"{path}:1: unknown meta_data.csv header {','.join(header)!r}: expected "
            "GameName,trial_id,... (Zenodo v4) or one with Game,TrialNumber,NumberOfFrames"
        )

    meta: dict[int, MetaRow] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank rows (the old release has some; its authors dropped them)
        if len(row) != len(header):
            raise AtariHeadError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        fields = {name: _meta_value(cell) for name, cell in zip(header, row)}
        trial = fields[trial_col]
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise AtariHeadError(f"{path}:{line}: {trial_col}={trial!r} is not a trial number")
        if trial in meta:
            raise AtariHeadError(f"{path}:{line}: trial {trial} is listed twice (also line {meta[trial].line})")
        dataset_game = str(fields[game_col])
        if _normalise(dataset_game) not in DATASET_GAMES:
            raise AtariHeadError(f"{path}:{line}: unknown game {dataset_game!r} for trial {trial}")
        frames = fields.get(frames_col)
        meta[trial] = MetaRow(
            trial_id=trial,
            dataset_game=dataset_game,
            highscore=dataset_game.strip().lower().endswith("_highscore"),
            frames=frames if isinstance(frames, int) and not isinstance(frames, bool) else None,
            line=line,
            fields=fields,
        )
    return layout, meta


# ---------------------------------------------------------------------------------------
# Label files
# ---------------------------------------------------------------------------------------


class GazePoints(Sequence):
    """Gaze samples of every frame of a trial, stored flat: `self[k]` is frame k's (n, 2) x, y.

    Frames are counted from 0 (frame k is PNG k + 1). One flat array rather than a list of
    arrays keeps a full trial (17k frames, ~1M samples) in one allocation.
    """

    def __init__(self, points: np.ndarray, offsets: np.ndarray):
        self.points = points  # (total, 2) float64, x across 0..160, y down 0..210
        self.offsets = offsets  # (frames + 1,) int64: frame k is points[offsets[k]:offsets[k+1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        return self.points[self.offsets[k] : self.offsets[k + 1]]

    def counts(self) -> np.ndarray:
        """Number of gaze samples of each frame."""
        return np.diff(self.offsets)

    def union(self, frames: Sequence[int]) -> np.ndarray:
        """All samples of the given frames, as one (n, 2) array."""
        parts = [self[k] for k in frames]
        return np.concatenate(parts) if parts else np.empty((0, 2))


@dataclass
class Labels:
    """A trial's label file: one row per frame, in frame order."""

    path: Path
    frame_ids: list[str]  # PNG names without .png, frame k is frame_ids[k] (PNG k + 1)
    scalars: dict[str, np.ndarray]  # SCALAR_FIELDS -> float64 per frame, NaN where `null`
    gaze: GazePoints
    lines: list[int]  # the file's line number of each frame's row
    null_gaze_frames: int = 0  # frames recorded with no gaze sample
    null_scalars: int = 0  # `null` values among the scalar fields

    def __len__(self) -> int:
        return len(self.frame_ids)


def _frame_number(frame_id: str) -> int | None:
    tail = frame_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def read_labels(path: Path) -> Labels:
    """Parse a label file; gaze positions are every field after `action`, as x, y pairs.

    Frame k of the file (0-based) must be frame number k + 1 (the PNG `<...>_<k+1>.png`):
    the saliency protocol counts raw frames by position, so a gap would misalign them.
    Re-exported copies drop the rows of frames without gaze instead of writing `null`: a
    forward gap in the numbering is read as `null` rows for the frames it skips, with one
    warning naming the file and how many. A last line without its line end (a truncated
    file) is reported, and dropped when it is not a whole row.
    """
    path = Path(path)
    try:
        fp = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise AtariHeadError(f"{path}: cannot read label file ({e.strerror or e})") from None
    frame_ids: list[str] = []
    scalars: list[list[float]] = []
    chunks: list[np.ndarray] = []
    counts: list[int] = []
    lines: list[int] = []
    null_gaze = null_scalars = missing_rows = 0
    try:
        with path.open("rb") as raw:
            raw.seek(0, os.SEEK_END)
            if raw.tell():
                raw.seek(-1, os.SEEK_END)
            unterminated = raw.tell() > 0 and raw.read(1) not in (b"\n", b"\r")
    except OSError:
        unterminated = False
    truncated_note = ""
    try:
        fp.read()  # the whole file decodes, or one line says where it does not
        fp.seek(0)
    except UnicodeDecodeError:
        fp.close()
        raise not_utf8(path) from None
    with fp:
        reader = csv.reader(fp)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[: len(LABEL_HEADER)]) != LABEL_HEADER:
            raise AtariHeadError(
                f"{path}:1: expected the header {','.join(LABEL_HEADER)},gaze_positions, got "
                f"{','.join(header or [])!r}"
            )
        rows = [(reader.line_num, row) for row in reader]
        for position, (line, row) in enumerate(rows):
            if not any(cell.strip() for cell in row):
                continue
            try:
                values, xy, nulls = _parse_row(path, line, row)
            except AtariHeadError as e:
                if not (unterminated and position == len(rows) - 1):
                    raise
                truncated_note = f"; it is not a whole row ({str(e).split(': ', 1)[-1]}), so it was dropped"
                break
            null_scalars += nulls
            null_gaze += xy is None
            xy = np.empty((0, 2)) if xy is None else xy
            frame_id = row[0].strip()
            number, expected = _frame_number(frame_id), len(frame_ids) + 1
            if number is not None and number > expected and frame_ids:
                # rows of frames without gaze, dropped by a re-export: null rows
                prefix = frame_id[: len(frame_id) - len(str(number))]
                for k in range(expected, number):
                    frame_ids.append(f"{prefix}{k}")
                    scalars.append([np.nan] * len(SCALAR_FIELDS))
                    chunks.append(np.empty((0, 2)))
                    counts.append(0)
                    lines.append(line)
                missing_rows += number - expected
                expected = number
            if number != expected:
                raise AtariHeadError(
                    f"{path}:{line}: frame_id {frame_id!r} should be frame number "
                    f"{len(frame_ids) + 1} (rows must list frames 1, 2, 3, ... in order)"
                )
            frame_ids.append(frame_id)
            scalars.append(values)
            chunks.append(xy)
            counts.append(len(xy))
            lines.append(line)

    if null_gaze or null_scalars or missing_rows:
        gaps = []
        if null_gaze:
            gaps.append(f"{null_gaze} of {len(frame_ids)} frames have no gaze sample (null; they add no fixations)")
        if missing_rows:
            gaps.append(f"{missing_rows} of {len(frame_ids)} frames have no label row (read as null rows: "
                        "no gaze, no fixations)")
        if null_scalars:
            gaps.append(f"{null_scalars} other label values are null (read as NaN)")
        warnings.warn(f"{path}: {', '.join(gaps)}", AtariHeadWarning, stacklevel=2)
    if unterminated:
        last = rows[-1][0] if rows else 1
        warnings.warn(f"{path}:{last}: the last line has no line end (a truncated file?){truncated_note}; "
                      f"{len(frame_ids)} frames read", AtariHeadWarning, stacklevel=2)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    points = np.concatenate(chunks) if chunks else np.empty((0, 2))
    table = np.asarray(scalars, dtype=np.float64).reshape(-1, len(SCALAR_FIELDS))
    return Labels(
        path=path,
        frame_ids=frame_ids,
        scalars={name: table[:, j] for j, name in enumerate(SCALAR_FIELDS)},
        gaze=GazePoints(points, offsets),
        lines=lines,
        null_gaze_frames=null_gaze + missing_rows,
        null_scalars=null_scalars,
    )


def _parse_row(path: Path, line: int, row: list[str]) -> tuple[list[float], np.ndarray | None, int]:
    """A label row's five values (NaN for null), its gaze points ((n, 2); None for null) and
    how many values were null; AtariHeadError naming the file, line and what is wrong."""
    if len(row) < len(LABEL_HEADER) + 1:
        raise AtariHeadError(
            f"{path}:{line}: {len(row)} fields, expected frame_id, 5 values and the gaze positions (or null)"
        )
    values, nulls = [], 0
    for name, cell in zip(SCALAR_FIELDS, row[1: len(LABEL_HEADER)]):
        cell = cell.strip()
        if cell == "null":
            nulls += 1
            values.append(np.nan)
            continue
        try:
            values.append(float(cell))
        except ValueError:
            raise AtariHeadError(f"{path}:{line}: {name}={cell!r} is not a number") from None
    gaze = row[len(LABEL_HEADER):]
    if len(gaze) == 1 and gaze[0].strip() == "null":
        return values, None, nulls
    if len(gaze) % 2:
        raise AtariHeadError(f"{path}:{line}: {len(gaze)} gaze coordinates, expected x,y pairs")
    try:
        xy = np.array(gaze, dtype=np.float64).reshape(-1, 2)
    except ValueError:
        bad = next(c for c in gaze if not _is_float(c))
        raise AtariHeadError(f"{path}:{line}: gaze coordinate {bad!r} is not a number") from None
    if not np.isfinite(xy).all():
        raise AtariHeadError(f"{path}:{line}: gaze coordinates must be finite numbers")
    return values, xy, nulls


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Frame archives
# ---------------------------------------------------------------------------------------


def _read_pngs(archive: Path) -> dict[str, bytes]:
    """Every PNG of the archive, still encoded, by name without .png (one pass over the bz2).

    Members are stored in name order (1, 10, 100, ...), not frame order, and a bz2 stream
    cannot seek: the encoded PNGs (~1.5 kB a frame, ~25 MB a full trial) are kept in memory
    and decoded one at a time as frames are asked for.
    """
    pngs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:bz2") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".png"):
                    continue
                data = tar.extractfile(member)
                assert data is not None  # a regular file always has data
                pngs[Path(member.name).name[: -len(".png")]] = data.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise AtariHeadError(f"{archive}: truncated or corrupt archive ({e})") from None
    return pngs


def read_frames(archive: Path, labels: Labels) -> Iterator[np.ndarray]:
    """The frames of `labels`, in its row order, as 210 x 160 x 3 uint8 RGB arrays.

    Every label row's PNG must be in the archive: the check runs (and a missing frame
    raises) before the first frame is yielded. PNGs without a label row are not read, and
    a warning says how many there are.
    """
    archive = Path(archive)
    pngs = _read_pngs(archive)
    unlabelled = len(set(pngs) - set(labels.frame_ids))
    if unlabelled:
        warnings.warn(f"{archive}: {unlabelled} of its {len(pngs)} frames have no row in {labels.path} "
                      "(a truncated label file?); they are not scored", AtariHeadWarning, stacklevel=2)
    for k, frame_id in enumerate(labels.frame_ids):
        if frame_id not in pngs:
            missing = sum(f not in pngs for f in labels.frame_ids)
            raise AtariHeadError(
                f"{archive}: no frame {frame_id}.png for {labels.path}:{labels.lines[k]} "
                f"({missing} of {len(labels)} label rows have no frame there)"
            )

    def decode() -> Iterator[np.ndarray]:
        for frame_id in labels.frame_ids:
            bgr = cv2.imdecode(np.frombuffer(pngs.pop(frame_id), np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AtariHeadError(f"{archive}: {frame_id}.png is not a readable PNG")
            if bgr.shape != FRAME_SHAPE:
                raise AtariHeadError(
                    f"{archive}: {frame_id}.png is {bgr.shape[1]} x {bgr.shape[0]}, expected 160 x 210"
                )
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return decode()


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialInfo:
    """Where a trial's files are and what meta_data.csv says about it."""

    trial_id: int
    game: str  # normalised dataset name, our registry's for our games ('mspacman')
    archive: Path  # <stem>.tar.bz2
    labels: Path  # <stem>.txt
    meta: MetaRow = field(repr=False)

    @property
    def highscore(self) -> bool:
        return self.meta.highscore

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this trial's data wherever it is copied: the SHA-1 of the label
        file (it holds every gaze point) and of the image archive (hundreds of MB: about a
        second, read once per run; its size too). A cache keyed on it never serves one copy's
        numbers for another, nor for a damaged one."""
        labels = hashlib.sha1(self.labels.read_bytes()).hexdigest()
        with self.archive.open("rb") as f:
            archive = hashlib.file_digest(f, "sha1").hexdigest()
        return {"trial": self.trial_id, "labels_sha1": labels, "archive_sha1": archive,
                "archive_bytes": self.archive.stat().st_size}


@dataclass
class Trial:
    """A trial with its labels parsed; `frames()` streams its recorded frames."""

    info: TrialInfo
    labels: Labels

    def __len__(self) -> int:
        return len(self.labels)

    def frames(self) -> Iterator[np.ndarray]:
        return read_frames(self.info.archive, self.labels)


class AtariHead:
    """An Atari-HEAD download (either layout), found from its meta_data.csv."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.meta_path = self.root / "meta_data.csv"
        if not self.meta_path.is_file():
            raise AtariHeadError(
                f"{self.meta_path}: not found; saliency.root must be the folder holding "
                "meta_data.csv and the trials"
            )
        self.layout, self.meta = read_meta(self.meta_path)

    def trials(self, game: str) -> list[TrialInfo]:
        """The trials of `game` (our registry's name) present on disk, by trial id.

        Every trial file found where the game's trials live must be in meta_data.csv (in
        the flat layout that is every trial file of the root).
        """
        key = _check_game(game, self.meta_path)
        places = self._places(key) if self.layout == "v4" else [self.root]
        found = []
        for place in places:
            for trial_id, stem in _stems(place):
                row = self._row(trial_id, place / f"{stem}.tar.bz2")
                if self.layout == "v4" or row.game == key:
                    found.append(self._info(row, stem, place))
        return sorted(found, key=lambda info: info.trial_id)

    def trial(self, trial_id: int) -> TrialInfo:
        """A trial by id, from wherever meta_data.csv says it must be."""
        if trial_id not in self.meta:
            raise AtariHeadError(f"{self.meta_path}: trial {trial_id} is not listed")
        row = self.meta[trial_id]
        if self.layout == "v4":
            places = [p for p in self._places(_normalise(row.dataset_game)) if _is_highscore(p) == row.highscore]
        else:
            places = [self.root]
        for place in places:
            for trial, stem in _stems(place):
                if trial == trial_id:
                    return self._info(row, stem, place)
        raise AtariHeadError(
            f"{self.root}: trial {trial_id} ({row.dataset_game}) is listed in "
            f"{self.meta_path.name}:{row.line} but its files are not on disk"
        )

    def load(self, trial: int | TrialInfo) -> Trial:
        """Parse a trial's label file (frames are read when `Trial.frames()` is iterated)."""
        info = trial if isinstance(trial, TrialInfo) else self.trial(trial)
        return Trial(info, read_labels(info.labels))

    def _places(self, key: str) -> list[Path]:
        """v4 folders of a (normalised) game: <game>/ and <game>/highscore/."""
        folders = [d for d in sorted(self.root.iterdir()) if d.is_dir() and _normalise(d.name) == key]
        return [p for d in folders for p in (d, d / "highscore") if p.is_dir()]

    def _row(self, trial_id: int, path: Path) -> MetaRow:
        row = self.meta.get(trial_id)
        if row is None:
            raise AtariHeadError(f"{path}: trial {trial_id} is not in {self.meta_path}")
        return row

    def _info(self, row: MetaRow, stem: str, place: Path) -> TrialInfo:
        archive, labels = place / f"{stem}.tar.bz2", place / f"{stem}.txt"
        for path, other in ((archive, labels), (labels, archive)):
            if not path.is_file():
                raise AtariHeadError(f"{path}: missing (its pair {other.name} is there)")
        folder = place.parent if _is_highscore(place) else place
        if self.layout == "v4" and (
            _is_highscore(place) != row.highscore or _normalise(folder.name) != row.game
        ):
            raise AtariHeadError(
                f"{archive}: {self.meta_path.name}:{row.line} says trial {row.trial_id} is "
                f"{row.dataset_game!r}, which does not belong in {place.relative_to(self.root)}/"
            )
        return TrialInfo(
            trial_id=row.trial_id,
            game=_normalise(row.dataset_game),
            archive=archive,
            labels=labels,
            meta=row,
        )


def _is_highscore(place: Path) -> bool:
    return place.name == "highscore"


def _stems(place: Path) -> list[tuple[int, str]]:
    """(trial id, file stem) of every trial file in a folder (an archive or a label file)."""
    stems = {}
    for path in place.iterdir():
        match = _TRIAL_FILE.match(path.name)
        if match and path.is_file():
            stem = path.name[: -len(match.group(2)) - 1]
            stems[stem] = int(match.group(1))
    return sorted((trial, stem) for stem, trial in stems.items())
