"""Figure 5: one real Atari-HEAD frame per game of the study, with, side by side, the saliency
map of each model that has one and the human fixations of that frame in red.

The frame of a game is the processed frame of its first trial on disk with the most gaze
points (ties: the earliest), played through the training preprocessing as the Atari-HEAD
scoring plays it (fls.saliency.gaze, the `spec` alignment). Each panel is the raw 210 x 160
screen with the map upscaled onto it (bilinear) as a colour overlay, the map divided by its
own peak. A model's map comes from its first seed with a checkpoint.

Besides the models' own maps (`--maps model`, the paper's figure), any post-hoc map of
fls.saliency.posthoc can be drawn for every model, Nature CNN included
(`--maps model,jacobian,greydanus`). The dataset is $ATARI_HEAD_ROOT, else the sample the
repository ships (one Ms. Pac-Man trial), else `--atari-head DIR`.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.load import first_trained  # noqa: E402
from analysis.render import FigureArtefact  # noqa: E402
from analysis.style import game_label, model_label  # noqa: E402
from fls.errors import AtariHeadError  # noqa: E402
from fls.facts import REPO  # noqa: E402
from fls.rundir import RunLayout  # noqa: E402
from fls.saliency import posthoc  # noqa: E402
from fls.saliency.atari_head import GAMES, AtariHead  # noqa: E402
from fls.saliency.gaze import ProcessedFrame, play_trial  # noqa: E402
from fls.overlay import overlay_on_screen  # noqa: E402

SAMPLE = REPO / "data" / "atari_head_sample"
PANEL_W, PANEL_H, DPI = 2.0, 2.9, 100
SCAN_FRAMES = 2000  # processed frames searched for the busiest one
DATA_COLUMNS = ["game", "trial", "frame", "gaze_points", "model", "seed", "map", "checkpoint_global_step", "map_peak"]


def default_root() -> Path:
    return Path(os.environ.get("ATARI_HEAD_ROOT") or SAMPLE)


def busiest_frame(dataset: AtariHead, game: str) -> tuple[int, ProcessedFrame] | None:
    """(trial id, the processed frame with the most gaze points) of the game's first trial."""
    trials = dataset.trials(game)
    if not trials:
        return None
    info = trials[0]
    best = None
    for k, frame in enumerate(play_trial(dataset.load(info))):
        if k >= SCAN_FRAMES:
            break
        if best is None or len(frame.gaze) > len(best.gaze):
            best = frame
    return (info.trial_id, best) if best is not None else None


def build(run_root: Path | str, study: str, grid: Grid, maps: list[str], root: Path | None = None) -> FigureArtefact | None:
    """The figure, or None when no game of the study is in Atari-HEAD with a trained model."""
    root = Path(root) if root else default_root()
    games = [g for g in grid.games if g in GAMES]
    notes, rows, panels = [], [], []  # panels: (game, title, image, fixations)
    if not games:
        return None
    try:
        dataset = AtariHead(root)
    except AtariHeadError as e:
        raise ValueError(f"Atari-HEAD at {root}: {e}") from None
    layout = RunLayout(run_root)
    for game in games:
        found = busiest_frame(dataset, game)
        if found is None:
            notes.append(f"{game_label(game)}: no Atari-HEAD trial in {root}; skipped (ATARI_HEAD_ROOT=<download>)")
            continue
        trial, frame = found
        row_panels = []
        for model in grid.models:
            trained = first_trained(layout, study, game, model, grid.seeds)
            if trained is None:
                continue
            seed, cell = trained
            for name in maps:
                if posthoc.needs(name, cell.model):
                    continue
                saliency = posthoc.draw(cell.model, torch.from_numpy(frame.stack[None]), name)[0].numpy()
                peak = float(saliency.max())
                label = model_label(model) + ("" if name == "model" else f"\n{posthoc.LABELS[name]}")
                row_panels.append((label, overlay_on_screen(frame.raw, saliency, peak or 1.0)))
                rows.append({"game": game, "trial": trial, "frame": frame.index, "gaze_points": len(frame.gaze),
                             "model": model, "seed": seed, "map": name, "checkpoint_global_step": cell.global_step,
                             "map_peak": peak})
        if not row_panels:
            notes.append(f"{game_label(game)}: no trained model of the study draws a map of --maps {','.join(maps)}")
            continue
        panels.append((game, trial, frame, row_panels))
    if not panels:
        return None

    cols = max(len(p[3]) for p in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(PANEL_W * cols, PANEL_H * len(panels)), dpi=DPI,
                             squeeze=False)
    for r, (game, trial, frame, row_panels) in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row_panels):
                continue
            label, image = row_panels[c]
            ax.imshow(image, interpolation="nearest")
            if len(frame.gaze):
                ax.scatter(frame.gaze[:, 0], frame.gaze[:, 1], s=6, c="red", linewidths=0)
            ax.set_title(label, fontsize=8)
        axes[r][0].text(-0.08, 0.5, f"{game_label(game)}\ntrial {trial}, frame {frame.index}", rotation=90,
                        transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle("Figure 5: saliency maps on Atari-HEAD, human fixations in red", fontsize=10)
    fig.tight_layout()
    notes.insert(0, f"Atari-HEAD: {root}; maps: {', '.join(maps)}; each map over its own peak; "
                    "first seed with a checkpoint of each model")
    return FigureArtefact("fig5", "Figure 5: Atari-HEAD visualisations", fig, pd.DataFrame(rows, columns=DATA_COLUMNS), notes)
