"""Score a trained cell's saliency maps against Atari-HEAD gaze (docs/protocol.md#saliency-metrics, Table 4).

For each trial of the cell's game, each frame alignment and resolution asked for:

1. play the recording through the training preprocessing (`fls.saliency.gaze.play_trial`), the
   agent's actions ignored, and draw the model's saliency map of every processed frame;
2. score the model's map and the model-free baselines (a centre-bias Gaussian, a uniform
   map) on every frame with `fls.saliency.metrics` (NSS, KL, shuffled AUC);
3. write the per-frame results to `saliency/frames/trial_<id>_<alignment>_<res>.parquet`,
   then rebuild `saliency/trials.csv`: per trial and map, each metric's mean over the
   frames where it is defined and how many those are.

A per-frame file carries the key it was computed under (checkpoint step and every
setting that changes a number) in its parquet metadata; a re-run with the same key reads
it instead of recomputing, and trials.csv lists every cached file of the current key, so
asking for 84x84 after 210x160 adds rows instead of replacing them. Each file is written
atomically with a checksum on every data page; one that does not read back whole (a
damaged disk block) is recomputed, not trusted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from fls.config import check_listed, check_switches, check_threads, pack_seeds, resolve_device
from fls.durable import atomic_write_bytes, atomic_write_text, remove_temporaries
from fls.errors import AtariHeadError, ConfigError
from fls.facts import as_int, changes
from fls.rundir import CellDir
from fls.saliency.atari_head import GAMES, NOT_RECORDED, AtariHead, Trial, TrialInfo
from fls.trained_cell import TrainedCell, open_trained_cell
from fls.wandb_results import log_saliency
from fls.saliency import posthoc
from fls.saliency.posthoc import PostHocSettings
from fls.saliency.gaze import ALIGNMENTS, PROCESSED_SHAPE, RAW_SHAPE, STACK_FILLS, fixation_map, play_trial, processed_indices
from fls.saliency.metrics import (UPSCALE_MODES, center_bias, kl_divergence, nss, pick_other_frames, shuffled_auc, uniform,
                         upscale_saliency)

log = logging.getLogger(__name__)

RESOLUTIONS = {"210x160": RAW_SHAPE, "84x84": PROCESSED_SHAPE}
BASELINES = ("center", "uniform")
NORMALIZATIONS = ("none", "trial_max")
PRESET = __import__("re").compile(r"^[a-z0-9_]+$")
METRICS = ("nss", "kl", "sauc")
FRAME_COLUMNS = ["trial", "frame", "map", "preset", "resolution", "alignment", "gaze_points", *METRICS]
TRIAL_COLUMNS = ["trial", "map", "preset", "resolution", "alignment", *METRICS, *(f"{m}_frames" for m in METRICS),
                 "frames", "checkpoint_global_step"]
KEY_FIELD = b"fls_saliency_key"


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


def atari_head_game(game: str) -> str:
    """The registry game's Atari-HEAD name, or a ConfigError for a game never recorded."""
    if game in GAMES:
        return GAMES[game]
    why = "was never recorded in Atari-HEAD" if game in NOT_RECORDED else "is not an Atari-HEAD game"
    raise ConfigError(f"game={game}: {why}; expected one of {', '.join(sorted(GAMES))}")


def open_dataset(cfg: DictConfig) -> AtariHead:
    root = cfg.saliency.root
    if root in (None, ""):
        raise ConfigError("saliency.root is not set: point it at an Atari-HEAD download (the folder of meta_data.csv)")
    try:
        return AtariHead(root)
    except AtariHeadError as e:
        raise ConfigError(f"saliency.root={root}: {e}") from None


def check_saliency_config(cfg: DictConfig) -> None:
    """Every reason src/saliency.py could not score a cell, as one ConfigError."""
    check_switches(cfg)
    pack_seeds(cfg)
    resolve_device(cfg.device)
    check_threads(cfg.torch_threads)
    ah = cfg.saliency
    # the saliency checks (fls.saliency_checks) run on any game: gaze is scored where Atari-HEAD has it
    gaze = not ah.get("checks") or cfg.game.name in GAMES
    if gaze:
        atari_head_game(cfg.game.name)
    check_listed("saliency.resolutions", ah.resolutions, list(RESOLUTIONS))
    check_listed("saliency.frame_alignments", ah.frame_alignments, ALIGNMENTS)
    if not isinstance(ah.preset, str) or not PRESET.match(ah.preset):
        raise ConfigError(f"saliency.preset={ah.preset}: expected a name of lower-case letters, digits and '_'")
    if ah.normalize not in NORMALIZATIONS:
        raise ConfigError(f"saliency.normalize={ah.normalize}: expected one of {', '.join(NORMALIZATIONS)}")
    if ah.upscale not in UPSCALE_MODES:
        raise ConfigError(f"saliency.upscale={ah.upscale}: expected one of {', '.join(UPSCALE_MODES)}")
    if ah.stack_fill not in STACK_FILLS:
        raise ConfigError(f"saliency.stack_fill={ah.stack_fill}: expected one of {', '.join(STACK_FILLS)}")
    if ah.baselines:
        check_listed("saliency.baselines", ah.baselines, BASELINES)
    if ah.maps:
        check_listed("saliency.maps", ah.maps, posthoc.MAPS)
    elif not ah.baselines:
        raise ConfigError("saliency.maps=[] and saliency.baselines=[]: nothing to score; "
                          f"give maps of {', '.join(posthoc.MAPS)} or baselines of {', '.join(BASELINES)}")
    try:
        posthoc.check_posthoc_config(ah.posthoc)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key in ("sauc_other_frames", "sauc_splits", "batch_size"):
        if as_int(f"saliency.{key}", ah[key]) <= 0:
            raise ConfigError(f"saliency.{key}={ah[key]}: must be a positive integer")
    as_int("saliency.seed", ah.seed)
    if ah.max_frames is not None and as_int("saliency.max_frames", ah.max_frames) < 2:
        raise ConfigError(f"saliency.max_frames={ah.max_frames}: must be at least 2 processed frames (or null: all)")
    for res in RESOLUTIONS:
        key = f"kl_sigma_{res}"
        try:
            positive = float(ah[key]) > 0
        except (TypeError, ValueError):
            positive = False
        if not positive:
            raise ConfigError(f"saliency.{key}={ah[key]}: must be a positive number of pixels")
    if not float(ah.center_sigma) > 0:
        raise ConfigError(f"saliency.center_sigma={ah.center_sigma}: must be a positive fraction of the frame")
    if ah.trials is not None:
        for t in [ah.trials] if isinstance(ah.trials, (int, str)) else ah.trials:
            as_int("saliency.trials", t, hint=" (trial ids of meta_data.csv, or null: all of the game)")
    if gaze:
        open_dataset(cfg)


@dataclass(frozen=True)
class Settings:
    """What a number depends on besides the checkpoint, trial, alignment and resolution."""

    preset: str
    stack_fill: str
    normalize: str
    upscale: str
    highscore_trials: bool
    kl_sigma: dict[str, float]
    sauc_other_frames: int
    sauc_splits: int
    seed: int
    max_frames: int | None
    center_sigma: float
    posthoc: PostHocSettings

    @classmethod
    def from_config(cls, ah: DictConfig) -> Settings:
        return cls(
            preset=str(ah.preset),
            stack_fill=str(ah.stack_fill),
            normalize=str(ah.normalize),
            upscale=str(ah.upscale),
            highscore_trials=bool(ah.highscore_trials),
            kl_sigma={res: float(ah[f"kl_sigma_{res}"]) for res in RESOLUTIONS},
            sauc_other_frames=int(ah.sauc_other_frames),
            sauc_splits=int(ah.sauc_splits),
            seed=int(ah.seed),
            max_frames=None if ah.max_frames is None else int(ah.max_frames),
            center_sigma=float(ah.center_sigma),
            posthoc=PostHocSettings.from_config(ah.posthoc),
        )


def cache_key(settings: Settings, checkpoint_global_step: int | None, maps: list[str]) -> dict[str, Any]:
    key = {k: v for k, v in settings.__dict__.items() if k != "posthoc"}
    if any(m in posthoc.METHODS for m in maps):  # only then do their settings change a number
        key["posthoc"] = settings.posthoc.key()
    return {**key, "checkpoint_global_step": checkpoint_global_step, "maps": sorted(maps)}


# ---------------------------------------------------------------------------------------
# Scoring one trial
# ---------------------------------------------------------------------------------------


@dataclass
class PlayedTrial:
    """What the metrics need of a trial: processed-frame indices, gaze, the maps drawn (84 x 84)."""

    indices: np.ndarray  # raw frame index of each processed frame
    gaze: list[np.ndarray]  # (n, 2) gaze points behind each processed frame
    saliency: dict[str, np.ndarray]  # map name (fls.saliency.posthoc.MAPS) -> float32 (frames, 84, 84)
    shots: dict[int, np.ndarray] = field(default_factory=dict)  # processed frame k (SHOTS) -> its raw RGB screen


# Processed frames whose screens are kept, to show the maps on them (fls.wandb_results).
SHOTS = (2, 6, 64, 512)


def play(trial: Trial, alignment: str, settings: Settings, model: torch.nn.Module | None, drawn: list[str],
         device: torch.device, batch_size: int, bar: tqdm) -> PlayedTrial:
    """Play the trial and draw each map of `drawn` (the model's own, post-hoc methods) on every processed frame."""
    indices, gaze, batch = [], [], []
    shots: dict[int, np.ndarray] = {}
    maps: dict[str, list[np.ndarray]] = {name: [] for name in drawn}

    def flush() -> None:
        if batch and drawn:
            obs = torch.from_numpy(np.stack(batch)).to(device)
            for name in drawn:
                maps[name].append(posthoc.draw(model, obs, name, settings.posthoc).cpu().numpy())
        bar.update(len(batch))
        batch.clear()

    for frame in play_trial(trial, frame_alignment=alignment, stack_fill=settings.stack_fill):
        if settings.max_frames is not None and len(indices) >= settings.max_frames:
            break
        if len(indices) in SHOTS:
            shots[len(indices)] = frame.raw
        indices.append(frame.index)
        gaze.append(frame.gaze)
        batch.append(frame.stack)
        if len(batch) == batch_size:
            flush()
    flush()
    saliency = {name: np.concatenate(parts) for name, parts in maps.items() if parts}
    if settings.normalize == "trial_max":
        # the authors' render_attention: every map of the trial over the trial's largest value
        for name, values in saliency.items():
            peak = float(values.max())
            if peak > 0:
                saliency[name] = values / peak
    return PlayedTrial(np.asarray(indices), gaze, saliency, shots)


def score_frames(saliency_of: Callable[[int], np.ndarray], gaze: list[np.ndarray], shape: tuple[int, int],
                 sigma: float, settings: Settings) -> dict[str, np.ndarray]:
    """NSS, KL and shuffled AUC of each frame's map (NaN where undefined).

    Maps and fixation maps are made one frame at a time from `saliency_of(k)` and the gaze
    points: a full trial's worth at 210 x 160 would take gigabytes.
    """
    n = len(gaze)
    out = {m: np.full(n, np.nan) for m in METRICS}
    defined = np.zeros(n, dtype=bool)
    for k in range(n):
        saliency, fixations = saliency_of(k), fixation_map(gaze[k], shape)
        out["nss"][k] = nss(saliency, fixations)
        out["kl"][k] = kl_divergence(saliency, fixations, sigma=sigma)
        defined[k] = fixations.any() and np.isfinite(saliency).all()
    # The authors drew the other frames only for frames with a metric (gaze present, map finite).
    frames = np.flatnonzero(defined)
    if n >= 2 and len(frames):
        others = pick_other_frames(n, frames, k=settings.sauc_other_frames, seed=settings.seed)
        for k, picks in zip(frames, others):
            other = fixation_map(np.concatenate([gaze[p] for p in picks]), shape)  # counts add up
            out["sauc"][k] = shuffled_auc(saliency_of(k), fixation_map(gaze[k], shape), other,
                                          n_splits=settings.sauc_splits, seed=settings.seed)
    return out


def score_trial(played: PlayedTrial, trial_id: int, alignment: str, resolution: str, maps: list[str],
                settings: Settings) -> pd.DataFrame:
    shape = RESOLUTIONS[resolution]
    rows = []
    for name in maps:
        if name in played.saliency:
            drawn = played.saliency[name]
            if resolution == "84x84":
                saliency_of = drawn.__getitem__
            else:
                def saliency_of(k: int, drawn: np.ndarray = drawn) -> np.ndarray:
                    return upscale_saliency(drawn[k], shape, mode=settings.upscale)
        else:
            constant = center_bias(shape, settings.center_sigma) if name == "center" else uniform(shape)

            def saliency_of(k: int, constant: np.ndarray = constant) -> np.ndarray:
                return constant
        scores = score_frames(saliency_of, played.gaze, shape, settings.kl_sigma[resolution], settings)
        rows.append(pd.DataFrame({
            "trial": trial_id, "frame": played.indices, "map": name, "preset": settings.preset, "resolution": resolution,
            "alignment": alignment, "gaze_points": [len(g) for g in played.gaze], **scores,
        }))
    return pd.concat(rows, ignore_index=True)[FRAME_COLUMNS]


def summarize_trial(frames: pd.DataFrame, checkpoint_global_step: int | None) -> pd.DataFrame:
    rows = []
    for (trial, name, preset, resolution, alignment), part in frames.groupby(["trial", "map", "preset", "resolution", "alignment"], sort=False):
        row = {"trial": trial, "map": name, "preset": preset, "resolution": resolution, "alignment": alignment}
        for m in METRICS:
            values = part[m].dropna()
            row[m] = float(values.mean()) if len(values) else np.nan
            row[f"{m}_frames"] = int(len(values))
        row["frames"] = int(len(part))
        row["checkpoint_global_step"] = checkpoint_global_step
        rows.append(row)
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


# ---------------------------------------------------------------------------------------
# Cached per-frame files
# ---------------------------------------------------------------------------------------


def write_frames(path: Path, frames: pd.DataFrame, key: dict[str, Any]) -> None:
    table = pa.Table.from_pandas(frames, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), KEY_FIELD: json.dumps(key).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_frames(path: Path) -> pd.DataFrame | None:
    """A per-frame file's rows, every data page checked against its checksum; None when it
    does not read back whole."""
    try:
        return pq.read_table(path, page_checksum_verification=True).to_pandas()
    except (OSError, pa.ArrowException, ValueError):
        return None


def read_key(path: Path) -> dict[str, Any] | None:
    """The key a per-frame file was computed under; None if absent or unreadable."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(KEY_FIELD)
        return json.loads(raw) if raw else None
    except (OSError, pa.ArrowException, ValueError):
        return None


def is_cached(path: Path, key: dict[str, Any]) -> bool:
    """Whether `path` holds the results of `key`, whole (a damaged file is said and recomputed)."""
    if read_key(path) != key:
        return False
    if read_frames(path) is None:
        log.warning("%s does not read back whole (a damaged block?); recomputing it", path)
        return False
    return True


# What may change between runs of one preset: a newer checkpoint, a new copy of the data,
# which maps are scored; anything else is another setting, which gets another preset name.
RECOMPUTED = ("checkpoint_global_step", "data", "maps")


def _settings(file_key: dict[str, Any], key: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings two keys are compared on: all but RECOMPUTED, and the post-hoc settings
    only when both computed post-hoc maps (a key has them only then)."""
    skip = set(RECOMPUTED) | ({"posthoc"} if not ("posthoc" in file_key and "posthoc" in key) else set())
    return ({k: v for k, v in file_key.items() if k not in skip}, {k: v for k, v in key.items() if k not in skip})


def belongs(file_key: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    """Whether a per-frame file counts in trials.csv: computed on the current checkpoint and,
    for the current preset, with the current settings (whichever maps it scored, from
    whichever copy of the data); another preset (its own folder) counts on the same checkpoint."""
    if file_key is None or file_key.get("checkpoint_global_step") != key["checkpoint_global_step"]:
        return False
    if file_key.get("preset") == key["preset"]:
        ours, theirs = _settings(file_key, key)
        return ours == theirs
    return True


def refuse_other_settings(path: Path, file_key: dict[str, Any] | None, key: dict[str, Any]) -> None:
    """A cached per-frame file of the same preset computed with other settings is not
    replaced without saliency.overwrite=true: ConfigError naming what differs."""
    if file_key is None:
        return
    differ = list(changes(*_settings(file_key, key)))
    if differ:
        what = "; ".join(f"saliency.{k}: {a} -> {b}" for k, a, b in differ[:4])
        raise ConfigError(
            f"{path} holds preset {key['preset']}'s results with other settings ({what}); keep both by "
            "naming these settings with saliency.preset=<new name>, or replace them with saliency.overwrite=true"
        )


def rebuild_trials(cell: CellDir, key: dict[str, Any]) -> pd.DataFrame:
    """trials.csv from the per-frame files of every preset (see `belongs`), in a stable order."""
    files = sorted(cell.saliency_frames_dir().glob("*/trial_*.parquet"))
    parts = []
    for path in files:
        if belongs(read_key(path), key):
            frames = read_frames(path)
            if frames is None:  # another preset's file, which this run does not recompute
                log.warning("%s does not read back whole (a damaged block?); left out of trials.csv: score its "
                            "preset again (saliency.preset=%s) to recompute it", path, path.parent.name)
                continue
            parts.append(frames)
    frames = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FRAME_COLUMNS)
    trials = summarize_trial(frames, key["checkpoint_global_step"])
    trials = trials.sort_values(["preset", "resolution", "alignment", "trial", "map"], kind="stable", ignore_index=True)
    atomic_write_text(cell.saliency_trials, trials.to_csv(index=False, float_format="%.6g"))
    return trials


# ---------------------------------------------------------------------------------------
# A cell
# ---------------------------------------------------------------------------------------


def select_trials(dataset: AtariHead, game: str, wanted: Any, highscore_trials: bool = True) -> list[TrialInfo]:
    """The trials to score: `saliency.trials` (ids), or every trial of the game on disk
    (without the v4 release's later best-player recordings when highscore_trials is false)."""
    key = atari_head_game(game)
    every = dataset.trials(game)
    found = [t for t in every if highscore_trials or not t.highscore]
    if wanted is None:
        if not found:
            left_out = f" but {len(every)} highscore trial(s), which saliency.highscore_trials=false leaves out" if every else ""
            raise ConfigError(f"saliency.root={dataset.root}: no {key} trials there (game={game}){left_out}")
        return found
    ids = [int(t) for t in ([wanted] if isinstance(wanted, (int, str)) else wanted)]
    infos = []
    for trial_id in ids:
        try:
            info = dataset.trial(trial_id)
        except AtariHeadError as e:
            raise ConfigError(f"saliency.trials={trial_id}: {e}") from None
        if info.game != key:
            raise ConfigError(f"saliency.trials={trial_id}: a {info.game} trial, but the cell plays {game}")
        if info.highscore and not highscore_trials:
            raise ConfigError(f"saliency.trials={trial_id}: a highscore trial, which saliency.highscore_trials=false leaves out")
        infos.append(info)
    return infos


def score_cell(cfg: DictConfig, cell: CellDir) -> pd.DataFrame:
    """Score one trained cell on Atari-HEAD; returns its trials.csv rows (NotTrained: nothing
    to score)."""
    check_saliency_config(cfg)
    trained = open_trained_cell(cfg, cell)
    with cell.lock("saliency"):
        for folder in [cell.saliency_dir, *cell.saliency_frames_dir().glob("*")]:
            if folder.is_dir():  # what writers killed mid-write left (the lock keeps out live ones)
                remove_temporaries(folder)
        return _score(cfg, cell, trained)


def _score(cfg: DictConfig, cell: CellDir, trained: TrainedCell) -> pd.DataFrame:
    ah = cfg.saliency
    model, device = trained.model, trained.device
    drawn = []
    for name in check_listed("saliency.maps", ah.maps, posthoc.MAPS) if ah.maps else []:
        why = posthoc.needs(name, model)
        if why:
            log.info("%s: %s; not scoring saliency.maps=%s", cell.cell.key, why, name)
        else:
            drawn.append(name)
    maps = drawn + list(ah.baselines or [])
    if not maps:
        raise ConfigError(f"saliency.maps={list(ah.maps or [])} and saliency.baselines=[]: {model.name} has no "
                          "attention map, so there is nothing to score; add post-hoc maps (saliency.maps=[jacobian]) or baselines")
    settings = Settings.from_config(ah)
    key = cache_key(settings, trained.global_step, maps)
    resolutions = check_listed("saliency.resolutions", ah.resolutions, list(RESOLUTIONS))
    alignments = check_listed("saliency.frame_alignments", ah.frame_alignments, ALIGNMENTS)
    dataset = open_dataset(cfg)
    infos = select_trials(dataset, cfg.game.name, ah.trials, settings.highscore_trials)

    todo = []
    for info in infos:
        trial_key = {**key, "data": info.fingerprint()}
        for alignment in alignments:
            paths = {res: cell.saliency_frames(info.trial_id, alignment, res, settings.preset) for res in resolutions}
            stale = {res: p for res, p in paths.items() if ah.overwrite or not is_cached(p, trial_key)}
            if not ah.overwrite:
                for p in stale.values():
                    refuse_other_settings(p, read_key(p), trial_key)
            if stale:
                todo.append((info, alignment, stale, trial_key))
    cached = len(infos) * len(alignments) - len(todo)
    log.info("%s: %d trial(s) of %s x %s x %s; %d cached", cell.cell.key, len(infos), cfg.game.name,
             "+".join(alignments), "+".join(resolutions), cached)

    shown = None
    if todo:
        loaded = {info.trial_id: dataset.load(info) for info, _, _, _ in todo}
        total = sum(min(len(processed_indices(len(loaded[info.trial_id]), alignment)), settings.max_frames or sys.maxsize)
                    for info, alignment, _, _ in todo)
        with tqdm(total=total, unit="frame", desc=f"{cell.cell.key} saliency",
                  disable=not sys.stderr.isatty(), dynamic_ncols=True) as bar:
            for info, alignment, stale, trial_key in todo:
                played = play(loaded[info.trial_id], alignment, settings, model, drawn, device, int(ah.batch_size), bar)
                if len(played.indices) < 2:
                    raise AtariHeadError(f"{info.labels}: {len(played.indices)} processed frame(s); the metrics need 2")
                shown = shown or (info.trial_id, played)
                for res, path in stale.items():
                    frames = score_trial(played, info.trial_id, alignment, res, maps, settings)
                    write_frames(path, frames, trial_key)
                    log.info("trial %d (%s, %s): %s", info.trial_id, alignment, res, _brief(frames))
    trials = rebuild_trials(cell, key)
    log.info("%s: wrote %s (%d rows)", cell.cell.key, cell.saliency_trials, len(trials))
    if todo:  # new numbers: to the cell's W&B run too (logger=wandb)
        log_saliency(cfg, cell, trials, shown)
    return trials


def _brief(frames: pd.DataFrame) -> str:
    means = frames.groupby("map", sort=False)[list(METRICS)].mean()
    return "; ".join(f"{name} " + " ".join(f"{m} {v:.3f}" for m, v in row.items()) for name, row in means.iterrows())

