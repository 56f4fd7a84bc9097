"""The one place that knows the run-directory layout: every file and folder name inside a
cell, a sweep and a zoo entry, and the columns of metrics.csv.

Training, evaluation, saliency metrics, sweep status, the zoo and analysis all find their
files through this module. A cell's directory is a pure function of (study, game, model, seed)
so a re-run or a requeued job lands in its own work:

    <run_root>/<study>/<game>/<model>/seed_<k>/
        config.yaml           composed config, written once when the cell starts
        status.json           state (running / done / failed), step, host, job id, W&B id
        metrics.csv           one row per PPO update (METRIC_COLUMNS), append-only
        checkpoint.pt         latest checkpoint (written atomically)
        snapshots/            update_<u>.pt: the model's weights in fp16 at evenly spaced
                              updates (snapshots=<n>), for saliency over training
        train.log             the trainer's log, appended across resumes
        wandb/                the offline W&B run(s)
        eval/<eval_game>/     games.parquet (one row per game), summary.json (its manifest:
                              the games file's SHA-256); previous/<time>_<hash>/: every
                              earlier evaluation (other settings, another checkpoint), kept
        video/<eval_game>/    game_<k>.mp4, contact_sheet.png and video.json of the model's
                              own map; <method>/: of a post-hoc map (eval.video.map=<method>)
        saliency/             Atari-HEAD metrics: trials.csv (per trial and preset),
                              frames/<preset>/ (per frame); checks/<preset>/<source>/
                              <check>_<map>.parquet: the saliency checks per frame
        .lock-<activity>      one writer per activity (CellLock)

    zoo/<entry>/              a finished cell in a small form (fls.zoo): config.yaml,
                              status.json, metrics.csv, eval/<game>/summary.json as in a cell,
                              weights.pt and provenance.json; installed as the cell
                              <run_root>/zoo/<game>/<model>/seed_<k>

How the files reach the disk whole (atomic writes, results under a manifest) is fls.durable.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fls.durable import (Result, atomic_write_text, durable_step, keep_result, read_result, recover_result, strict_json,
                         write_result)
from fls.errors import CellBusy, CellDamaged, CellWriteError, ConfigError
from fls.facts import REPO, TRAIN_APP, now

SEED_DIR = re.compile(r"^seed_(-?\d+)$")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# The names inside a cell (and, the first five, inside a zoo entry)
CONFIG = "config.yaml"
STATUS = "status.json"
METRICS = "metrics.csv"
EVAL = "eval"
EVAL_SUMMARY = "summary.json"  # an evaluation's manifest (fls.durable.write_result)
EVAL_GAMES = "games.parquet"
EVAL_PREVIOUS = "previous"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"
SNAPSHOT = re.compile(r"^update_(\d+)\.pt$")
TRAIN_LOG = "train.log"
WANDB = "wandb"
VIDEO = "video"
SALIENCY = "saliency"
LOCK_PREFIX = ".lock-"
# ... and inside a zoo entry only
WEIGHTS = "weights.pt"
PROVENANCE = "provenance.json"
# The zoo the checkout ships, and the study its entries are installed in under a run root
ZOO_DIR = REPO / "zoo"
ZOO_STUDY = "zoo"
# Beside multirun.yaml in a study's (= sweep's) directory: the cluster launchers' job records.
JOBS_FILE = "jobs.jsonl"

# metrics.csv, one row per PPO update: its columns in order (src/train.py fills them; the
# names read elsewhere have a name here)
X_AXIS = "global/game_frames"  # the x-axis of every curve: game frames, 4 per agent step
EPREWMEAN = "charts/eprewmean"  # the mean score of the last 100 finished games
SPS = "charts/SPS"  # agent steps per second since the run's latest start
GAMES_ENDED = "charts/games"
LEARNING_RATE = "charts/learning_rate"
METRIC_COLUMNS = [
    "update",
    "global_step",
    X_AXIS,
    "global/seconds",
    EPREWMEAN,
    "charts/eplenmean",
    GAMES_ENDED,
    SPS,
    LEARNING_RATE,
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/old_approx_kl",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
]


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


# An evaluation is one result of two files: games.parquet under summary.json, its manifest


def read_eval_result(folder: Path) -> Result | None:
    """The evaluation in `folder` (eval/<game>/ or one of its previous/ folders), None when
    there is none; CellDamaged when its files disagree. Summaries written before they held the
    games file's hash are checked by its row count (`n`)."""
    return read_result(folder, EVAL_SUMMARY, legacy=(EVAL_GAMES, "n"))


def write_eval_result(folder: Path, games: bytes, summary: dict[str, Any]) -> dict[str, Any]:
    """Publish games.parquet and summary.json in `folder` as one result; returns the summary
    as written (with the games file's hash)."""
    return write_result(folder, {EVAL_GAMES: games}, summary, EVAL_SUMMARY)


def recover_eval_result(folder: Path) -> None:
    """Finish what a killed evaluation writer left in `folder` (for the holder of its lock)."""
    recover_result(folder, EVAL_SUMMARY)


def keep_eval_result(folder: Path, previous: Path) -> Path | None:
    """A copy of the evaluation in `folder`, in a folder of its own under `previous`."""
    return keep_result(folder, previous, EVAL_SUMMARY)


# What a discard removes first: the results made from the checkpoint (a kill half-way must
# not leave an evaluation of the old checkpoint beside a new one), then the checkpoint and
# status (the cell is then one to start over), then the rest.
DISCARD_FIRST = (EVAL, VIDEO, SALIENCY, CHECKPOINT, STATUS)


class TrainedFiles:
    """The files a cell and a zoo entry both hold, under `path`."""

    path: Path

    @property
    def config(self) -> Path:
        """The composed training config, as the trainer recorded it."""
        return self.path / CONFIG

    @property
    def status_file(self) -> Path:
        return self.path / STATUS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS


class CellDir(TrainedFiles):
    """The files of one cell. Paths only; nothing is created until a writer asks."""

    def __init__(self, root: Path | str, cell: Cell, path: Path | None = None):
        self.cell = cell
        self.root = Path(root)
        self.path = Path(path) if path is not None else self.root / cell.study / cell.game / cell.model / f"seed_{cell.seed}"

    @classmethod
    def at(cls, path: Path | str) -> CellDir:
        """The cell whose files are in the folder `path`, wherever it is (a copy of a cell
        too), named by its config.yaml: ConfigError without one, CellDamaged when it is not a
        trained cell's."""
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise ConfigError(f"{path}: not a cell's folder (no {CONFIG}); expected <run_root>/<study>/<game>/<model>/seed_<k>")
        try:
            config = OmegaConf.load(path / CONFIG)
            cell = Cell(str(config.study), str(config.game.name), str(config.model.name), int(config.seed))
        except Exception as e:  # yaml errors, a missing file, keys missing
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CellDamaged(f"{path / CONFIG}: not a trained cell's config ({type(e).__name__}: {first})") from None
        return cls(path.parent, cell, path)

    def __repr__(self) -> str:
        return f"CellDir({self.path})"

    # Training
    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def snapshots_dir(self) -> Path:
        return self.path / SNAPSHOTS

    def snapshot(self, update: int) -> Path:
        """The weights (fp16) as they were after `update` (0: as initialised)."""
        return self.snapshots_dir / f"update_{int(update)}.pt"

    def snapshots(self) -> dict[int, Path]:
        """{update: path} of every snapshot on disk, by update."""
        if not self.snapshots_dir.is_dir():
            return {}
        found = {int(m.group(1)): p for p in self.snapshots_dir.iterdir() if (m := SNAPSHOT.match(p.name)) and p.is_file()}
        return dict(sorted(found.items()))

    @property
    def wandb_dir(self) -> Path:
        return self.path / WANDB

    # Evaluation
    def eval_dir(self, eval_game: str | None = None) -> Path:
        return self.path / EVAL / (eval_game or self.cell.game)

    def eval_dirs(self) -> list[Path]:
        """The folder of every game the cell was evaluated on (eval/<game>/), sorted."""
        return sorted(p for p in (self.path / EVAL).glob("*") if p.is_dir())

    def eval_games(self, eval_game: str | None = None) -> Path:
        return self.eval_dir(eval_game) / EVAL_GAMES

    def eval_summary(self, eval_game: str | None = None) -> Path:
        return self.eval_dir(eval_game) / EVAL_SUMMARY

    def eval_previous(self, eval_game: str | None = None) -> Path:
        """Earlier evaluations with other settings or another checkpoint, one folder each."""
        return self.eval_dir(eval_game) / EVAL_PREVIOUS

    def eval_result(self, eval_game: str | None = None) -> Result | None:
        """The evaluation on `eval_game` when its summary and games agree, None when there is
        none; CellDamaged when they disagree (read_eval_result)."""
        return read_eval_result(self.eval_dir(eval_game))

    def video_dir(self, eval_game: str | None = None, saliency_map: str = "model") -> Path:
        folder = self.path / VIDEO / (eval_game or self.cell.game)
        return folder if saliency_map == "model" else folder / saliency_map

    def video_game(self, game: int, eval_game: str | None = None, saliency_map: str = "model") -> Path:
        """The MP4 of the k-th game a video records."""
        return self.video_dir(eval_game, saliency_map) / f"game_{game}.mp4"

    def video_sheet(self, eval_game: str | None = None, saliency_map: str = "model") -> Path:
        """The contact sheet of the first game a video records."""
        return self.video_dir(eval_game, saliency_map) / "contact_sheet.png"

    def video_record(self, eval_game: str | None = None, saliency_map: str = "model") -> Path:
        """What a video recorded: its games, scores, and how often the map is on the ball."""
        return self.video_dir(eval_game, saliency_map) / "video.json"

    # Saliency metrics on Atari-HEAD
    @property
    def saliency_dir(self) -> Path:
        return self.path / SALIENCY

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

    def saliency_checks_dir(self, preset: str = "spec") -> Path:
        return self.saliency_dir / "checks" / preset

    def saliency_check(self, source: str, check: str, saliency_map: str, preset: str = "spec") -> Path:
        """Per-frame results of one saliency check (randomization, deletion, insertion) of one
        map (or baseline order) on the frames of one source (games, atari_head)."""
        return self.saliency_checks_dir(preset) / source / f"{check}_{saliency_map}.parquet"

    def saliency_check_files(self) -> list[Path]:
        """Every saliency check's per-frame file, of every preset, sorted."""
        return sorted((self.saliency_dir / "checks").glob("*/*/*.parquet"))

    def lock(self, activity: str) -> CellLock:
        """`with cell.lock("train"):` one writer at a time (raises CellBusy)."""
        return CellLock(self, activity)

    def remove_if_empty(self) -> None:
        """Remove this cell's directory and its empty parents up to the run root: a run
        that found nothing to do leaves nothing behind."""
        remove_if_empty(self.path, self.root)

    def discard(self) -> None:
        """Remove the cell's results (not its locks: the caller holds one), in an order that a
        kill at any point leaves a cell that a rerun with overwrite=true discards, and one
        without starts over or refuses, never one that mixes the old cell's results with a
        new one's."""
        order = {name: i for i, name in enumerate(DISCARD_FIRST)}
        children = sorted((c for c in self.path.iterdir() if not c.name.startswith(LOCK_PREFIX)),
                          key=lambda c: (order.get(c.name, len(order)), c.name))
        for child in children:
            durable_step("remove", child)
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


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
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def artefact_file(analysis_dir: Path, name: str, ext: str) -> Path:
    """`python -m analysis`'s file of one artefact: <analysis_dir>/<name>.<ext>."""
    return Path(analysis_dir) / f"{name}.{ext}"


class RunLayout:
    """All studies under one run root."""

    def __init__(self, root: Path | str = "runs"):
        self.root = Path(root)

    def study_dir(self, study: str) -> Path:
        return self.root / study

    def analysis_dir(self, study: str) -> Path:
        return self.study_dir(study) / "analysis"

    def artefact(self, study: str, name: str, ext: str) -> Path:
        """An analysis artefact's file (table3 + md: the study's Table 3 as Markdown)."""
        return artefact_file(self.analysis_dir(study), name, ext)

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


class ZooEntry(TrainedFiles):
    """The files of a zoo entry, <zoo_dir>/<name>/: a finished cell in a small form (fls.zoo).
    Paths only."""

    def __init__(self, name: str, zoo_dir: Path | str = ZOO_DIR):
        self.name = name
        self.zoo_dir = Path(zoo_dir)
        self.path = self.zoo_dir / name

    def __repr__(self) -> str:
        return f"ZooEntry({self.path})"

    @property
    def weights(self) -> Path:
        """The model's weights in fp16 and the facts a checkpoint carries; no optimizer."""
        return self.path / WEIGHTS

    @property
    def provenance(self) -> Path:
        """Its commit, the command that trains it again, the random agent's score, the
        weights file's SHA-256."""
        return self.path / PROVENANCE

    def eval_summary(self, eval_game: str) -> Path:
        return self.path / EVAL / eval_game / EVAL_SUMMARY

    def exists(self) -> bool:
        return self.weights.is_file()

    @staticmethod
    def names(zoo_dir: Path | str = ZOO_DIR) -> list[str]:
        """The entries of a zoo, sorted."""
        zoo_dir = Path(zoo_dir)
        return sorted(p.name for p in zoo_dir.iterdir() if ZooEntry(p.name, zoo_dir).exists()) if zoo_dir.is_dir() else []


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


def _repo_path_resolver(relative: str) -> str:
    """OmegaConf resolver `${repo_path:data/...}`: a file the repository ships, absolute."""
    return str(REPO / relative)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cell_dir"):
        OmegaConf.register_new_resolver("cell_dir", _cell_path_resolver)
    if not OmegaConf.has_resolver("repo_path"):
        OmegaConf.register_new_resolver("repo_path", _repo_path_resolver)


register_resolvers()
