"""The evaluation protocol of docs/protocol.md#evaluation: full games with an unseen seed, counted exactly.

Each of `eval.num_envs` envs plays a fixed share of `eval.games` full games (all lives),
with no-op starts as in training and actions sampled from the policy. An env that has
played its share keeps stepping (vector envs step together) but its games no longer
count, so no game is counted twice, and none is cut short by the end of the evaluation:
the evaluation ends when every env has finished its last counted game. Long games are
never traded for short ones, which a "first N games to finish" rule would do.

With pack=seeds, the cells of several seeds play in one vector env, all their models called
at each step (evaluate_cells, fls.seed_pack); each cell's games are the ones it plays alone
(exactly under pack.batching=loop, the default off CUDA; under vmap within float rounding, which
can flip a close draw). A cell refused for its files fails alone; its partners are scored.

Results go to the cell's `eval/<eval_game>/`: games.parquet (one row per game) and
summary.json, its manifest (fls.durable.write_result: the games file's SHA-256), written
only when the evaluation is complete and published as one result: a reader trusts the
pair only when they agree, and a kill between the two renames is finished by the next
run. A result with other settings than those asked for is not replaced but kept, every
one in a folder of its own (eval/<eval_game>/previous/<time>_<hash>/); eval.overwrite=true
replaces the current one. docs/durability.md.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from fls.config import check_switches, check_threads, pack_batching, pack_seeds, resolve_device
from fls.durable import remove_partial_copies
from fls.envs import AtariVec, check_env_config, make_vec_env, resolve_backend
from fls.errors import CellDamaged, CellsRefused, ConfigError, NotTrained, Refusal, Skipped
from fls.facts import as_int, changes
from fls.games import eval_frame_limit, game_config
from fls.rundir import CellDir, keep_eval_result, recover_eval_result, write_eval_result
from fls.seed_pack import SeedPack, resolve_batching
from fls.trained_cell import TrainedCell, open_trained_cell
from fls.wandb_results import log_evaluation

log = logging.getLogger(__name__)

# frames: the game's length in emulator frames; agent_steps: how many times the policy acted
# in it (the unit of the paper's episode-length axes, 4 frames each, the env's own FIRE
# and no-op steps not counted)
GAME_COLUMNS = ["env", "game", "score", "frames", "agent_steps", "seconds", "truncated"]


def eval_game(cfg: DictConfig) -> DictConfig:
    """The game to play: the cell's own, or `eval.game` (e.g. breakout_infinite)."""
    if cfg.eval.game in (None, cfg.game.name):
        return cfg.game
    game = game_config(cfg.eval.game, key="eval.game")
    if game.num_actions != cfg.game.num_actions:
        raise ConfigError(
            f"eval.game={game.name}: {game.num_actions} actions, but the {cfg.game.name} "
            f"agents have {cfg.game.num_actions}"
        )
    return game


def env_protocol(env: DictConfig, game: DictConfig) -> dict[str, Any]:
    """Every env setting that changes what a game scores (the native backend's thread
    count does not)."""
    return {"backend": resolve_backend(env, game), "noop_max": int(env.noop_max), "frame_skip": int(env.frame_skip),
            "frame_stack": int(env.frame_stack), "stack_fill": str(env.stack_fill),
            "episodic_life": bool(env.episodic_life), "fire_reset": bool(env.fire_reset)}


def eval_seed(cfg: DictConfig) -> int:
    return int(cfg.eval.seed_offset) + 1000 * int(cfg.seed)


def check_eval_config(cfg: DictConfig) -> None:
    """The evaluation's settings (the evaluate app checks its videos' too: fls.video.check_evaluate_config)."""
    check_switches(cfg)
    seeds = pack_seeds(cfg)
    pack_batching(cfg)
    resolve_device(cfg.device)
    check_threads(cfg.torch_threads)
    for key in ("games", "num_envs", "seed_offset"):
        if as_int(f"eval.{key}", cfg.eval[key]) <= 0:
            raise ConfigError(f"eval.{key}={cfg.eval[key]}: must be a positive integer")
    if cfg.eval.max_frames is not None and as_int("eval.max_frames", cfg.eval.max_frames) <= 0:
        raise ConfigError(f"eval.max_frames={cfg.eval.max_frames}: must be a positive number of frames")
    game = eval_game(cfg)
    check_env_config(cfg.env, game)
    if int(cfg.eval.seed_offset) + 1000 * max(seeds) + int(cfg.eval.num_envs) >= 2**31:
        raise ConfigError(f"eval.seed_offset={cfg.eval.seed_offset}: seeds must stay below 2**31")


def shares(games: int, num_envs: int) -> np.ndarray:
    """How many games each env plays: equal shares, the first envs one more if needed."""
    num_envs = min(num_envs, games)
    base = np.full(num_envs, games // num_envs)
    base[: games % num_envs] += 1
    return base


def play_games(
    envs: AtariVec,
    act: Callable[[np.ndarray], np.ndarray],
    per_env: np.ndarray,
    seed: int | np.ndarray,
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


def evaluate_cell(cfg: DictConfig, cell: CellDir) -> dict[str, Any]:
    """Score one cell per docs/protocol.md#evaluation; returns its summary (NotTrained: nothing
    to evaluate)."""
    return evaluate_cells([cfg], [cell])[0]


def evaluate_cells(cfgs: list[DictConfig], cells: list[CellDir]) -> list[dict[str, Any] | Skipped]:
    """Score cells that differ only in seed (a packed job, pack=seeds) in one vector env, all
    models called at each step: every game of each cell is the game it plays evaluated alone
    (its envs, seeds and sampling stream are its own; see the module's note on vmap). Returns
    each cell's summary (Skipped: a partner with nothing to evaluate); raises NotTrained for a
    lone cell with nothing to evaluate, CellsRefused after the others for cells refused."""
    game = eval_game(cfgs[0])
    summaries: list[dict[str, Any] | Skipped | None] = [None] * len(cells)
    plans: list[EvalPlan] = []
    refused: dict[str, Exception] = {}
    with ExitStack() as locks:
        for i, (cfg, cell) in enumerate(zip(cfgs, cells)):
            try:
                trained = open_trained_cell(cfg, cell)
                locks.enter_context(cell.lock(f"eval-{game.name}"))
                plan = plan_evaluation(cfg, cell, game, trained)
            except NotTrained as e:
                if len(cells) == 1:
                    raise
                summaries[i] = Skipped(str(e))  # its partners have something to evaluate
                log.warning("%s", e)
                continue
            except Refusal as e:
                if len(cells) == 1:
                    raise
                # one cell's damaged checkpoint or busy directory does not stop its partners
                refused[cell.cell.key] = e
                log.error("%s: refused (%s: %s); its partners are evaluated", cell.cell.key, type(e).__name__, e)
                continue
            if isinstance(plan, dict):
                summaries[i] = plan  # done already
            else:
                plan.index = i
                plans.append(plan)
        if plans:
            for plan, summary in zip(plans, play_evaluations(plans, game)):
                summaries[plan.index] = summary
    if refused:
        raise CellsRefused(refused, len(cells))
    return summaries


@dataclass
class EvalPlan:
    """One cell's evaluation still to play: its model, settings, envs' shares and seed."""

    cfg: DictConfig
    cell: CellDir
    trained: TrainedCell
    settings: dict[str, Any]
    per_env: np.ndarray
    seed: int
    previous: dict[str, Any] | None
    index: int = 0


def plan_evaluation(cfg: DictConfig, cell: CellDir, game: DictConfig, trained: TrainedCell) -> EvalPlan | dict[str, Any]:
    """What is left to do for the cell: its finished summary (skip), or its EvalPlan. The
    caller holds the cell's evaluation lock for `game`."""
    limit = eval_frame_limit(game, cfg.eval)
    settings = {
        "eval_game": game.name, "games": int(cfg.eval.games), "num_envs": int(cfg.eval.num_envs),
        "max_frames": limit, "seed": eval_seed(cfg), "sample": bool(cfg.eval.sample),
        "checkpoint_global_step": trained.global_step,
        # the env stack changes the scores (Table 5 divides two evaluations: same stack only)
        "env": env_protocol(cfg.env, game),
    }
    previous = open_result(cell, game.name, bool(cfg.eval.overwrite))
    if previous is not None:
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
    return EvalPlan(cfg, cell, trained, settings, per_env, seed, previous)


def play_evaluations(plans: list[EvalPlan], game: DictConfig) -> list[dict[str, Any]]:
    """Play every plan's games in one vector env (cell after cell), write each cell's results."""
    cfg, k, n = plans[0].cfg, len(plans), len(plans[0].per_env)
    device = plans[0].trained.device
    # Each cell samples from its own generator, seeded as a lone evaluation seeds torch
    pack = SeedPack([p.trained.model for p in plans], [torch.Generator(device=device).manual_seed(p.seed) for p in plans],
                    resolve_batching(pack_batching(cfg), device))
    greedy = not cfg.eval.sample

    def act(obs: np.ndarray) -> np.ndarray:
        frames = torch.from_numpy(obs).to(device).reshape(k, n, *obs.shape[1:])
        return pack.act(frames, greedy=greedy).flatten().cpu().numpy()

    per_env = np.concatenate([p.per_env for p in plans])
    seeds = np.concatenate([p.seed + np.arange(n) for p in plans])
    name = plans[0].cell.cell.key if k == 1 else f"{k} cells"
    start = time.perf_counter()
    with make_vec_env(game, cfg.env, k * n, max_episode_frames=plans[0].settings["max_frames"]) as envs, tqdm(
        total=int(per_env.sum()), unit="game", desc=f"{name} on {game.name}",
        disable=not sys.stderr.isatty(), dynamic_ncols=True,
    ) as bar:
        games = play_games(envs, act, per_env, seeds, on_game=lambda: bar.update(1))
    seconds = time.perf_counter() - start

    summaries = []
    for i, plan in enumerate(plans):
        mine = games[games["env"] // n == i].copy()
        mine["env"] = (mine["env"] - i * n).astype("int32")
        mine = mine.reset_index(drop=True)
        # seconds: the whole job's wall time (a packed job's cells play together)
        summary = {**summarize(mine), "seconds": seconds, "settings": plan.settings,
                   "cell": plan.cell.cell.key, "checkpoint_update": plan.trained.update}
        if k > 1:
            summary["packed_with"] = [p.cell.cell.key for p in plans if p is not plan]
        if plan.previous is not None and not plan.cfg.eval.overwrite:
            keep_eval_result(plan.cell.eval_dir(game.name), plan.cell.eval_previous(game.name))
        summary = write_results(plan.cell, game.name, mine, summary)
        log_evaluation(plan.cfg, plan.cell, game.name, summary, mine)  # to the cell's W&B run (logger=wandb)
        log.info("%s on %s: %.1f +/- %.1f over %d games (%d truncated)", plan.cell.cell.key, game.name,
                 summary["mean"], summary["std"], summary["n"], summary["truncated"])
        summaries.append(summary)
    return summaries


def open_result(cell: CellDir, eval_game: str, overwrite: bool) -> dict[str, Any] | None:
    """The summary of the cell's evaluation on `eval_game` (None: none), after finishing what a
    killed writer left (a result whose manifest it did not publish) and removing its
    leftovers. A result whose files disagree, or a damaged summary, is CellDamaged, unless it
    is to be replaced anyway (overwrite). The caller holds the evaluation lock."""
    folder = cell.eval_dir(eval_game)
    recover_eval_result(folder)
    if cell.eval_previous(eval_game).is_dir():
        remove_partial_copies(cell.eval_previous(eval_game))
    try:
        result = cell.eval_result(eval_game)
    except CellDamaged as e:
        if overwrite:
            log.warning("%s; eval.overwrite=true replaces it", e)
            return None
        raise CellDamaged(f"{e}; eval.overwrite=true evaluates the cell again and replaces it") from None
    return None if result is None else result.summary


def write_results(cell: CellDir, eval_game: str, games: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """games.parquet and summary.json as one result (fls.rundir.write_eval_result); returns the
    summary as written (with the games file's hash)."""
    buffer = io.BytesIO()
    games[GAME_COLUMNS].to_parquet(buffer, index=False)
    return write_eval_result(cell.eval_dir(eval_game), buffer.getvalue(), summary)
