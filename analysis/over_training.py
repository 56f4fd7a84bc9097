"""Saliency over training: when does a map start to mean something? For every cell of the study
that kept snapshots of its weights (`src/train.py ... snapshots=<n>`), each map drawn by each
snapshot on fixed probe frames, and its score, one figure per cell
(`over_training_<game>_<model>`, first seed with snapshots).

- Probe frames: frames of the cell's own game played greedily by its final model from the
  evaluation seeds (fls.saliency_checks.game_frames: a frame every `every` agent steps from
  `start`), the same frames for every snapshot; and, where the game has Atari-HEAD trials
  (`--atari-head`, else $ATARI_HEAD_ROOT, else the bundled sample), frames of its trials.
- Scores: on a game whose config locates the ball (Breakout), how often the map is on the
  ball and the control (the map read at another frame's ball: fls.saliency.ball,
  docs/protocol.md#is-the-map-on-the-ball); on Atari-HEAD frames, NSS against the human gaze
  at 210 x 160 (fls.saliency.metrics.nss, docs/protocol.md#saliency-metrics).
- The figure: a row per map, a column per snapshot, each panel the probe frame (the first
  that shows the ball, where there is one) with the snapshot's map over its own peak; below,
  each score against the update.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from analysis.checks import map_colour, map_label  # noqa: E402
from analysis.grid import Grid  # noqa: E402
from analysis.render import FigureArtefact  # noqa: E402
from analysis.style import game_label, model_label  # noqa: E402
from fls.errors import CheckpointError  # noqa: E402
from fls.overlay import overlay_on_screen  # noqa: E402
from fls.rundir import RunLayout  # noqa: E402
from fls.saliency import posthoc  # noqa: E402
from fls.saliency.ball import ball_position, map_at_ball  # noqa: E402
from fls.saliency.gaze import RAW_SHAPE, fixation_map  # noqa: E402
from fls.saliency.metrics import nss, upscale_saliency  # noqa: E402
from fls.saliency_checks import Frames, atari_head_plan, game_frames  # noqa: E402
from fls.trained_cell import TrainedCell, load_model, load_snapshot  # noqa: E402

PROBE_FRAMES = 64
EVERY = 10
START = 40
DATA_COLUMNS = ["game", "model", "seed", "source", "update", "global_step", "map", "measure", "value", "frames"]
MEASURES = {"on_ball": "map on the ball", "on_ball_control": "control: at another frame's ball",
            "nss": "NSS against gaze (Atari-HEAD)"}


def probe_frames(final: TrainedCell, atari_head: Path | None, n: int = PROBE_FRAMES) -> tuple[dict[str, Frames], object]:
    """({source: frames}, the cell's game config) of a cell, played by its final model."""
    cfg = OmegaConf.create(final.cell.recorded_config())
    frames = {"games": game_frames(final, cfg, n, EVERY, START, screens=True)}
    if atari_head is not None:
        head = OmegaConf.merge(cfg, {"saliency": {"root": str(atari_head), "trials": None, "highscore_trials": True,
                                                  "frame_alignments": ["spec"], "stack_fill": "repeat"}})
        plan = atari_head_plan(head, n, 1, 0)
        if plan is not None:
            frames["atari_head"] = plan.collect()
    return frames, cfg.game


def scores(maps: np.ndarray, frames: Frames, game) -> dict[str, tuple[float, int]]:
    """{measure: (value, frames it counts)} of one snapshot's maps (N x 84 x 84) on one source."""
    out = {}
    if frames.source == "games" and game.get("ball") and frames.screens:
        on = map_at_ball(list(maps), frames.screens, game.ball)
        if on:
            out["on_ball"] = (on["on_ball"], on["frames"])
            out["on_ball_control"] = (on["on_ball_control"], on["frames"])
    if frames.gaze is not None:
        values = [nss(upscale_saliency(m, RAW_SHAPE), fixation_map(g, RAW_SHAPE)) for m, g in zip(maps, frames.gaze)]
        values = [v for v in values if np.isfinite(v)]
        if values:
            out["nss"] = (float(np.mean(values)), len(values))
    return out


def build(run_root: Path | str, study: str, grid: Grid, maps: list[str], atari_head: Path | None = None,
          n: int = PROBE_FRAMES) -> list[FigureArtefact]:
    layout = RunLayout(run_root)
    out = []
    for game in grid.games:
        for model in grid.models:
            for seed in grid.seeds:
                cell = layout.cell(study, game, model, seed)
                if len(cell.snapshots()) and cell.has_checkpoint() and cell.config.exists():
                    final = load_model(cell, torch.device("cpu"))  # once: it plays the probe frames too
                    if any(not posthoc.needs(m, final.model) for m in maps):  # else: none of the maps asked for
                        out.append(figure(final, maps, atari_head, n))
                    break
    return out


def figure(final: TrainedCell, maps: list[str], atari_head: Path | None, n: int = PROBE_FRAMES) -> FigureArtefact:
    cell = final.cell
    game, model, seed = cell.cell.game, cell.cell.model, cell.cell.seed
    frames, game_cfg = probe_frames(final, atari_head, n)
    updates, rows, panels = [], [], {}  # panels: (map, update) -> the probe's map
    games = frames["games"]
    shown = next((i for i, s in enumerate(games.screens) if game_cfg.get("ball") and ball_position(s, game_cfg.ball, 84)),
                 0)
    ball = ball_position(games.screens[shown], game_cfg.ball, 84) if game_cfg.get("ball") else None
    drawn = []
    for update, _ in cell.snapshots().items():
        try:
            trained = load_snapshot(cell, update, torch.device("cpu"))
        except CheckpointError as e:
            print(f"{e}; left out")
            continue
        updates.append(update)
        drawn = [m for m in maps if not posthoc.needs(m, trained.model)]
        for name in drawn:
            for source, probe in frames.items():
                with torch.no_grad():
                    drawn_maps = posthoc.draw(trained.model, torch.from_numpy(probe.stacks), name).numpy()
                if source == "games":
                    panels[name, update] = drawn_maps[shown]
                for measure, (value, count) in scores(drawn_maps, probe, game_cfg).items():
                    rows.append({"game": game, "model": model, "seed": seed, "source": source, "update": update,
                                 "global_step": trained.global_step, "map": name, "measure": measure,
                                 "value": value, "frames": count})
    data = pd.DataFrame(rows, columns=DATA_COLUMNS)
    measures = [m for m in MEASURES if m in set(data["measure"])]
    fig = plt.figure(figsize=(1.45 * max(len(updates), 4) + 0.6, 1.9 * len(drawn) + 2.4), dpi=100)
    spec = fig.add_gridspec(len(drawn) + 1, len(updates), height_ratios=[1] * len(drawn) + [1.3])
    steps = dict(zip(data["update"], data["global_step"]))
    for r, name in enumerate(drawn):
        for c, update in enumerate(updates):
            ax = fig.add_subplot(spec[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            saliency = panels.get((name, update))
            if saliency is not None:
                ax.imshow(overlay_on_screen(games.screens[shown], saliency, float(saliency.max()) or 1.0),
                          interpolation="nearest")
            if ball is not None:  # a white ring where the ball is
                ax.scatter([(ball[1] + 0.5) * 160 / 84], [(ball[0] + 0.5) * 210 / 84], s=60, facecolors="none",
                           edgecolors="white", linewidths=0.8)
            if r == 0:
                ax.set_title(f"update {update}\n{steps.get(update, 0):,} steps", fontsize=7)
            if c == 0:
                ax.set_ylabel(map_label(name), fontsize=8)
    ax = fig.add_subplot(spec[len(drawn), :])
    for name in drawn:
        for measure, style in zip(measures, ("-o", "--", "-s")):
            part = data[(data["map"] == name) & (data["measure"] == measure)]
            if len(part):
                ax.plot(part["update"], part["value"], style, color=map_colour(name), ms=3, lw=1.2,
                        label=f"{map_label(name)}: {MEASURES[measure]}")
    ax.set_xlabel("update", fontsize=8)
    ax.set_ylabel(" / ".join(["share of ball frames"] * bool({"on_ball"} & set(measures)) + ["NSS"] * ("nss" in measures)),
                  fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.suptitle(f"Saliency over training: {model_label(model)} on {game_label(game)} (seed {seed})", fontsize=9)
    fig.tight_layout()
    notes = [f"probe frames: {len(games)} frames of the final model's greedy evaluation games (a frame every {EVERY} "
             f"agent steps from step {START})" + (f"; {len(frames['atari_head'])} Atari-HEAD frames (NSS)"
                                                  if "atari_head" in frames else ""),
             "each panel: the first probe frame that shows the ball (Breakout; ringed in white), the snapshot's map "
             "over its own peak"]
    for name in drawn:
        for measure in measures:
            part = data[(data["map"] == name) & (data["measure"] == measure)]
            if len(part):
                notes.append(f"{map_label(name)}, {MEASURES[measure]}: " + ", ".join(
                    f"{v:.2f}" for v in part["value"]) + f" (updates {', '.join(map(str, part['update']))})")
    return FigureArtefact(f"over_training_{game}_{model}", f"Saliency over training, {model_label(model)} on "
                          f"{game_label(game)}", fig, data, notes)
