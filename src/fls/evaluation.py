"""The evaluation protocol of docs/protocol.md#evaluation: full games with an unseen seed, counted exactly.

Each of `eval.num_envs` envs plays a fixed share of `eval.games` full games (all lives),
with no-op starts as in training and actions sampled from the policy. An env that has
played its share keeps stepping (vector envs step together) but its games no longer
count, so no game is counted twice, and none is cut short by the end of the evaluation:
the evaluation ends when every env has finished its last counted game. Long games are
never traded for short ones, which a "first N games to finish" rule would do.

Results go to the cell's `eval/<eval_game>/`: games.parquet (one row per game) and
summary.json, both written only when the evaluation is complete.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from fls.config import as_int, changes, check_seed, load_group, resolve_device
from fls.errors import ConfigError
from fls.envs import AtariVec, check_env_config, make_vec_env, resolve_backend
from fls.rundir import CellDir, atomic_write_bytes, atomic_write_text
from fls.saliency import posthoc
from fls.trained_cell import TrainedCell, open_trained_cell

log = logging.getLogger(__name__)

# frames: the game's length in emulator frames; agent_steps: how many times the policy acted
# in it (the unit of the paper's episode-length axes, 4 frames each, the env's own FIRE
# and no-op steps not counted)
GAME_COLUMNS = ["env", "game", "score", "frames", "agent_steps", "seconds", "truncated"]


def eval_game(cfg: DictConfig) -> DictConfig:
    """The game to play: the cell's own, or `eval.game` (e.g. breakout_infinite)."""
    if cfg.eval.game in (None, cfg.game.name):
        return cfg.game
    game = load_group("game", cfg.eval.game, key="eval.game")
    if game.num_actions != cfg.game.num_actions:
        raise ConfigError(
            f"eval.game={game.name}: {game.num_actions} actions, but the {cfg.game.name} "
            f"agents have {cfg.game.num_actions}"
        )
    return game


def max_frames(cfg: DictConfig, game: DictConfig) -> int:
    return int(cfg.eval.max_frames or game.eval_max_frames)


def env_protocol(env: DictConfig, game: DictConfig) -> dict[str, Any]:
    """Every env setting that changes what a game scores (the native backend's thread
    count does not)."""
    return {"backend": resolve_backend(env, game), "noop_max": int(env.noop_max), "frame_skip": int(env.frame_skip),
            "frame_stack": int(env.frame_stack), "stack_fill": str(env.stack_fill),
            "episodic_life": bool(env.episodic_life), "fire_reset": bool(env.fire_reset)}


def eval_seed(cfg: DictConfig) -> int:
    return int(cfg.eval.seed_offset) + 1000 * int(cfg.seed)


def check_eval_config(cfg: DictConfig) -> None:
    check_seed(cfg.seed)
    resolve_device(cfg.device)
    for key in ("games", "num_envs", "seed_offset"):
        if as_int(f"eval.{key}", cfg.eval[key]) <= 0:
            raise ConfigError(f"eval.{key}={cfg.eval[key]}: must be a positive integer")
    if cfg.eval.max_frames is not None and as_int("eval.max_frames", cfg.eval.max_frames) <= 0:
        raise ConfigError(f"eval.max_frames={cfg.eval.max_frames}: must be a positive number of frames")
    game = eval_game(cfg)
    check_env_config(cfg.env, game)
    if eval_seed(cfg) + int(cfg.eval.num_envs) >= 2**31:
        raise ConfigError(f"eval.seed_offset={cfg.eval.seed_offset}: seeds must stay below 2**31")
    if cfg.eval.video.map not in posthoc.MAPS:
        raise ConfigError(f"eval.video.map={cfg.eval.video.map}: expected one of {', '.join(posthoc.MAPS)}")
    if "posthoc" in cfg.eval.video:  # in evaluate's config (conf/evaluate.yaml), not in train's
        try:
            posthoc.check_posthoc_config(cfg.eval.video.posthoc, "eval.video.posthoc")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def shares(games: int, num_envs: int) -> np.ndarray:
    """How many games each env plays: equal shares, the first envs one more if needed."""
    num_envs = min(num_envs, games)
    base = np.full(num_envs, games // num_envs)
    base[: games % num_envs] += 1
    return base


def policy(trained: TrainedCell, greedy: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Observations (numpy, uint8) -> actions (numpy): the trained model's `act` on its device."""
    def act(obs: np.ndarray) -> np.ndarray:
        return trained.model.act(torch.from_numpy(obs).to(trained.device), greedy=greedy).cpu().numpy()
    return act


def play_games(
    envs: AtariVec,
    act: Callable[[np.ndarray], np.ndarray],
    per_env: np.ndarray,
    seed: int,
    on_game: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Play until env i has finished per_env[i] games; one row per counted game."""
    assert len(per_env) == envs.num_envs
    counted = np.zeros(envs.num_envs, dtype=np.int64)
    acted = np.zeros(envs.num_envs, dtype=np.int64)
    rows: list[tuple] = []
    obs = envs.reset(seed=seed)
    while (counted < per_env).any():
        obs, step = envs.step(act(obs))
        acted += 1
        for i in np.flatnonzero(step.game_over & (counted < per_env)):
            rows.append((i, counted[i], step.game_score[i], step.game_frames[i], acted[i], step.game_seconds[i],
                         step.truncated[i]))
            counted[i] += 1
            if on_game:
                on_game()
        acted[step.game_over] = 0
    frame = pd.DataFrame(rows, columns=GAME_COLUMNS)
    return frame.astype({"env": "int32", "game": "int32", "score": "float64", "frames": "int64", "agent_steps": "int64",
                         "seconds": "float64", "truncated": "bool"})


def summarize(games: pd.DataFrame) -> dict[str, Any]:
    scores = games["score"].to_numpy()
    return {
        "n": int(len(scores)),
        "mean": float(scores.mean()),
        "std": float(scores.std(ddof=0)),  # population std over all games, as a table cell reports
        "min": float(scores.min()),
        "max": float(scores.max()),
        "truncated": int(games["truncated"].sum()),
        "mean_frames": float(games["frames"].mean()),
        "mean_agent_steps": float(games["agent_steps"].mean()),
    }


def evaluate_cell(cfg: DictConfig, cell: CellDir) -> dict[str, Any] | None:
    """Score one cell per docs/protocol.md#evaluation; returns its summary (None when skipped)."""
    game = eval_game(cfg)
    summary_path, games_path = cell.eval_summary(game.name), cell.eval_games(game.name)
    trained = open_trained_cell(cfg, cell)
    if trained is None:
        return None
    with cell.lock(f"eval-{game.name}"):
        return _evaluate(cfg, cell, game, trained)


def _evaluate(cfg: DictConfig, cell: CellDir, game: DictConfig, trained: TrainedCell) -> dict[str, Any]:
    summary_path, games_path = cell.eval_summary(game.name), cell.eval_games(game.name)
    limit = max_frames(cfg, game)
    settings = {
        "eval_game": game.name, "games": int(cfg.eval.games), "num_envs": int(cfg.eval.num_envs),
        "max_frames": limit, "seed": eval_seed(cfg), "sample": bool(cfg.eval.sample),
        "checkpoint_global_step": trained.global_step,
        # the env stack changes the scores (Table 5 divides two evaluations: same stack only)
        "env": env_protocol(cfg.env, game),
    }
    previous = None
    if summary_path.exists() and games_path.exists():
        previous = json.loads(summary_path.read_text())
        if previous.get("settings") == settings and not cfg.eval.overwrite:
            log.info("%s: evaluation on %s is done (%d games, mean %.1f); skipping. eval.overwrite=true recomputes it",
                     cell.cell.key, game.name, previous["n"], previous["mean"])
            return previous
        if not cfg.eval.overwrite:
            differ = "; ".join(f"{key} {a} -> {b}" for key, a, b in changes(previous.get("settings", {}), settings))
            log.info("%s: the evaluation on %s changed (%s); recomputing, the previous one is kept under %s",
                     cell.cell.key, game.name, differ,
                     cell.eval_previous(game.name))

    training_seeds = cell.status().get("env_reset_seeds", [])
    train_envs = int(cell.status().get("num_envs", cfg.num_envs))
    per_env = shares(int(cfg.eval.games), int(cfg.eval.num_envs))
    seed = eval_seed(cfg)
    used = {s + i for s in training_seeds for i in range(train_envs)}
    if used & set(range(seed, seed + len(per_env))):
        raise ConfigError(f"eval.seed_offset={cfg.eval.seed_offset}: evaluation seeds overlap the cell's training seeds")

    log.info("%s: %d games on %s (%d envs, frame limit %d, seed %d)", cell.cell.key, per_env.sum(),
             game.name, len(per_env), limit, seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with make_vec_env(game, cfg.env, len(per_env), max_episode_frames=limit) as envs, tqdm(
        total=int(per_env.sum()), unit="game", desc=f"{cell.cell.key} on {game.name}",
        disable=not sys.stderr.isatty(), dynamic_ncols=True,
    ) as bar:
        games = play_games(envs, policy(trained, greedy=not cfg.eval.sample), per_env, seed, on_game=lambda: bar.update(1))

    summary = {**summarize(games), "seconds": time.perf_counter() - start, "settings": settings,
               "cell": cell.cell.key, "checkpoint_update": trained.update}
    if previous is not None and not cfg.eval.overwrite:
        keep_previous(cell, game.name)
    write_results(cell, game.name, games, summary)
    log.info("%s on %s: %.1f +/- %.1f over %d games (%d truncated)", cell.cell.key, game.name,
             summary["mean"], summary["std"], summary["n"], summary["truncated"])
    return summary


def keep_previous(cell: CellDir, eval_game: str) -> None:
    """Move the current results aside (eval/<game>/previous/<time>/), summary first: a
    folder is never left holding a summary without its games file."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"_{time.time_ns() % 10**6:06d}"
    target = cell.eval_previous(eval_game) / stamp
    target.mkdir(parents=True)
    cell.eval_summary(eval_game).replace(target / "summary.json")
    cell.eval_games(eval_game).replace(target / "games.parquet")


def write_results(cell: CellDir, eval_game: str, games: pd.DataFrame, summary: dict[str, Any]) -> None:
    """games.parquet, then summary.json: a summary means its games file is complete."""
    buffer = io.BytesIO()
    games[GAME_COLUMNS].to_parquet(buffer, index=False)
    atomic_write_bytes(cell.eval_games(eval_game), buffer.getvalue())
    atomic_write_text(cell.eval_summary(eval_game), json.dumps(summary, indent=2) + "\n")
