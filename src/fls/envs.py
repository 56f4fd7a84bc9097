"""The one env factory: the DeepMind/Baselines Atari stack (docs/protocol.md#ppo) on two backends.

Training, evaluation and the Atari-HEAD metrics all get their frames from here:
`make_vec_env` builds a batch of games, `warp_frame` / `max_frames` / `FrameStacker` are
the preprocessing steps themselves (Atari-HEAD's recorded frames go through them).

Both backends present one interface, `AtariVec`: `reset()` and `step(actions)` return
uint8 observations (num_envs x 4 x 84 x 84, oldest frame first) and a `Step` with the
*unclipped* reward, the episode end used for bootstrapping (a lost life, a game over or
the frame limit), and the end of each *game* with its score and length in frames. A
finished game restarts in the same step (Baselines' VecEnv semantics), so the returned
observation is already the next game's first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from fls.breakout_infinite import BreakoutInfinite
from fls.errors import ConfigError

BACKENDS = ("gymnasium", "native")
FIRE = 1


# ---------------------------------------------------------------------------------------
# Preprocessing, exactly as Baselines' wrappers do it (also used on Atari-HEAD frames)
# ---------------------------------------------------------------------------------------


def max_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel-wise max of the last two raw RGB frames of an action repeat (removes flicker)."""
    return np.maximum(a, b)


def warp_frame(rgb: np.ndarray, size: int = 84) -> np.ndarray:
    """210 x 160 RGB -> size x size grayscale, as Baselines' WarpFrame (cv2, area resize)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


class FrameStacker:
    """The last k frames of each env, oldest first, restarted on every episode end.

    `fill` says what a restarted stack holds besides the new frame: "zeros" is Baselines
    ppo2's VecFrameStack, which zeroes an env's stack on every done (a lost life too) and
    is what the paper's agents saw; "repeat" is Baselines' FrameStack wrapper, the new
    frame k times (docs/protocol.md#saliency-metrics uses it for Atari-HEAD stacks).
    """

    FILLS = ("zeros", "repeat")

    def __init__(self, num_envs: int, k: int = 4, shape: tuple[int, int] = (84, 84), fill: str = "zeros"):
        if fill not in self.FILLS:
            raise ValueError(f"fill={fill!r}: expected one of {self.FILLS}")
        self.fill = fill
        self.frames = np.zeros((num_envs, k, *shape), dtype=np.uint8)

    def reset(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        index = slice(None) if mask is None else mask
        new = frames[index]
        if self.fill == "repeat":
            self.frames[index] = new[:, None]
        else:
            self.frames[index] = 0
            if mask is None:
                self.frames[:, -1] = new
            else:
                self.frames[mask, -1] = new
        return self.frames

    def push(self, frames: np.ndarray, reset_mask: np.ndarray | None = None) -> np.ndarray:
        self.frames[:, :-1] = self.frames[:, 1:]
        self.frames[:, -1] = frames
        if reset_mask is not None and reset_mask.any():
            self.reset(frames, reset_mask)
        return self.frames


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


def resolve_backend(env_cfg: Any, game_cfg: Any) -> str:
    backend = env_cfg.backend
    if backend not in BACKENDS:
        raise ConfigError(f"env.backend={backend}: expected one of {', '.join(BACKENDS)}")
    if game_cfg.infinite and backend == "native":
        raise ConfigError(
            f"env.backend=native: game={game_cfg.name} rewrites emulator RAM, which only "
            "env.backend=gymnasium can do"
        )
    return backend


# The env keys that are true or false (fls.config.SWITCHES checks them with the others)
ENV_SWITCHES = ("episodic_life", "fire_reset")


def check_env_config(env_cfg: Any, game_cfg: Any) -> None:
    """Every env key (conf/env/atari.yaml) and the game's frame limits, as ConfigError."""
    for key in ENV_SWITCHES:
        if not isinstance(env_cfg[key], bool):
            raise ConfigError(f"env.{key}={env_cfg[key]}: expected true or false")
    resolve_backend(env_cfg, game_cfg)
    for key in ("noop_max", "num_threads"):
        value = env_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"env.{key}={value}: expected a non-negative integer")
    for key in ("max_frames", "eval_max_frames"):
        value = game_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"game.{key}={value}: expected a positive number of frames")
    if env_cfg.get("stack_fill", "zeros") not in FrameStacker.FILLS:
        raise ConfigError(f"env.stack_fill={env_cfg.stack_fill}: expected one of {', '.join(FrameStacker.FILLS)}")
    for key in ("frame_skip", "frame_stack"):
        value = env_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"env.{key}={value}: expected a positive integer")


# ---------------------------------------------------------------------------------------
# The common interface
# ---------------------------------------------------------------------------------------


def env_seeds(seed: int | np.ndarray | None, num_envs: int) -> np.ndarray | None:
    """Each env's reset seed: seed + i for an int (Baselines' VecEnv), or one given per env
    (a packed job: each cell's envs keep the seeds they have when it trains alone)."""
    if seed is None:
        return None
    if np.ndim(seed) == 0:
        return int(seed) + np.arange(num_envs, dtype=np.int64)
    seeds = np.asarray(seed, dtype=np.int64)
    if seeds.shape != (num_envs,):
        raise ValueError(f"{len(seeds)} reset seeds for {num_envs} envs")
    return seeds


@dataclass
class Step:
    """What one vector step returns besides the observation (all arrays of num_envs)."""

    reward: np.ndarray  # unclipped game reward of this agent step (float32)
    done: np.ndarray  # episode end for bootstrapping: lost life (if episodic_life), game over, frame limit
    life_lost: np.ndarray  # a life was lost in this step (whatever episodic_life says)
    game_over: np.ndarray  # the game ended (all lives, or the frame limit); it restarted
    truncated: np.ndarray  # the game ended at the frame limit
    game_score: np.ndarray  # unclipped score of each game that ended (nan elsewhere)
    game_frames: np.ndarray  # length in frames of each game that ended (0 elsewhere)
    game_seconds: np.ndarray  # wall time of each game that ended (nan elsewhere)


class AtariVec:
    """A batch of games. `step` = `send` then `recv`; a backend that can step
    asynchronously (native) returns from `send` at once, so the caller can work meanwhile.
    `groups` are the env slices that can be sent and received separately (EnvGroups)."""

    num_envs: int
    num_actions: int
    backend: str
    observation_shape: tuple[int, int, int]

    def reset(self, seed: int | np.ndarray | None = None) -> np.ndarray:
        """Start every game; env i on seed + i, or on seed[i] for an array (env_seeds)."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, Step]:
        raise NotImplementedError

    @property
    def groups(self) -> list[slice]:
        return [slice(0, self.num_envs)]

    def screen(self, i: int) -> np.ndarray:
        """Env i's raw 210 x 160 RGB screen (the gymnasium backend only)."""
        raise NotImplementedError(f"the {self.backend} backend does not expose raw screens; use env.backend=gymnasium")

    def send(self, group: slice, actions: np.ndarray) -> None:
        self._pending = actions

    def recv(self, group: slice) -> tuple[np.ndarray, Step]:
        return self.step(self._pending)

    def pipeline(self, num_steps: int, on_result: Callable[[int, slice, np.ndarray, Step], None]) -> Iterator[tuple[int, slice]]:
        """The order of a rollout's work that hides the policy behind the emulator.

        Yields (step, group): the caller acts for that group and `send`s its actions. Before
        it does, the group's answer to the previous step is received and handed to
        `on_result(step - 1, group, observation, result)`; after the last step, each
        group's last answer. With several groups (native backend, speed.env_groups), one
        group's games run while the policy acts for the next; with one, this is a plain
        step-by-step rollout. Each env's transitions are the same either way.
        """
        for step in range(num_steps):
            for group in self.groups:
                if step > 0:
                    on_result(step - 1, group, *self.recv(group))
                yield step, group
        for group in self.groups:
            on_result(num_steps - 1, group, *self.recv(group))

    def close(self) -> None:
        pass

    def __enter__(self) -> "AtariVec":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _GameClock:
    """Per-env score, frame count and wall time of the game in progress."""

    def __init__(self, num_envs: int):
        self.score = np.zeros(num_envs, dtype=np.float64)
        self.start = np.full(num_envs, time.perf_counter())

    def finish(self, game_over: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        now = time.perf_counter()
        scores = np.where(game_over, self.score, np.nan)
        seconds = np.where(game_over, now - self.start, np.nan)
        self.score[game_over] = 0.0
        self.start[game_over] = now
        return scores, seconds


# ---------------------------------------------------------------------------------------
# Native backend: ale-py's C++ vector env
# ---------------------------------------------------------------------------------------


class NativeAtariVec(AtariVec):
    """ale-py's `AtariVectorEnv` (C++ threads), configured and corrected to Baselines' stack.

    Configured: frame skip 4 with max of the last 2 frames, 84 x 84 area resize, unclipped
    rewards (the trainer clips to sign for learning and scores unclipped), no episodic
    life (it would reset the whole game) but life-loss info, same-step autoreset.
    Corrected here: frames are stacked in Python, restarted on every episode end as
    Baselines ppo2's VecFrameStack does (the native stack restarts only with a new game,
    not after a lost life), and game over / life loss are told apart from the lives
    counter.

    A speed mode, not the default: it differs from Baselines where the agents of the paper
    were trained (env.backend=gymnasium is the faithful stack):
    - No FIRE (and no no-op, FIRE, action-2 sequence) after a lost life: its envs step
      together, so one cannot take extra steps alone. The policy has to press FIRE itself
      to relaunch the ball; an agent that does not plays one endless game
      (tests/test_envs.py). This slows early learning on Breakout (docs/learning.md).
    - Reset: ALE presses FIRE for one frame, then 0-28 no-op frames (noop_max=30); Baselines
      does 1-30 no-op frames, then FIRE and action 2 for one agent step each.
    - Grayscale before the max of the last two frames, with ALE's palette luminance, rather
      than max of RGB then cv2's RGB->gray. Only pixels where two flickering colours
      overlap can differ: measured over 600-1,500 random steps (tests/test_envs.py),
      Breakout, Space Invaders and Enduro frames are identical, Seaquest differs in 0.13%
      of pixels, Ms. Pac-Man in 0.5% (by up to 37 grey levels).
    - The frame limit counts frames stepped (not the reset's no-ops): games are cut at
      most 30 frames later than Baselines would.
    """

    backend = "native"

    def __init__(
        self,
        rom: str,
        num_envs: int,
        *,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        stack_fill: str = "zeros",
        episodic_life: bool = True,
        fire_reset: bool = True,
        max_episode_frames: int = 108000,
        num_threads: int = 0,
    ):
        from ale_py.vector_env import AtariVectorEnv

        self.num_envs = num_envs
        self.episodic_life = episodic_life
        self.max_episode_frames = max_episode_frames
        self.env = AtariVectorEnv(
            rom,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=0.0,
            autoreset_mode="SameStep",
            img_height=84,
            img_width=84,
            grayscale=True,
            stack_num=1,
            frameskip=frame_skip,
            maxpool=True,
            noop_max=noop_max,
            episodic_life=False,
            life_loss_info=True,
            reward_clipping=False,
            use_fire_reset=fire_reset,
        )
        self.num_actions = int(self.env.single_action_space.n)
        self.stack = FrameStacker(num_envs, frame_stack, fill=stack_fill)
        self.observation_shape = (frame_stack, 84, 84)
        self.clock = _GameClock(num_envs)
        self.lives = np.zeros(num_envs, dtype=np.int64)
        self.game_start_frame = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | np.ndarray | None = None) -> np.ndarray:
        frames, info = self.env.reset(seed=env_seeds(seed, self.num_envs))
        self.lives = info["lives"].astype(np.int64)
        self.game_start_frame = (info["frame_number"] - info["episode_frame_number"]).astype(np.int64)
        self.clock = _GameClock(self.num_envs)
        return self.stack.reset(frames[:, -1]).copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, Step]:
        self.env.send(np.asarray(actions, dtype=np.int32))
        return self._receive()

    def send(self, group: slice, actions: np.ndarray) -> None:
        # Returns at once: the emulator threads step while the caller computes.
        self.env.send(np.asarray(actions, dtype=np.int32))

    def recv(self, group: slice) -> tuple[np.ndarray, Step]:
        return self._receive()

    def _receive(self) -> tuple[np.ndarray, Step]:
        frames, reward, terminated, truncated, info = self.env.recv()
        lives = info["lives"].astype(np.int64)
        # A lost life keeps the game going with fewer lives; a game over restarts it (same
        # step), so its lives counter goes back up.
        life_lost = terminated & (lives < self.lives)
        game_over = (terminated | truncated) & ~life_lost
        self.lives = lives

        reward = reward.astype(np.float32)
        self.clock.score += reward
        scores, seconds = self.clock.finish(game_over)
        new_start = (info["frame_number"] - info["episode_frame_number"]).astype(np.int64)
        game_frames = np.where(game_over, new_start - self.game_start_frame, 0)
        self.game_start_frame = np.where(game_over, new_start, self.game_start_frame)

        done = game_over | (life_lost & self.episodic_life)
        obs = self.stack.push(frames[:, -1], reset_mask=done)
        return obs.copy(), Step(
            reward=reward,
            done=done,
            life_lost=life_lost,
            game_over=game_over,
            truncated=truncated & game_over,
            game_score=scores,
            game_frames=game_frames,
            game_seconds=seconds,
        )

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------
# Reference backend: gymnasium + wrappers that mirror baselines.common.atari_wrappers
# ---------------------------------------------------------------------------------------


class GameStats(gym.Wrapper):
    """Innermost, like Baselines' Monitor: unclipped score and frames of each whole game."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score, self.frames = 0.0, 0
        self.start = time.perf_counter()

    def reset(self, **kwargs: Any):
        self.score, self.frames = 0.0, 0
        self.start = time.perf_counter()
        return self.env.reset(**kwargs)

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.frames += 1
        if terminated or truncated:
            info = dict(info, game={
                "score": self.score,
                "frames": self.frames,
                "seconds": time.perf_counter() - self.start,
                "truncated": bool(truncated and not terminated),
            })
        return obs, reward, terminated, truncated, info


class NoopReset(gym.Wrapper):
    """Up to `noop_max` no-op frames at reset (Baselines' NoopResetEnv: 1..noop_max)."""

    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        if self.noop_max <= 0:
            return obs, info
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeat the action `skip` frames; observe the max of the last two (RGB)."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        self.skip = skip
        self.buffer = np.zeros((2, *env.observation_space.shape), dtype=np.uint8)

    def step(self, action: int):
        total, terminated, truncated, info = 0.0, False, False, {}
        for i in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if i == self.skip - 2:
                self.buffer[0] = obs
            if i == self.skip - 1:
                self.buffer[1] = obs
            total += float(reward)
            if terminated or truncated:
                break
        return max_frames(self.buffer[0], self.buffer[1]), total, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode; the game goes on (Baselines' EpisodicLifeEnv).

    The soft reset after a lost life takes one no-op step, as Baselines does.
    """

    def __init__(self, env: gym.Env, enabled: bool = True):
        super().__init__(env)
        self.enabled = enabled
        self.lives = 0
        self.game_over = True

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives
        self.lives = lives
        info = dict(info, life_lost=life_lost, game_over=self.game_over)
        return obs, reward, terminated or (life_lost and self.enabled), truncated, info

    def reset(self, **kwargs: Any):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, _, _, info = self.env.step(0)
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE, then action 2, after every reset (Baselines' FireResetEnv)."""

    def reset(self, **kwargs: Any):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class WarpFrame(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return warp_frame(observation)


def make_reference_env(
    env_id: str,
    *,
    infinite: bool = False,
    noop_max: int = 30,
    frame_skip: int = 4,
    episodic_life: bool = True,
    fire_reset: bool = True,
    max_episode_frames: int = 108000,
) -> gym.Env:
    """One game with Baselines' wrappers, in Baselines' order (make_atari + wrap_deepmind)."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(env_id, max_num_frames_per_episode=max_episode_frames, disable_env_checker=True)
    if infinite:
        env = BreakoutInfinite(env)
    env = GameStats(env)
    env = NoopReset(env, noop_max=noop_max)
    env = MaxAndSkip(env, skip=frame_skip)
    env = EpisodicLife(env, enabled=episodic_life)
    if fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    return WarpFrame(env)


class GymnasiumAtariVec(AtariVec):
    """`num_envs` reference games stepped in turn, reset on done as Baselines' VecEnv does."""

    backend = "gymnasium"

    def __init__(self, env_id: str, num_envs: int, *, frame_stack: int = 4, stack_fill: str = "zeros", **kwargs: Any):
        self.num_envs = num_envs
        self.envs = [make_reference_env(env_id, **kwargs) for _ in range(num_envs)]
        self.num_actions = int(self.envs[0].action_space.n)
        self.stack = FrameStacker(num_envs, frame_stack, fill=stack_fill)
        self.observation_shape = (frame_stack, 84, 84)
        self.frames = np.zeros((num_envs, 84, 84), dtype=np.uint8)

    def reset(self, seed: int | np.ndarray | None = None) -> np.ndarray:
        seeds = env_seeds(seed, self.num_envs)
        for i, env in enumerate(self.envs):
            self.frames[i], _ = env.reset(seed=None if seeds is None else int(seeds[i]))
        return self.stack.reset(self.frames).copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, Step]:
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float32)
        done, life_lost, game_over, truncated = (np.zeros(n, dtype=bool) for _ in range(4))
        scores, seconds = np.full(n, np.nan), np.full(n, np.nan)
        frames = np.zeros(n, dtype=np.int64)
        for i, (env, action) in enumerate(zip(self.envs, np.asarray(actions))):
            frame, r, term, trunc, info = env.step(int(action))
            reward[i], life_lost[i] = r, info.get("life_lost", False)
            done[i] = term or trunc
            if "game" in info:
                game = info["game"]
                game_over[i], truncated[i] = True, game["truncated"]
                scores[i], frames[i], seconds[i] = game["score"], game["frames"], game["seconds"]
            if done[i]:
                frame, _ = env.reset()
            self.frames[i] = frame
        obs = self.stack.push(self.frames, reset_mask=done)
        return obs.copy(), Step(reward, done, life_lost, game_over, truncated, scores, frames, seconds)

    def screen(self, i: int) -> np.ndarray:
        return self.envs[i].unwrapped.ale.getScreenRGB().copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()


class EnvGroups(AtariVec):
    """Several vector envs side by side, sent and received one group at a time.

    The trainer acts for one group while the other's games run in the emulator threads,
    which hides the policy's inference behind env stepping. Each env's transitions are
    the ones it would have with one vector env: only the order of the work changes.
    """

    def __init__(self, parts: list[AtariVec]):
        self.parts = parts
        self.num_envs = sum(p.num_envs for p in parts)
        self.num_actions = parts[0].num_actions
        self.backend = parts[0].backend
        self.observation_shape = parts[0].observation_shape
        starts = np.cumsum([0] + [p.num_envs for p in parts])
        self._groups = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        self._part = {g.start: p for g, p in zip(self._groups, parts)}

    @property
    def groups(self) -> list[slice]:
        return self._groups

    def reset(self, seed: int | np.ndarray | None = None) -> np.ndarray:
        # Env i keeps seed + i (or seed[i]), as with one vector env.
        seeds = env_seeds(seed, self.num_envs)
        return np.concatenate([p.reset(None if seeds is None else seeds[g])
                               for g, p in zip(self._groups, self.parts)])

    def send(self, group: slice, actions: np.ndarray) -> None:
        self._part[group.start].send(slice(0, group.stop - group.start), actions)

    def recv(self, group: slice) -> tuple[np.ndarray, Step]:
        return self._part[group.start].recv(slice(0, group.stop - group.start))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, Step]:
        for g in self._groups:
            self.send(g, actions[g])
        results = [self.recv(g) for g in self._groups]
        obs = np.concatenate([r[0] for r in results])
        steps = [r[1] for r in results]
        return obs, Step(*(np.concatenate([getattr(s, f) for s in steps]) for f in Step.__dataclass_fields__))

    def close(self) -> None:
        for p in self.parts:
            p.close()


# ---------------------------------------------------------------------------------------
# The factory
# ---------------------------------------------------------------------------------------


def make_vec_env(
    game_cfg: Any,
    env_cfg: Any,
    num_envs: int,
    *,
    max_episode_frames: int | None = None,
    episodic_life: bool | None = None,
    groups: int = 1,
    cells: int = 1,
) -> AtariVec:
    """The env stack of docs/protocol.md for `game_cfg` on the backend `env_cfg` selects.

    Games are cut at `max_episode_frames` (default: the game's training cap, `max_frames`).
    With groups > 1, the envs are split into that many vector envs that step independently
    (EnvGroups; only the native backend steps them in the background). `cells`: the envs
    are that many cells' equal shares (a packed job), and each group holds the same part of
    every cell's share (fls.seed_pack.PackLayout).
    """
    backend = resolve_backend(env_cfg, game_cfg)
    if num_envs % cells:
        raise ValueError(f"{num_envs} envs are not {cells} cells' equal shares")
    per_cell = num_envs // cells
    if groups > 1 and per_cell >= groups:
        sizes = [cells * len(a) for a in np.array_split(np.arange(per_cell), groups)]
        return EnvGroups([make_vec_env(game_cfg, env_cfg, n, max_episode_frames=max_episode_frames,
                                       episodic_life=episodic_life) for n in sizes])
    common = dict(
        noop_max=int(env_cfg.noop_max),
        frame_skip=int(env_cfg.frame_skip),
        frame_stack=int(env_cfg.frame_stack),
        stack_fill=str(env_cfg.get("stack_fill", "zeros")),
        episodic_life=bool(env_cfg.episodic_life if episodic_life is None else episodic_life),
        fire_reset=bool(env_cfg.get("fire_reset", True)),
        max_episode_frames=int(max_episode_frames or game_cfg.max_frames),
    )
    if backend == "native":
        vec: AtariVec = NativeAtariVec(
            game_cfg.rom, num_envs, num_threads=int(env_cfg.num_threads), **common
        )
    else:
        vec = GymnasiumAtariVec(game_cfg.env_id, num_envs, infinite=bool(game_cfg.infinite), **common)
    if vec.num_actions != game_cfg.num_actions:
        raise ConfigError(
            f"game={game_cfg.name}: the emulator has {vec.num_actions} actions, the config says "
            f"{game_cfg.num_actions}"
        )
    return vec
