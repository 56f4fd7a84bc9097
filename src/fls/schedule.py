"""How long a cell trains and at which learning rate: PPO's arithmetic (docs/protocol.md#ppo).

One update collects a rollout of num_envs x ppo.num_steps agent steps; a cell trains
total_timesteps // rollout updates, and with ppo.anneal_lr its learning rate falls linearly
to 0 over them. src/train.py runs this schedule, the config check holds total_timesteps to a
whole rollout, and a zoo entry trained further goes on from where the new total puts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Schedule:
    batch_size: int  # agent steps of one rollout, per cell: num_envs x ppo.num_steps
    num_updates: int  # total_timesteps // batch_size
    learning_rate: float  # ppo.learning_rate, that of update 1
    anneal: bool  # ppo.anneal_lr

    @classmethod
    def of(cls, cfg: Any) -> Schedule:
        """The schedule of a checked training config."""
        batch_size = int(cfg.num_envs) * int(cfg.ppo.num_steps)
        return cls(batch_size, int(cfg.total_timesteps) // batch_size, float(cfg.ppo.learning_rate),
                   bool(cfg.ppo.anneal_lr))

    @property
    def agent_steps(self) -> int:
        """What the cell trains in all: whole rollouts only."""
        return self.num_updates * self.batch_size

    def lr(self, update: int) -> float:
        """The learning rate of `update` (1-based): annealed linearly to 0 over the whole run."""
        if not self.anneal:
            return self.learning_rate
        return (1.0 - (update - 1.0) / self.num_updates) * self.learning_rate
