"""BreakoutInfinite (docs/protocol.md#breakoutinfinite): Breakout whose wall comes back after 864 points.

Breakout's wall holds 432 points. The cartridge rebuilds it when the score it keeps in
RAM equals 432 (checked a few dozen frames after the brick that made it, when the ball
comes back to the paddle: measured on ALE's ROM, see tests/test_breakout_infinite.py),
which happens once, after the first wall; at 864 the field stays empty and the game
only ends by losing the lives. This wrapper sits on the raw one-frame env and, after
every frame on which the RAM score reaches 864 or more, writes it back 432 lower, which
is 432 again whenever a wall has just been cleared: the cartridge rebuilds it.

The score lives in RAM bytes 77 (tens and ones, two BCD digits) and 76 (hundreds, low
nibble; the high nibble is left alone) of the 128-byte RAM that ale.getRAM/setRAM
index: ALE's Breakout reward code reads exactly these. ALE reports each frame's reward
as the change of that score, so the frame after a rewrite reports (gain - 432); the
wrapper adds the 432 back, and the rewards, hence every score this project reports,
keep counting past 864. Only the screen's digits show the rewritten value.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

SCORE_LOW = 77  # tens and ones, BCD
SCORE_HIGH = 76  # hundreds in the low nibble
LIVES = 57
WALL = 432  # points of one full wall
LIMIT = 2 * WALL  # where the cartridge stops rebuilding


def bcd_score(ram: Any) -> int:
    """The score as ALE's Breakout code decodes it from RAM."""
    low, high = int(ram[SCORE_LOW]), int(ram[SCORE_HIGH])
    return (low & 0x0F) + 10 * (low >> 4) + 100 * (high & 0x0F)


def write_score(ale: Any, score: int) -> None:
    if not 0 <= score < 1000:
        raise ValueError(f"score {score}: Breakout's RAM holds 0..999")
    high = int(ale.getRAM()[SCORE_HIGH])
    ale.setRAM(SCORE_LOW, ((score // 10 % 10) << 4) | (score % 10))
    ale.setRAM(SCORE_HIGH, (high & 0xF0) | (score // 100))


class BreakoutInfinite(gym.Wrapper):
    """On a one-frame Breakout env (BreakoutNoFrameskip-v4): rebuild the wall after 864 points.

    `info["walls_rebuilt"]` counts the rewrites of the current game.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        # ale-py's AtariEnv keeps its ROM name and frame skip in private attributes: checked
        # where present, since a wrong game or a skipping env would silently do nothing.
        game = getattr(env.unwrapped, "_game", "breakout")
        if game != "breakout":
            raise ValueError(f"BreakoutInfinite needs Breakout, got {game}")
        frameskip = getattr(env.unwrapped, "_frameskip", 1)
        if frameskip != 1:
            # The rewrite must follow the frame that reaches 864, before the next one.
            raise ValueError(f"BreakoutInfinite needs a one-frame env (frameskip 1), got frameskip {frameskip}")
        self.ale = env.unwrapped.ale
        self.owed = 0  # points taken out of RAM that the next frame's reward must get back
        self.rebuilt = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.owed = 0
        self.rebuilt = 0
        return obs, {**info, "walls_rebuilt": 0}

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward += self.owed
        self.owed = 0
        score = bcd_score(self.ale.getRAM())
        if score >= LIMIT and not (terminated or truncated):
            write_score(self.ale, score - WALL)
            self.owed = WALL
            self.rebuilt += 1
        return obs, reward, terminated, truncated, {**info, "walls_rebuilt": self.rebuilt}
