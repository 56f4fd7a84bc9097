"""Saliency videos and contact sheets of a trained cell (the paper's Figure 4 and videos).

Each frame shows the raw 210 x 160 screen with the saliency map resized onto it
(bilinear, docs/protocol.md#saliency-map-of-a-frame) as a colour overlay, beside the 84 x 84 observation the agent
saw with the map at its own resolution. The model's own maps are divided by the largest
value in the clip, so brightness compares across the clip; post-hoc maps, whose peaks span
orders of magnitude over a game, each by its own (eval.video.scale). The map is the model's own
(eval.video.map=model; nature_cnn has none: its video shows the game alone) or any post-hoc
method of fls.saliency.posthoc (eval.video.map=greydanus), for any model. On a game whose
config locates the ball (Breakout), video.json also says how often the map is on it
(fls.saliency.ball).

Games are played through the one env factory on the gymnasium backend, the one that
exposes the raw RGB screen, with the cell's env settings (stack fill, no-ops, ...).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw

from fls.durable import atomic_write_bytes, atomic_write_text
from fls.envs import AtariVec, make_vec_env
from fls.errors import ConfigError
from fls.evaluation import check_eval_config, eval_game, eval_seed
from fls.rundir import CellDir
from fls.saliency import posthoc
from fls.saliency.ball import map_at_ball
from fls.overlay import HEAT, overlay, overlay_on_screen
from fls.trained_cell import TrainedCell, open_trained_cell

log = logging.getLogger(__name__)

SCALE = 2  # output pixels per screen pixel: 420 x 740 frames


def compose(raw: np.ndarray, obs: np.ndarray, map84: np.ndarray | None, scale: float) -> np.ndarray:
    """One video frame: raw screen with its overlay | 84 x 84 observation with its overlay."""
    left = overlay_on_screen(raw, map84, scale)
    gray = np.repeat(obs[..., None], 3, axis=2)
    right = overlay(gray, None if map84 is None else map84 / scale)
    right = cv2.resize(right, (raw.shape[0], raw.shape[0]), interpolation=cv2.INTER_NEAREST)
    frame = np.concatenate([left, right], axis=1)
    return cv2.resize(frame, (frame.shape[1] * SCALE, frame.shape[0] * SCALE), interpolation=cv2.INTER_NEAREST)


def play_recorded_game(envs: AtariVec, trained: TrainedCell, seed: int, sample: bool, method: str | None,
                       settings: posthoc.PostHocSettings) -> dict[str, Any]:
    """One full game: raw screens, observations, `method`'s maps (None: no map), score."""
    model = trained.model
    obs = envs.reset(seed=seed)
    raws, observations, maps = [envs.screen(0)], [obs[0, -1].copy()], []
    while True:
        batch = torch.from_numpy(obs).to(trained.device)
        maps.append(None if method is None else posthoc.draw(model, batch, method, settings)[0].cpu().numpy())
        obs, step = envs.step(model.act(batch, greedy=not sample).cpu().numpy())
        if step.game_over[0]:
            return {"raws": raws, "obs": observations, "maps": maps, "score": float(step.game_score[0]),
                    "frames": int(step.game_frames[0]), "truncated": bool(step.truncated[0])}
        raws.append(envs.screen(0))
        observations.append(obs[0, -1].copy())


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    tmp.replace(path)


HEADER = 44  # pixels above a contact sheet's frames: what the halves are, the colour bar
SCALE_MEANING = {"clip": "the largest value of the whole game", "frame": "each frame's own largest value"}


def contact_sheet(frames: list[np.ndarray], steps: list[int], columns: int = 4, *, map_name: str | None = None,
                  scaling: str = "clip") -> Image.Image:
    """Frames in a grid, each labelled with its agent step and its two halves (the screen, the
    agent's input), under a header that names the map and shows its colour bar: what a colour
    means depends on what the map was divided by (`scaling`)."""
    h, w = frames[0].shape[:2]
    half = w - h  # compose(): the screen (wider than tall), then the square input
    rows = -(-len(frames) // columns)
    sheet = Image.new("RGB", (columns * w, HEADER + rows * h), "black")
    draw = ImageDraw.Draw(sheet)
    if map_name is None:
        draw.text((6, 6), "no saliency map: the game alone", fill="white")
    else:
        draw.text((6, 6), f"map: {posthoc.LABELS.get(map_name, map_name)}, blended over both halves; "
                          f"colour = value / {SCALE_MEANING[scaling]}", fill="white")
        bar_w, x0, y0 = 256, 6, 22
        ramp = (HEAT(np.linspace(0, 1, bar_w))[:, :3] * 255).astype(np.uint8)
        sheet.paste(Image.fromarray(np.repeat(ramp[None], 12, axis=0)), (x0 + 12, y0))
        draw.text((x0, y0), "0", fill="white")
        draw.text((x0 + bar_w + 18, y0), "1", fill="white")
    for k, (frame, step) in enumerate(zip(frames, steps)):
        x, y = (k % columns) * w, HEADER + (k // columns) * h
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text((x + 6, y + 4), f"step {step}: screen", fill="white")
        draw.text((x + half + 6, y + 4), "84x84 input", fill="white")
    return sheet


# what a video's maps are divided by (map_scales; auto: clip for the model's own, frame for post hoc)
SCALES = ("auto", "clip", "frame")


def check_evaluate_config(cfg: DictConfig) -> None:
    """The evaluate app's settings: the evaluation's (fls.evaluation) and its videos' (eval.video)."""
    check_eval_config(cfg)
    if cfg.eval.video.map not in posthoc.MAPS:
        raise ConfigError(f"eval.video.map={cfg.eval.video.map}: expected one of {', '.join(posthoc.MAPS)}")
    if cfg.eval.video.scale not in SCALES:
        raise ConfigError(f"eval.video.scale={cfg.eval.video.scale}: expected one of {', '.join(SCALES)}")
    if "posthoc" in cfg.eval.video:  # in evaluate's config (conf/evaluate.yaml), not in train's
        try:
            posthoc.check_posthoc_config(cfg.eval.video.posthoc, "eval.video.posthoc")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def map_scales(maps: list[np.ndarray | None], how: str) -> list[float]:
    """What each map is divided by to be drawn: the clip's largest value, or its own (`frame`)."""
    peaks = [0.0 if m is None else float(m.max()) for m in maps]
    if how == "frame":
        return [p or 1.0 for p in peaks]
    return [max(peaks, default=0.0) or 1.0] * len(maps)


def record_cell_video(cfg: DictConfig, cell: CellDir) -> dict[str, Any]:
    game = eval_game(cfg)
    trained = open_trained_cell(cfg, cell)
    model = trained.model
    video = cfg.eval.video
    method = str(video.map)
    why = posthoc.needs(method, model)
    if why:
        log.info("%s: %s; the video shows the game alone (eval.video.map=greydanus draws a post-hoc map "
                 "of any model)", cell.cell.key, why)
        method = None
    out = cell.video_dir(game.name, str(video.map))
    out.mkdir(parents=True, exist_ok=True)
    seed = eval_seed(cfg)
    torch.manual_seed(seed)
    # the reference backend: the one that shows the raw screen
    env_cfg = OmegaConf.merge(cfg.env, {"backend": "gymnasium"})
    envs = make_vec_env(game, env_cfg, 1, max_episode_frames=int(video.max_frames))
    record: dict[str, Any] = {"cell": cell.cell.key, "eval_game": game.name, "checkpoint_global_step": trained.global_step,
                              "has_saliency": bool(model.has_saliency), "map": method, "games": []}
    settings = posthoc.PostHocSettings.from_config(video.posthoc)
    scaling = str(video.scale)
    if scaling == "auto":
        scaling = "clip" if method in (None, "model") else "frame"
    record["scale"] = scaling
    with envs:
        for g in range(int(video.games)):
            played = play_recorded_game(envs, trained, seed + g, bool(cfg.eval.sample), method, settings)
            maps = played["maps"]
            scales = map_scales(maps, scaling)
            scale = max(scales, default=1.0)
            frames = [compose(r, o, m, k) for r, o, m, k in zip(played["raws"], played["obs"], maps, scales)]
            path = cell.video_game(g, game.name, str(video.map))
            write_mp4(path, frames, int(video.fps))
            if g == 0:
                k = min(int(video.sheet_frames), len(frames))
                picks = np.linspace(0, len(frames) - 1, k).round().astype(int).tolist()
                sheet = contact_sheet([frames[i] for i in picks], picks, map_name=method, scaling=scaling)
                sheet_path = cell.video_sheet(game.name, str(video.map))
                png = io.BytesIO()
                sheet.save(png, format="PNG")
                atomic_write_bytes(sheet_path, png.getvalue())
                log.info("%s: contact sheet %s", cell.cell.key, sheet_path)
            on_ball = map_at_ball(maps, played["raws"], game.ball) if game.get("ball") else None
            record["games"].append({"video": path.name, "score": played["score"], "frames": played["frames"],
                                    "agent_steps": len(frames), "truncated": played["truncated"], "map_max": scale,
                                    "map_at_ball": on_ball})
            log.info("%s: %s (%d steps, score %.0f)", cell.cell.key, path, len(frames), played["score"])
            if on_ball:
                log.info("%s: the map is on the ball in %.0f%% of the %d frames that show it (at another "
                         "frame's ball: %.0f%%)", cell.cell.key, 100 * on_ball["on_ball"], on_ball["frames"],
                         100 * on_ball["on_ball_control"])
    atomic_write_text(cell.video_record(game.name, str(video.map)), json.dumps(record, indent=2) + "\n")
    return record
