"""Figure 4: game visualisations. For chosen games (default Breakout, Seaquest) and models
(default Dense FLS, Sparse FLS), two frames of a trained cell's game with its saliency map
overlaid on the raw 210 x 160 screen: a grid, one panel per game x model x frame.

Frames come from a short replay with a fixed seed (the cell's evaluation seed): the cell's
first seed with a checkpoint plays one game on the reference backend (the one that shows
the raw screen), with its own env settings, actions sampled as in evaluation, at most
`--replay-steps` agent steps (600); the two frames are at 1/3 and 2/3 of what it played. Each map is
divided by the larger peak of its two frames, so the two frames of a pair compare.
`--maps` draws a post-hoc map instead of (or beside) the model's own. A colour bar gives the
scale: the overlay's colour (fls.overlay's colormap) and opacity both grow with the map.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from analysis.grid import Grid  # noqa: E402
from analysis.load import first_trained  # noqa: E402
from analysis.render import FigureArtefact  # noqa: E402
from analysis.style import game_label, model_label  # noqa: E402
from fls.games import game_config  # noqa: E402
from fls.envs import make_vec_env  # noqa: E402
from fls.evaluation import eval_seed  # noqa: E402
from fls.rundir import RunLayout  # noqa: E402
from fls.saliency import posthoc  # noqa: E402
from fls.overlay import ALPHA, HEAT, overlay_on_screen  # noqa: E402

DEFAULT_GAMES = ("breakout", "seaquest")
DEFAULT_MODELS = ("dense_fls", "sparse_fls")
REPLAY_STEPS = 600
PANEL_W, PANEL_H, DPI = 2.0, 2.9, 100
TITLE_CHARS = 30  # what fits on one line of a panel's title at fontsize 7
DATA_COLUMNS = ["game", "model", "seed", "map", "replay_seed", "agent_step", "checkpoint_global_step", "map_peak"]


def replay(config, trained, steps: int = REPLAY_STEPS) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]:
    """(replay seed, [(agent step, raw screen, stack)] at 1/3 and 2/3 of a short game)."""
    game = game_config(str(config.game.name))
    env_cfg = OmegaConf.merge(config.env, {"backend": "gymnasium"})
    seed = eval_seed(config)
    torch.manual_seed(seed)
    raws, stacks = [], []
    with make_vec_env(game, env_cfg, 1, max_episode_frames=4 * steps) as envs:
        obs = envs.reset(seed=seed)
        while True:
            raws.append(envs.screen(0))
            stacks.append(obs[0].copy())
            batch = torch.from_numpy(obs).to(trained.device)
            obs, step = envs.step(trained.model.act(batch, greedy=not bool(config.eval.sample)).cpu().numpy())
            if step.game_over[0]:
                break
    n = len(stacks)
    picks = sorted({min(n - 1, n // 3), min(n - 1, 2 * n // 3)})
    return seed, [(k, raws[k], stacks[k]) for k in picks]


def build(run_root: Path | str, study: str, grid: Grid, games: list[str] | None = None,
          models: list[str] | None = None, maps: list[str] | None = None, steps: int = REPLAY_STEPS) -> FigureArtefact | None:
    maps = maps or ["model"]
    games = [g for g in (games or DEFAULT_GAMES) if g in grid.games]
    models = [m for m in (models or DEFAULT_MODELS) if m in grid.models]
    layout = RunLayout(run_root)
    notes, rows, panels = [], [], []  # panels: (game, label, image)
    for game in games:
        for model in models:
            found = first_trained(layout, study, game, model, grid.seeds)
            if found is None:
                notes.append(f"{game_label(game)} x {model_label(model)}: no trained cell in study {study!r}")
                continue
            seed, trained = found
            drawn = [name for name in maps if not posthoc.needs(name, trained.model)]
            notes += [f"{model_label(model)}: {posthoc.needs(name, trained.model)}; --maps {name} skipped"
                      for name in maps if name not in drawn]
            if not drawn:
                continue
            replay_seed, frames = replay(OmegaConf.load(trained.cell.config), trained, steps)
            stacks = torch.from_numpy(np.stack([stack for _, _, stack in frames]))
            for name in drawn:
                # only the two chosen stacks get a map: a post-hoc map costs hundreds of forwards
                saliency_maps = posthoc.draw(trained.model, stacks, name).numpy()
                peak = float(saliency_maps.max()) or 1.0
                for (step, raw, _), saliency in zip(frames, saliency_maps):
                    what = "" if name == "model" else f" · {posthoc.LABELS[name]}"
                    # long model names wrap to the panel's width instead of running into the next title
                    title = textwrap.fill(f"{game_label(game)}, {model_label(model)}{what}", TITLE_CHARS)
                    panels.append((game, f"{title}\nstep {step}",
                                   overlay_on_screen(raw, saliency, peak)))
                    rows.append({"game": game, "model": model, "seed": seed, "map": name, "replay_seed": replay_seed,
                                 "agent_step": step, "checkpoint_global_step": trained.global_step, "map_peak": peak})
    if not panels:
        return None
    # one row per game, its models' frame pairs side by side
    by_game = {g: [(label, image) for pg, label, image in panels if pg == g] for g in games}
    by_game = {g: v for g, v in by_game.items() if v}
    cols = max(len(v) for v in by_game.values())
    fig, axes = plt.subplots(len(by_game), cols, figsize=(PANEL_W * cols, PANEL_H * len(by_game)), dpi=DPI,
                             squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for row, game_panels in zip(axes, by_game.values()):
        for ax, (label, image) in zip(row, game_panels):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(label, fontsize=7)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), HEAT), ax=axes.ravel().tolist(), fraction=0.025, pad=0.01,
                       aspect=30)
    bar.set_label(f"map / pair's peak (opacity ≤ {ALPHA:.0%})", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle("Figure 4: saliency maps on the game screen", fontsize=10)
    notes.insert(0, f"one short replay per cell (seed = its evaluation seed, at most {steps} agent steps), "
                    "frames at 1/3 and 2/3; each pair of maps over its larger peak")
    return FigureArtefact("fig4", "Figure 4: game visualisations", fig, pd.DataFrame(rows, columns=DATA_COLUMNS), notes)
