"""The life of one training cell, so that src/train.py holds only the algorithm.

    run = TrainingRun.open(cfg, num_updates, batch_size)    # None: the cell is done
    with run:
        ... build envs (run.closing(envs)), agent, optimizer ...
        run.resume(model, optimizer, **facts)               # from the checkpoint, if any
        for update in run.updates():
            ... rollout (run.games.add(...)), PPO update ...
            run.end_update(update, row)

What it owns:
- opening the cell: config check and record, skip when done, refuse a changed config
  (fls.cell_lifecycle);
- resume: model, optimizer, counters, the window of the last 100 games and the RNG states
  from the checkpoint; metric rows logged after it are dropped;
- the cadence of checkpoints (every `checkpoint_every` updates, at the end, on a signal);
- signals: SIGUSR2 / SIGTERM / SIGINT checkpoint after the update in progress, then the
  process exits for requeue (fls.preemption);
- every status.json write and the final state: done, interrupted (resumable) or failed;
- the three sinks of each update's row (metrics.csv, W&B, progress): fls.train_log.TrainLog.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fls import checkpoint
from fls.cell_lifecycle import job_info, now, open_training_cell
from fls.config import check_train_config
from fls.preemption import Preemption
from fls.rundir import DONE, FAILED, INTERRUPTED, RUNNING, CellDir, cell_from_config
from fls.train_log import TrainLog

log = logging.getLogger(__name__)

WINDOW = 100  # eprewmean: the mean score of the last 100 finished games (Baselines' epinfobuf)


class GameWindow:
    """Scores and lengths (frames) of the last WINDOW finished games, and how many games ended."""

    def __init__(self) -> None:
        self.scores: deque[float] = deque(maxlen=WINDOW)
        self.frames: deque[int] = deque(maxlen=WINDOW)
        self.count = 0

    def add(self, scores: np.ndarray, frames: np.ndarray) -> None:
        self.scores.extend(np.asarray(scores, dtype=float).tolist())
        self.frames.extend(np.asarray(frames, dtype=int).tolist())
        self.count += len(scores)

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")

    @property
    def mean_frames(self) -> float:
        return float(np.mean(self.frames)) if self.frames else float("nan")


def env_seed(seed: int, update: int) -> int:
    # Emulator state is not checkpointed: a resumed run starts new games, on seeds of its own.
    return (seed + 1_000_003 * update) % 2**31


class TrainingRun:
    def __init__(self, cfg: DictConfig, cell: CellDir, num_updates: int, batch_size: int):
        self.cfg, self.cell = cfg, cell
        self.num_updates, self.batch_size = num_updates, batch_size
        self.start_update = 0
        self.global_step = 0
        self.games = GameWindow()
        self.log: TrainLog | None = None
        self.result: dict[str, Any] | None = None
        self._saved: dict[str, Any] = {}
        self._stack = ExitStack()
        self._preemption = Preemption()

    @classmethod
    def open(cls, cfg: DictConfig, num_updates: int, batch_size: int) -> TrainingRun | None:
        """The run of the cell `cfg` names, or None when that cell is already done. Raises
        ConfigError (bad or changed config) and CellBusy (another process trains it)."""
        check_train_config(cfg)  # before anything is written, the lock file included
        if num_updates * batch_size != int(cfg.total_timesteps):
            log.warning("total_timesteps=%s is not a multiple of the rollout (num_envs x ppo.num_steps = %d): "
                        "training %d updates = %d agent steps", cfg.total_timesteps, batch_size, num_updates,
                        num_updates * batch_size)
        cell = cell_from_config(cfg)
        with ExitStack() as held:
            held.enter_context(cell.lock("train"))
            if open_training_cell(cfg, cell) is None:
                return None
            run = cls(cfg, cell, num_updates, batch_size)
            run._stack.push(held.pop_all())  # the run holds the lock until it ends
            return run

    # Context: signals are caught and envs closed for the whole run; the final state is written on the way out

    def __enter__(self) -> TrainingRun:
        self._stack.enter_context(self._preemption)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        try:
            if kind is None:
                self._finish()
            elif not issubclass(kind, SystemExit):  # SystemExit: the preemption path wrote its state
                # Ctrl-C, or submitit refusing the requeue after our checkpoint (max_num_timeout
                # reached): the cell is resumable, not broken.
                interrupted = issubclass(kind, KeyboardInterrupt) or self.cell.state == INTERRUPTED
                self.cell.write_status(state=INTERRUPTED if interrupted else FAILED, ended_at=now(),
                                       error=f"{kind.__name__}: {error}")
        finally:
            if self.log is not None:
                self.log.close(exit_code=0 if kind is None else 1)
            self._stack.close()

    def closing(self, resource: Any) -> Any:
        """`resource` (envs), closed when the run ends, however it ends."""
        self._stack.callback(resource.close)
        return resource

    # Resume

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
               **facts: Any) -> None:
        """Load the checkpoint into `model` and `optimizer` if there is one, and start the
        cell's status and log. `facts` (model_name, game, num_actions) go into every
        checkpoint, so a trained cell can be opened without its config."""
        self._saved = {"model": model, "optimizer": optimizer, "facts": facts}
        if self.cell.has_checkpoint():
            try:
                state = checkpoint.load(self.cell.checkpoint, map_location=device)
            except checkpoint.CheckpointError as e:
                self.cell.write_status(state=FAILED, failed_at=now(), error=str(e))
                raise
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            self.start_update, self.global_step = state["update"], state["global_step"]
            self.games.count = state["games"]
            self.games.scores.extend(state["game_scores"])
            self.games.frames.extend(state["game_frames"])
            checkpoint.set_rng_states(state["rng"])
            log.info("%s: resuming at update %d/%d (agent step %d)", self.cell.cell.key, self.start_update,
                     self.num_updates, self.global_step)
        status = self.cell.status()
        self.log = TrainLog(self.cfg, self.cell, OmegaConf.to_container(self.cfg, resolve=True),
                            start_update=self.start_update, start_step=self.global_step,
                            total_steps=self.num_updates * self.batch_size, wandb_id=status.get("wandb_run_id"))
        self.cell.write_status(
            # env i of a (re)start plays on env_seed + i; evaluation keeps clear of these
            env_reset_seeds=[*status.get("env_reset_seeds", []), self.env_seed],
            num_envs=int(self.cfg.num_envs),
            state=RUNNING, started_at=now(), update=self.start_update, num_updates=self.num_updates,
            global_step=self.global_step, total_timesteps=int(self.cfg.total_timesteps),
            wandb_run_id=self.log.wandb_id, error=None, **job_info(),
        )

    @property
    def env_seed(self) -> int:
        """The seed the envs start from at this (re)start."""
        return env_seed(int(self.cfg.seed), self.start_update)

    # The updates

    def updates(self) -> Iterator[int]:
        """Update indices from the one after the checkpoint to the last (1-based)."""
        return iter(range(self.start_update + 1, self.num_updates + 1))

    def end_update(self, update: int, row: dict[str, Any]) -> None:
        """Record the update; checkpoint on the cadence, at the end, or when a signal came
        (then stop here: the process exits so that the job is requeued)."""
        self.global_step = int(row["global_step"])
        assert self.log is not None, "resume() starts the log"
        self.log.write(row)
        stop = self._preemption.requested
        if update % int(self.cfg.checkpoint_every) == 0 or update == self.num_updates or stop:
            self._save(update)
        if stop:
            self.cell.write_status(state=INTERRUPTED, interrupted_at=now(), signal=self._preemption.signum)
            log.warning("%s: checkpointed at update %d; exiting for requeue", self.cell.cell.key, update)
            self.log.close(exit_code=1)
            self.log = None
            self._preemption.exit()

    def _save(self, update: int) -> None:
        checkpoint.save(
            self.cell.checkpoint, model=self._saved["model"].state_dict(), optimizer=self._saved["optimizer"].state_dict(),
            update=update, global_step=self.global_step, games=self.games.count,
            game_scores=list(self.games.scores), game_frames=list(self.games.frames), **self._saved["facts"],
        )
        self.cell.write_status(update=update, global_step=self.global_step, checkpoint_update=update, updated_at=now())

    def _finish(self) -> None:
        eprewmean = self.games.mean_score
        self.cell.write_status(state=DONE, finished_at=now(), global_step=self.global_step, eprewmean=eprewmean)
        log.info("%s: done, %d agent steps, eprewmean %.2f", self.cell.cell.key, self.global_step, eprewmean)
        self.result = {"eprewmean": eprewmean, "global_step": self.global_step}
