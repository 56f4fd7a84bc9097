"""Do the maps mean anything? The saliency checks of a trained cell, for every map its model
has, cached per frame in the cell (docs/saliency_checks.md).

    python src/saliency.py zoo=breakout_sparse_fls saliency.checks=[randomization,deletion,insertion]
    python src/saliency.py study=demo game=mspacman model=sparse_fls saliency.checks=[deletion]

The checks (saliency.checks) run on the frames of each source of saliency.check.sources:
- `games`: the cell's own game played greedily from the evaluation protocol's seeds
  (fls.evaluation.eval_seed: game g on seed + g, the reference env stack, the evaluation frame
  limit), a frame every `every` agent steps from step `start`, game after game until `frames`;
- `atari_head`: the recorded trials of saliency.root through the training preprocessing
  (fls.saliency.gaze, the first of saliency.frame_alignments, saliency.stack_fill), a processed
  frame every `every` from `start`, trial after trial; a game without trials there has none.

On those frames, for every map (saliency.check.maps; default every map the model has: its own
where it has one and each post-hoc method of fls.saliency.posthoc):
- `randomization`: fls.saliency.sanity.randomization, every stage of the cascade, the attention
  module alone and a fresh model; the stage models are built once and shared by the maps;
- `deletion`, `insertion`: fls.saliency.fidelity's curves in the map's order, and in the two
  baseline orders (fidelity.BASELINES: random, center), which are checked like maps.

Each (source, check, map) is one file, CellDir.saliency_check: per frame (randomization: per
frame and stage, with the maps of the first frame, the probe, for the figure; fidelity: the
two areas and both curves), the key it was computed under in its metadata, written atomically
with page checksums (fls.gaze_scores.write_frames). The cache follows the gaze scores'
rules: a file of the same key is read instead of recomputed, a damaged one recomputed; another
checkpoint or another copy of the data recomputes it; other settings under the same
saliency.preset are refused in one line (saliency.preset=<new name> keeps both,
saliency.overwrite=true replaces them), before anything is computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fls.config import check_listed
from fls.durable import remove_temporaries
from fls.envs import make_vec_env
from fls.errors import ConfigError
from fls.evaluation import env_protocol, eval_seed
from fls.facts import as_float, as_int, changes
from fls.games import eval_frame_limit
from fls.rundir import CellDir
from fls.saliency import fidelity, posthoc, sanity
from fls.saliency.atari_head import GAMES, AtariHead, TrialInfo
from fls.saliency.fidelity import FidelitySettings
from fls.saliency.gaze import ALIGNMENTS, play_trial, processed_indices
from fls.saliency.posthoc import PostHocSettings
from fls.saliency.sanity import SanitySettings
from fls.gaze_scores import (check_saliency_config, is_cached, open_dataset, read_frames, read_key, select_trials,
                                  write_frames)
from fls.trained_cell import TrainedCell, open_trained_cell

log = logging.getLogger(__name__)

CHECKS = ("randomization", "deletion", "insertion")
FIDELITY = ("deletion", "insertion")
SOURCES = ("games", "atari_head")
TRAINED = "trained"  # the randomization's stage 0: the trained model itself (similarity 1)
# What may change between runs of one preset without a refusal: a newer checkpoint, another copy of the data
RECOMPUTED = ("checkpoint_global_step", "data")
RANDOMIZATION_COLUMNS = ["source", "map", "frame", "origin", "step", "stage_index", "stage", "cascade", "layers",
                         *sanity.SIMILARITIES, "probe", "probe_obs"]
FIDELITY_COLUMNS = ["source", "map", "check", "frame", "origin", "step", "action", "kl_auc", "prob_auc", "kl", "prob"]


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSettings:
    """saliency.check (conf/checks/default.yaml), checked."""

    maps: tuple[str, ...] | None
    sources: tuple[str, ...]
    frames: int
    every: int
    start: int
    sanity: SanitySettings
    fidelity: FidelitySettings

    @classmethod
    def from_config(cls, c: DictConfig) -> CheckSettings:
        """The settings of `saliency.check`, or a ConfigError naming the first bad one."""
        maps = None if c.maps is None else tuple(check_listed("saliency.check.maps", c.maps, posthoc.MAPS, "some of"))
        sources = tuple(check_listed("saliency.check.sources", c.sources, SOURCES, "some of"))
        numbers = {}
        for key, low in (("frames", 1), ("every", 1), ("start", 0), ("steps", 1), ("batch", 1), ("seed", 0)):
            numbers[key] = as_int(f"saliency.check.{key}", c[key])
            if numbers[key] < low:
                raise ConfigError(f"saliency.check.{key}={c[key]}: expected an integer >= {low}")
        top_k, blur = as_float("saliency.check.top_k", c.top_k), as_float("saliency.check.blur_sigma", c.blur_sigma)
        if not 0 < top_k <= 1:
            raise ConfigError(f"saliency.check.top_k={c.top_k}: expected a share of the pixels in (0, 1]")
        if not blur > 0:
            raise ConfigError(f"saliency.check.blur_sigma={c.blur_sigma}: expected a positive number of pixels")
        return cls(maps, sources, numbers["frames"], numbers["every"], numbers["start"],
                   SanitySettings(top_k=top_k, seed=numbers["seed"]),
                   FidelitySettings(steps=numbers["steps"], blur_sigma=blur, seed=numbers["seed"],
                                    batch=numbers["batch"]))


def asked(cfg: DictConfig) -> list[str]:
    """The checks of saliency.checks ([] when none)."""
    value = cfg.saliency.get("checks")
    return check_listed("saliency.checks", value, CHECKS, "some of") if value else []


def check_config(cfg: DictConfig) -> None:
    """Every reason src/saliency.py could not score or check a cell, as one ConfigError (the
    command line's check and the sweeper's preflight)."""
    check_saliency_config(cfg)
    if asked(cfg):
        CheckSettings.from_config(cfg.saliency.check)


def scores_gaze(cfg: DictConfig) -> bool:
    """Whether src/saliency.py scores the cell against gaze: always without checks (the gaze
    scoring says why it cannot); with checks, where saliency.root holds trials of the game."""
    if not asked(cfg):
        return True
    if cfg.game.name in GAMES and (cfg.saliency.trials is not None or _trials_on_disk(open_dataset(cfg), cfg)):
        return True
    log.info("no Atari-HEAD trial of %s under saliency.root=%s: no gaze scores, the saliency checks alone",
             cfg.game.name, cfg.saliency.root)
    return False


def _trials_on_disk(dataset: AtariHead, cfg: DictConfig) -> list[TrialInfo]:
    return [t for t in dataset.trials(cfg.game.name) if cfg.saliency.highscore_trials or not t.highscore]


# ---------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------


@dataclass
class Frames:
    """The frames of one source that the checks run on."""

    source: str
    stacks: np.ndarray  # uint8 N x 4 x 84 x 84
    origin: np.ndarray  # per frame: the game (games) or the trial id (atari_head)
    step: np.ndarray  # per frame: the agent step in its game, or the raw frame index in its trial
    screens: list[np.ndarray] | None = field(default=None, repr=False)  # raw 210 x 160 RGB per frame
    gaze: list[np.ndarray] | None = field(default=None, repr=False)  # atari_head: gaze points per frame

    def __len__(self) -> int:
        return len(self.stacks)


@dataclass
class FramePlan:
    """Where a source's frames come from, before they are played: what identifies them (a part
    of every result's key) and how to get them."""

    source: str
    key: dict[str, Any]
    data: Any  # atari_head: the fingerprints of the trials read (RECOMPUTED: another copy is recomputed)
    collect: Callable[[], Frames]


def game_frames(trained: TrainedCell, cfg: DictConfig, n: int, every: int, start: int,
                screens: bool = False) -> Frames:
    """`n` frames of the cell's game played greedily from the evaluation seeds: a frame every
    `every` agent steps from step `start`, game g on eval_seed + g, until there are `n` (or
    `n` games were played). `screens`: keep the raw screen of each (the reference backend's)."""
    env_cfg, limit, seed = _game_protocol(cfg)
    stacks, origin, steps, raws = [], [], [], []
    with make_vec_env(cfg.game, env_cfg, 1, max_episode_frames=limit) as envs:
        for g in range(n):
            obs, step = envs.reset(seed=seed + g), 0
            while len(stacks) < n:
                if step >= start and (step - start) % every == 0:
                    stacks.append(obs[0].copy())
                    origin.append(g)
                    steps.append(step)
                    if screens:
                        raws.append(envs.screen(0))
                action = trained.model.act(torch.from_numpy(obs).to(trained.device), greedy=True)
                obs, result = envs.step(action.cpu().numpy())
                step += 1
                if result.game_over[0]:
                    break
            if len(stacks) == n:
                break
    if not stacks:
        raise ConfigError(f"saliency.check.start={start}: none of {n} greedy games of {cfg.game.name} lasted "
                          f"{start} agent steps; lower it")
    return Frames("games", np.stack(stacks), np.array(origin), np.array(steps), raws if screens else None)


def _game_protocol(cfg: DictConfig) -> tuple[DictConfig, int, int]:
    """(env settings, frame limit, first seed) of the games: the evaluation protocol's, on the
    reference backend (the one that shows the screen)."""
    env_cfg = OmegaConf.merge(cfg.env, {"backend": "gymnasium"})
    return env_cfg, eval_frame_limit(cfg.game, cfg.eval), eval_seed(cfg)


def games_plan(trained: TrainedCell, cfg: DictConfig, settings: CheckSettings) -> FramePlan:
    env_cfg, limit, seed = _game_protocol(cfg)
    key = {"source": "games", "seed": seed, "frames": settings.frames, "every": settings.every,
           "start": settings.start, "max_frames": limit, "env": env_protocol(env_cfg, cfg.game), "greedy": True}
    return FramePlan("games", key, None,
                     lambda: game_frames(trained, cfg, settings.frames, settings.every, settings.start))


def atari_head_plan(cfg: DictConfig, n: int, every: int, start: int) -> FramePlan | None:
    """The Atari-HEAD frames of the cell's game: `n` processed frames, one every `every` from
    the `start`-th, trial after trial (saliency.trials, else every trial on disk); None when
    saliency.root has no trial of the game."""
    if cfg.game.name not in GAMES:
        return None
    ah = cfg.saliency
    dataset = open_dataset(cfg)
    if not _trials_on_disk(dataset, cfg) and ah.trials is None:
        return None
    alignment = check_listed("saliency.frame_alignments", ah.frame_alignments, ALIGNMENTS, "some of")[0]
    used, count = [], 0
    for info in select_trials(dataset, cfg.game.name, ah.trials, bool(ah.highscore_trials)):
        trial = dataset.load(info)
        picks = [k for k in range(len(processed_indices(len(trial), alignment))) if k >= start and (k - start) % every == 0]
        if picks:
            used.append((trial, picks[:n - count]))
            count += len(used[-1][1])
        if count >= n:
            break
    if not used:
        return None
    key = {"source": "atari_head", "trials": [t.info.trial_id for t, _ in used], "alignment": alignment,
           "stack_fill": str(ah.stack_fill), "frames": n, "every": every, "start": start}

    def collect() -> Frames:
        stacks, origin, steps, raws, gaze = [], [], [], [], []
        for trial, picks in used:
            wanted = set(picks)
            for k, frame in enumerate(play_trial(trial, frame_alignment=alignment, stack_fill=str(ah.stack_fill))):
                if k in wanted:
                    stacks.append(frame.stack)
                    origin.append(trial.info.trial_id)
                    steps.append(frame.index)
                    raws.append(frame.raw)
                    gaze.append(frame.gaze)
                if k >= picks[-1]:
                    break
        return Frames("atari_head", np.stack(stacks), np.array(origin), np.array(steps), raws, gaze)

    return FramePlan("atari_head", key, [t.info.fingerprint() for t, _ in used], collect)


# ---------------------------------------------------------------------------------------
# A cell
# ---------------------------------------------------------------------------------------


def run_checks(cfg: DictConfig, cell: CellDir) -> pd.DataFrame:
    """The checks of saliency.checks on one trained cell; returns the summary of its results
    (one row per source, check and map). NotTrained when the cell has nothing to use."""
    check_config(cfg)
    trained = open_trained_cell(cfg, cell)
    with cell.lock("saliency"):
        for folder in cell.saliency_checks_dir(str(cfg.saliency.preset)).glob("*"):
            if folder.is_dir():  # what writers killed mid-write left (the lock keeps out live ones)
                remove_temporaries(folder)
        return _run(cfg, cell, trained)


@dataclass
class Todo:
    check: str
    name: str  # a map of posthoc.MAPS, or a baseline order of fidelity.BASELINES
    path: Path
    key: dict[str, Any]


def _maps(cell: CellDir, model, settings: CheckSettings) -> list[str]:
    drawn = []
    for name in settings.maps or posthoc.MAPS:
        why = posthoc.needs(name, model)
        if why:
            if settings.maps:  # asked for by name: say why it is not checked
                log.info("%s: %s; not checking it", cell.cell.key, why)
        else:
            drawn.append(name)
    return drawn


def result_key(cfg: DictConfig, plan: FramePlan, check: str, name: str, settings: CheckSettings,
               posthoc_settings: PostHocSettings, step: int) -> dict[str, Any]:
    """What one file's numbers depend on."""
    key: dict[str, Any] = {"preset": str(cfg.saliency.preset), "check": check, "map": name, "frames": plan.key}
    if check == "randomization":
        key["settings"] = settings.sanity.key()
    else:
        key["settings"] = settings.fidelity.key()
        if name == "center":
            key["settings"]["center_sigma"] = float(cfg.saliency.center_sigma)
    if name in posthoc.METHODS:
        key["posthoc"] = posthoc_settings.key()
    return {**key, "checkpoint_global_step": step, "data": plan.data}


def refuse_other_settings(path: Path, file_key: dict[str, Any] | None, key: dict[str, Any]) -> None:
    """The gaze scores' rule (fls.gaze_scores.refuse_other_settings): a file of the same
    preset computed with other settings is not replaced without saliency.overwrite=true."""
    if file_key is None:
        return
    ours = {k: v for k, v in file_key.items() if k not in RECOMPUTED}
    theirs = {k: v for k, v in key.items() if k not in RECOMPUTED}
    differ = list(changes(ours, theirs))
    if differ:
        what = "; ".join(f"{_config_key(k)}: {a} -> {b}" for k, a, b in differ[:4])
        raise ConfigError(
            f"{path} holds preset {key['preset']}'s check with other settings ({what}); keep both by naming "
            "these settings with saliency.preset=<new name>, or replace them with saliency.overwrite=true")


# where each part of a result's key comes from in the config
_KEY_SOURCES = {"frames.seed": "eval.seed_offset", "frames.max_frames": "eval.max_frames", "frames.env": "env",
                "frames.trials": "saliency.trials", "frames.alignment": "saliency.frame_alignments",
                "frames.stack_fill": "saliency.stack_fill", "settings.center_sigma": "saliency.center_sigma",
                "frames": "saliency.check", "settings": "saliency.check", "posthoc": "saliency.posthoc"}


def _config_key(path: str) -> str:
    """The config key a part of a result's key comes from (`frames.every` -> saliency.check.every)."""
    for prefix, key in _KEY_SOURCES.items():
        if path == prefix or path.startswith(prefix + "."):
            rest = path[len(prefix) + 1:]
            if key in ("saliency.check", "saliency.posthoc", "env"):
                return f"{key}.{rest}" if rest else key
            return key
    return path


def _run(cfg: DictConfig, cell: CellDir, trained: TrainedCell) -> pd.DataFrame:
    ah = cfg.saliency
    checks = asked(cfg)
    settings = CheckSettings.from_config(ah.check)
    posthoc_settings = PostHocSettings.from_config(ah.posthoc)
    model = trained.model
    maps = _maps(cell, model, settings)
    if not maps:
        raise ConfigError(f"saliency.check.maps={list(settings.maps or [])}: {model.name} draws none of them; "
                          f"expected some of {', '.join(posthoc.MAPS)}")
    preset = str(ah.preset)

    # Plan every source and refuse changed settings before anything is computed
    plans, total = [], 0
    for source in settings.sources:
        if source == "games":
            plan = games_plan(trained, cfg, settings)
        else:
            plan = atari_head_plan(cfg, settings.frames, settings.every, settings.start)
            if plan is None:
                log.info("%s: no Atari-HEAD trial of %s under saliency.root=%s: the checks run on the games' "
                         "frames alone", cell.cell.key, cfg.game.name, ah.root)
                continue
        todo = []
        for check in checks:
            for name in maps + (list(fidelity.BASELINES) if check in FIDELITY else []):
                total += 1
                path = cell.saliency_check(source, check, name, preset)
                key = result_key(cfg, plan, check, name, settings, posthoc_settings, trained.global_step)
                if ah.overwrite or not is_cached(path, key):
                    if not ah.overwrite:
                        refuse_other_settings(path, read_key(path), key)
                    todo.append(Todo(check, name, path, key))
        plans.append((plan, todo))
    cached = total - sum(len(todo) for _, todo in plans)
    log.info("%s: %s of %s on %s; %d result(s) cached", cell.cell.key, "+".join(checks), ", ".join(maps),
             "+".join(p.source for p, _ in plans), cached)

    for plan, todo in plans:
        if not todo:
            continue
        start = time.perf_counter()
        frames = plan.collect()
        obs = torch.from_numpy(frames.stacks).to(trained.device)
        log.info("%s: %d %s frames (%.1f s)", cell.cell.key, len(frames), plan.source, time.perf_counter() - start)
        randomize = [t for t in todo if t.check == "randomization"]
        if randomize:
            staged = list(sanity.stage_models(model, settings.sanity.seed))  # shared by every map
            for t in randomize:
                start = time.perf_counter()
                result = sanity.randomization(model, obs, t.name, settings.sanity, posthoc_settings, keep_maps=True,
                                              staged=staged)
                write_frames(t.path, randomization_rows(frames, t.name, result), t.key)
                log.info("%s: randomization of %s on %s frames (%.1f s)", cell.cell.key, t.name, plan.source,
                         time.perf_counter() - start)
            del staged
        curves = {}
        for t in (t for t in todo if t.check in FIDELITY):
            if t.name not in curves:
                if t.name in fidelity.BASELINES:
                    curves[t.name] = fidelity.baseline_map(t.name, len(frames), settings.fidelity.seed,
                                                           float(ah.center_sigma))
                else:
                    curves[t.name] = posthoc.draw(model, obs, t.name, posthoc_settings).cpu().numpy()
            start = time.perf_counter()
            result = fidelity.curves(model, obs, curves[t.name], t.check, settings.fidelity)
            write_frames(t.path, fidelity_rows(frames, t.name, result), t.key)
            log.info("%s: %s of %s on %s frames (%.1f s)", cell.cell.key, t.check, t.name, plan.source,
                     time.perf_counter() - start)
    summary = summarize(read_cell(cell, preset, trained.global_step))
    for row in summary.itertuples():
        log.info("%s: %s %s %s: %s", cell.cell.key, row.source, row.check, row.map,
                 " ".join(f"{m} {getattr(row, m):.3f}" for m in SUMMARY_MEASURES[row.check]))
    return summary


# ---------------------------------------------------------------------------------------
# Rows, files, summaries
# ---------------------------------------------------------------------------------------


def randomization_rows(frames: Frames, name: str, result: sanity.SanityResult) -> pd.DataFrame:
    """Stage 0 (`trained`, similarity 1 by definition) then each stage, per frame; the maps of
    frame 0, the probe, as float32 bytes (not float16: the perturbation maps of a randomised
    policy head, whose init gain is 0.01, fall below what float16 resolves), and the probe's
    newest 84 x 84 image."""
    n = len(frames)
    parts = [(0, TRAINED, True, 0, np.ones((len(sanity.SIMILARITIES), n)), result.original[0])]
    for i, stage in enumerate(result.stages, 1):
        values = np.stack([result.similarity(m)[i - 1] for m in sanity.SIMILARITIES])
        parts.append((i, stage.name, stage.cascade, len(stage.layers), values, result.maps[i - 1][0]))
    rows = []
    for index, stage, cascade, layers, values, probe in parts:
        rows.append(pd.DataFrame({
            "source": frames.source, "map": name, "frame": np.arange(n), "origin": frames.origin, "step": frames.step,
            "stage_index": index, "stage": stage, "cascade": cascade, "layers": layers,
            **{m: values[j] for j, m in enumerate(sanity.SIMILARITIES)},
            "probe": [probe.astype(np.float32).tobytes()] + [None] * (n - 1),
            "probe_obs": [frames.stacks[0, -1].tobytes() if index == 0 else None] + [None] * (n - 1),
        }))
    return pd.concat(rows, ignore_index=True)[RANDOMIZATION_COLUMNS]


def fidelity_rows(frames: Frames, name: str, curves: fidelity.Curves) -> pd.DataFrame:
    return pd.DataFrame({
        "source": frames.source, "map": name, "check": curves.mode, "frame": np.arange(len(frames)),
        "origin": frames.origin, "step": frames.step, "action": curves.actions, "kl_auc": curves.kl_auc,
        "prob_auc": curves.prob_auc, "kl": list(curves.kl), "prob": list(curves.prob),
    })[FIDELITY_COLUMNS]


def read_cell(cell: CellDir, preset: str = "spec", step: int | None = None) -> dict[str, pd.DataFrame]:
    """The cell's check results of `preset` computed on checkpoint `step` (default: the newest
    any file has): {"randomization": rows, "deletion": rows, "insertion": rows} (empty frames
    for checks not run). A file that does not read back whole is left out, and said."""
    files = [(p, read_key(p)) for p in sorted(cell.saliency_checks_dir(preset).glob("*/*.parquet"))]
    files = [(p, k) for p, k in files if k is not None]
    if step is None and files:
        step = max(k.get("checkpoint_global_step") or 0 for _, k in files)
    parts: dict[str, list[pd.DataFrame]] = {c: [] for c in CHECKS}
    for path, key in files:
        if key.get("checkpoint_global_step") != step or key.get("check") not in parts:
            continue
        rows = read_frames(path)
        if rows is None:
            log.warning("%s does not read back whole (a damaged block?); left out: check the cell again to recompute it",
                        path)
            continue
        parts[key["check"]].append(rows)
    columns = {c: RANDOMIZATION_COLUMNS if c == "randomization" else FIDELITY_COLUMNS for c in CHECKS}
    return {c: pd.concat(p, ignore_index=True) if p else pd.DataFrame(columns=columns[c]) for c, p in parts.items()}


# the measures of a summary row, per check
SUMMARY_MEASURES = {"randomization": sanity.SIMILARITIES, "deletion": ("kl_auc", "prob_auc"),
                    "insertion": ("kl_auc", "prob_auc")}


def full_randomization(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last stage of the cascade (every layer re-initialised), per map (and
    per cell, where `rows` holds several: their cascades differ in length)."""
    cascade = rows[rows["cascade"] & (rows["stage"] != TRAINED)]
    keys = [k for k in ("game", "model", "seed", "source", "map") if k in cascade]
    last = cascade.groupby(keys)["stage_index"].transform("max")
    return cascade[cascade["stage_index"] == last]


def summarize(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (source, check, map): the mean over frames of each measure (randomization:
    at full randomisation), and how many frames."""
    rows = []
    for check, frame in results.items():
        if frame.empty:
            continue
        if check == "randomization":
            frame = full_randomization(frame)
        for (source, name), part in frame.groupby(["source", "map"], sort=False):
            row = {"source": source, "check": check, "map": name, "frames": int(part["frame"].nunique())}
            row.update({m: float(part[m].mean()) for m in SUMMARY_MEASURES[check]})
            rows.append(row)
    measures = list(dict.fromkeys(m for ms in SUMMARY_MEASURES.values() for m in ms))
    return pd.DataFrame(rows, columns=["source", "check", "map", "frames", *measures])
