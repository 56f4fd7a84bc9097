"""The life of a training cell, from its config check to its final state, so that
src/train.py holds only the algorithm.

    with TrainingRun.open(cfg) as runs:                 # [] when every cell is done
        for run in runs:                                # cells that resume at the same update
            with run:
                ... build envs (run.closing(envs)), agents (fls.seed_pack), optimizer ...
                run.resume(agents, optimizer, device, **facts)  # from the checkpoints, if any
                for update in run.updates():            # run.schedule: its length and learning rate
                    ... rollout (run.cells[i].games.add(...)), PPO update ...
                    run.end_update(update, rows)        # one row per cell

A job trains one cell, or under pack=seeds the cells of pack.seeds (fls.config.cell_configs).
Each cell keeps everything a lone cell has: its directory, config, checkpoint, metrics.csv,
W&B run, status, train.log. Cells that would resume at different updates cannot share one
Adam schedule (fls.seed_pack), so they train in turn, one run per update they start from.

What it owns, per cell:
- the check of a training config (check_train_config: the sweeper's preflight too);
- opening the cell (open_training_cell): a finished cell is skipped with a message; an
  unfinished one resumes from its checkpoint, provided it is asked to train the same thing
  (fls.config.training_identity), anything else is refused rather than mixed; `overwrite=true`
  is the only way to discard a cell's results; with zoo=<entry>, a new cell starts from the
  entry (fls.zoo.further);
- resume: model, optimizer, counters, the window of the last 100 games and the RNG states
  from the checkpoint; metric rows logged after it are dropped;
- the cadence of checkpoints (every `checkpoint_every` updates, at the end, on a signal);
- snapshots of the weights (`snapshots=<n>`, fp16, at the evenly spaced updates of
  Schedule.snapshot_updates, for saliency over training): a resumed run removes those past
  its checkpoint (a lost stretch of training) and writes them again as it passes them, so
  none is duplicated or lost;
- signals: SIGUSR2 / SIGTERM / SIGINT checkpoint after the update in progress, then the
  process exits for requeue (fls.preemption);
- every status.json write and the final state: done, interrupted (resumable) or failed;
- the three sinks of each update's row (metrics.csv, W&B, progress): fls.train_log.TrainLog.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fls import checkpoint
from fls.config import (cell_configs, check_cell_location, check_ppo, check_switches, pack_batching, pack_seeds,
                        check_threads, resolve_device, training_identity)
from fls.durable import atomic_write_bytes, atomic_write_text, durable_step, remove_temporaries
from fls.envs import check_env_config
from fls.errors import CellDamaged, CellsRefused, CellWriteError, CheckpointError, ConfigError, Refusal
from fls.facts import as_float, as_int, changes, now, source_commit
from fls.preemption import Preemption
from fls.rundir import DONE, FAILED, INTERRUPTED, RUNNING, CellDir, cell_from_config
from fls.schedule import Schedule
from fls.seed_pack import SeedPack, restore_generator
from fls.train_log import MetricsCSV, TrainLog
from fls.zoo.further import check_continuation, continue_training

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# The config, and opening the cell
# ---------------------------------------------------------------------------------------


def check_train_config(cfg: Any) -> None:
    """Every reason a training cell could not start, as one ConfigError."""
    check_switches(cfg)
    if len(pack_seeds(cfg)) > 1 and cfg.get("zoo"):
        raise ConfigError(f"zoo={cfg.zoo}: a zoo entry is one cell and trains further alone; use pack=none")
    pack_batching(cfg)
    steps = as_int("total_timesteps", cfg.total_timesteps)
    if steps <= 0:
        raise ConfigError(f"total_timesteps={cfg.total_timesteps}: must be a positive number of agent steps")
    envs = as_int("num_envs", cfg.num_envs)
    if envs <= 0:
        raise ConfigError(f"num_envs={cfg.num_envs}: must be a positive integer")
    check_ppo(cfg.ppo)
    schedule = Schedule.of(cfg)  # check_ppo has checked num_steps
    batch = schedule.batch_size
    if batch % int(cfg.ppo.num_minibatches):
        raise ConfigError(
            f"ppo.num_minibatches={cfg.ppo.num_minibatches}: must divide num_envs x ppo.num_steps = {batch}"
        )
    if steps < batch:
        raise ConfigError(
            f"total_timesteps={cfg.total_timesteps}: less than one rollout "
            f"(num_envs x ppo.num_steps = {batch}); use at least {batch}"
        )
    if as_int("checkpoint_every", cfg.checkpoint_every) <= 0:
        raise ConfigError(f"checkpoint_every={cfg.checkpoint_every}: must be a positive number of updates")
    snapshots = as_int("snapshots", cfg.snapshots)
    if not 0 <= snapshots <= schedule.num_updates + 1:
        raise ConfigError(f"snapshots={cfg.snapshots}: expected 0 (none) to {schedule.num_updates + 1} (the weights "
                          f"as initialised and after each of the run's {schedule.num_updates} updates)")
    if as_float("log_every_s", cfg.log_every_s) < 0:
        raise ConfigError(f"log_every_s={cfg.log_every_s}: expected a number of seconds >= 0")
    check_threads(cfg.torch_threads)
    resolve_device(cfg.device)
    check_env_config(cfg.env, cfg.game)
    check_cell_location(cfg)
    if cfg.get("zoo"):
        if cfg.overwrite:
            raise ConfigError(f"zoo={cfg.zoo} with overwrite=true: a cell trained further from an entry is not "
                              "discarded this way; remove its directory, or use another run_root=")
        check_continuation(cfg, cell_from_config(cfg), schedule)


def job_info() -> dict[str, Any]:
    """Where this process runs, for status.json and sweep-status."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "commit": source_commit()}
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        if var in os.environ:
            info[var.lower()] = os.environ[var]
    return info


def open_training_cell(cfg: DictConfig, cell: CellDir) -> CellDir | None:
    """The cell to train, or None when it is already done. Raises ConfigError. The caller
    has checked the config (check_train_config) and holds the cell's training lock."""
    if cfg.overwrite and cell.path.exists():
        cell.discard()
        log.warning("overwrite=true: discarded %s", cell.path)
    removed = remove_temporaries(cell.path) if cell.path.is_dir() else 0
    if removed:
        log.info("%s: removed %d temporary file(s) of a write that never finished", cell.path, removed)
    ident = training_identity(cfg)
    if cell.config.exists():
        recorded = training_identity(cell.recorded_config())
        differ = [f"{key}: {a} -> {b}" for key, a, b in changes(recorded, ident)]
        if differ:
            raise ConfigError(
                f"{cell.path} was started with a different config ({'; '.join(differ[:4])}); "
                "use another study=, or overwrite=true to discard it"
            )
    elif cell.status_file.exists() or cell.has_checkpoint() or cell.metrics.exists():
        raise ConfigError(
            f"{cell.path} has training results but no config.yaml, so what they were trained with "
            "cannot be checked; restore its config.yaml, or overwrite=true to discard the cell"
        )
    else:
        cell.path.mkdir(parents=True, exist_ok=True)
        config = OmegaConf.to_container(cfg, resolve=True)
        config.pop("hydra", None)
        atomic_write_text(cell.config, OmegaConf.to_yaml(config))
    started_from = (cell.status().get("continued_from") or {}).get("entry")
    if started_from and not cell.has_checkpoint():  # fls.zoo.further.continue_training stopped half-way
        raise ConfigError(f"{cell.path} was being started from zoo entry {started_from} and has no checkpoint yet; "
                          f"run the line again with zoo={started_from}")
    if cell.is_done():
        status = cell.status()
        log.info(
            "%s is done (%s agent steps, finished %s); skipping. overwrite=true retrains it.",
            cell.cell.key, status.get("global_step"), status.get("finished_at"),
        )
        return None
    MetricsCSV(cell.metrics).rows()  # a damaged file is named now, before envs and model are built
    return cell


# ---------------------------------------------------------------------------------------
# The run of a job's cells
# ---------------------------------------------------------------------------------------


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


class CellRun:
    """One cell's share of a run: its directory and config, its game window, log and counters."""

    def __init__(self, cfg: DictConfig, cell: CellDir):
        self.cfg, self.cell = cfg, cell
        self.games = GameWindow()
        self.start_update = 0
        self.global_step = 0
        self.log: TrainLog | None = None
        self.result: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        self._read = False

    @property
    def key(self) -> str:
        return self.cell.cell.key

    def saved_state(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The cell's checkpoint (read once), or None; a damaged one fails the cell."""
        if not self._read:
            self._read = True
            if self.cell.has_checkpoint():
                try:
                    self._state = checkpoint.load(self.cell.checkpoint, map_location=device)
                except CheckpointError as e:
                    self.cell.write_status(state=FAILED, failed_at=now(), error=str(e))
                    raise
        return self._state

    @property
    def env_seed(self) -> int:
        """The seed the cell's envs start from at this (re)start."""
        return env_seed(int(self.cfg.seed), self.start_update)


class TrainingRun:
    """Cells trained together in one process, all at the same update (one cell unless packed)."""

    def __init__(self, cells: list[CellRun], schedule: Schedule, locks: ExitStack):
        self.cells = cells
        self.cfg = cells[0].cfg
        self.schedule = schedule
        self.num_updates = schedule.num_updates
        self.start_update = 0
        self.snapshot_updates = set(schedule.snapshot_updates(int(self.cfg.snapshots)))
        self._saved: dict[str, Any] = {}
        self._stack = ExitStack()
        self._stack.push(locks)  # the run holds its cells' locks until it ends
        self._preemption = Preemption()
        self._log_files: list[logging.Handler] = []

    @classmethod
    @contextmanager
    def open(cls, cfg: DictConfig) -> Iterator[list[TrainingRun]]:
        """The runs of the cells `cfg` names that are not done yet, grouped by the update they
        resume at (first the furthest). A lone cell raises ConfigError (bad or changed
        config), CellBusy (another process trains it), CellDamaged or CheckpointError before
        anything is trained; a packed job trains the cells it can, then raises CellsRefused
        naming the others."""
        check_train_config(cfg)  # before anything is written, the lock files included
        schedule = Schedule.of(cfg)
        runs: list[TrainingRun] = []
        configs = cell_configs(cfg)
        refused: dict[str, Exception] = {}
        with ExitStack() as held:
            todo: dict[tuple[int, bool], list[tuple[CellRun, ExitStack]]] = {}
            for one in configs:
                cell = cell_from_config(one)
                lock = ExitStack()
                held.enter_context(lock)
                try:
                    lock.enter_context(cell.lock("train"))
                    if one.get("zoo"):  # train a zoo entry further: the cell starts at its update
                        continue_training(one, cell, schedule)
                    if open_training_cell(one, cell) is None:
                        lock.close()  # done: nothing to hold
                        continue
                    cell_run = CellRun(one, cell)
                    state = cell_run.saved_state()
                except Refusal as e:  # its directory's state: in a packed job, that cell alone
                    if len(configs) == 1:
                        raise
                    # one refused cell of a packed job does not stop its partners
                    lock.close()
                    refused[cell.cell.key] = e
                    log.error("%s: refused (%s: %s); its partners train", cell.cell.key, type(e).__name__, e)
                    continue
                # one Adam schedule per run: cells at one update, all with optimizer state or none
                start = (0, False) if state is None else (int(state["update"]), "optimizer" not in state)
                todo.setdefault(start, []).append((cell_run, lock))
            for _, group in sorted(todo.items(), reverse=True):
                locks = ExitStack()
                for _, lock in group:
                    locks.push(lock.pop_all())
                runs.append(cls([c for c, _ in group], schedule, locks))
        try:
            yield runs
        finally:
            for run in runs:
                run._stack.close()
        if refused:
            raise CellsRefused(refused, len(configs))

    # Context: signals are caught and envs closed for the whole run; the final states are written on the way out

    def __enter__(self) -> TrainingRun:
        self._stack.enter_context(self._preemption)
        self._log_to_every_cell()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        try:
            for c in self.cells:
                if kind is None:
                    self._finish(c)
                elif not issubclass(kind, SystemExit):  # SystemExit: the preemption path wrote its state
                    # Ctrl-C, or submitit refusing the requeue after our checkpoint (max_num_timeout
                    # reached): the cell is resumable, not broken.
                    try:
                        interrupted = issubclass(kind, KeyboardInterrupt) or c.cell.state == INTERRUPTED
                        c.cell.write_status(state=INTERRUPTED if interrupted else FAILED, ended_at=now(),
                                            error=f"{kind.__name__}: {error}")
                    except (CellWriteError, CellDamaged):
                        pass  # a full disk refuses this write too: the error itself still reaches the user
        finally:
            for c in self.cells:
                if c.log is not None:
                    c.log.close(exit_code=0 if kind is None else 1)
                    c.log = None
            for handler in self._log_files:
                logging.getLogger().removeHandler(handler)
                handler.close()
            self._stack.close()

    def _log_to_every_cell(self) -> None:
        """A packed job's log goes to each of its cells' train.log; Hydra writes its first cell's."""
        root = logging.getLogger()
        files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        if not files:
            return
        written = {Path(h.baseFilename).resolve() for h in files}
        for c in self.cells:
            path = c.cell.train_log
            if path.resolve() not in written:
                handler = logging.FileHandler(path)
                handler.setFormatter(files[0].formatter)
                handler.setLevel(files[0].level)
                root.addHandler(handler)
                self._log_files.append(handler)
        if len(self.cells) > 1:
            log.info("packed job: %s trained together", ", ".join(c.key for c in self.cells))

    def closing(self, resource: Any) -> Any:
        """`resource` (envs), closed when the run ends, however it ends."""
        self._stack.callback(resource.close)
        return resource

    @property
    def seeds(self) -> list[int]:
        return [int(c.cfg.seed) for c in self.cells]

    @property
    def results(self) -> dict[str, dict[str, Any] | None]:
        return {c.key: c.result for c in self.cells}

    # Resume

    def resume(self, agents: SeedPack, optimizer: torch.optim.Optimizer, device: torch.device, **facts: Any) -> None:
        """Load the cells' checkpoints into `agents` and `optimizer` if they have them, and
        start each cell's status and log. `facts` (model_name, game, num_actions) go into
        every checkpoint, so a trained cell can be opened without its config."""
        self._saved = {"agents": agents, "optimizer": optimizer, "facts": facts}
        s = self.schedule
        if s.agent_steps != int(self.cfg.total_timesteps):  # said here: only cells that train hear it
            log.info("total_timesteps=%s is %d whole rollouts of %d agent steps (num_envs x ppo.num_steps): "
                     "%d updates = %d agent steps, as Baselines' ppo2 counts them", self.cfg.total_timesteps,
                     s.num_updates, s.batch_size, s.num_updates, s.agent_steps)
        states = [c.saved_state(device) for c in self.cells]
        # a checkpoint of weights alone: a cell started from a zoo entry (fls.zoo.further)
        weights_only = [state is not None and "optimizer" not in state for state in states]
        assert len(set(weights_only)) == 1, "open() groups cells by (update, weights only)"
        if states[0] is not None:
            for i, (c, state) in enumerate(zip(self.cells, states)):
                agents.load_state_dict(i, state["model"])
                c.start_update, c.global_step = state["update"], state["global_step"]
                c.games.count = state["games"]
                c.games.scores.extend(state["game_scores"])
                c.games.frames.extend(state["game_frames"])
                if weights_only[i]:  # no sampling stream to go on with: it starts as a new cell's does
                    agents.generators[i].manual_seed(c.env_seed)
                elif not restore_generator(agents.generators[i], checkpoint.policy_rng_state(state["rng"], device), c.env_seed):
                    log.warning("%s: its checkpoint's sampling stream was saved on another kind of device than %s; "
                                "it restarts from seed %d (the run goes on, not as it would have uninterrupted)",
                                c.key, device.type, c.env_seed)
                log.info("%s: resuming at update %d/%d (agent step %d)", c.key, c.start_update,
                         self.num_updates, c.global_step)
            if weights_only[0]:
                log.warning("%s: the checkpoint holds a zoo entry's weights alone: Adam and the sampling stream "
                            "start afresh at update %d", ", ".join(c.key for c in self.cells), self.cells[0].start_update)
            else:
                agents.load_optimizer_state_dicts(optimizer, [state["optimizer"] for state in states])
                checkpoint.set_rng_states(states[0]["rng"])
            self.start_update = self.cells[0].start_update
        for i, c in enumerate(self.cells):
            self._resume_snapshots(i)
        for i, c in enumerate(self.cells):
            c._state = None  # loaded: not kept in memory
            status = c.cell.status()
            c.log = TrainLog(c.cfg, c.cell, OmegaConf.to_container(c.cfg, resolve=True),
                             start_update=c.start_update, start_step=c.global_step,
                             total_steps=self.schedule.agent_steps, wandb_id=status.get("wandb_run_id"),
                             position=i)
            c.cell.write_status(
                # env i of a (re)start plays on env_seed + i; evaluation keeps clear of these
                env_reset_seeds=[*status.get("env_reset_seeds", []), c.env_seed],
                num_envs=int(c.cfg.num_envs),
                state=RUNNING, started_at=now(), update=c.start_update, num_updates=self.num_updates,
                # what is on disk: a kill after a checkpoint and before its status write left this behind
                checkpoint_update=c.start_update if c.cell.has_checkpoint() else None,
                global_step=c.global_step, total_timesteps=int(c.cfg.total_timesteps),
                wandb_run_id=c.log.wandb_id, error=None, packed_with=[k.key for k in self.cells if k is not c] or None,
                **job_info(),
            )

    @property
    def global_step(self) -> int:
        """Agent steps of each cell so far (the cells of a run are at the same update)."""
        return self.cells[0].global_step

    # The updates

    def updates(self) -> Iterator[int]:
        """Update indices from the one after the checkpoint to the last (1-based)."""
        return iter(range(self.start_update + 1, self.num_updates + 1))

    def end_update(self, update: int, rows: list[dict[str, Any]]) -> None:
        """Record the update of each cell (rows in the order of `cells`); checkpoint on the
        cadence, at the end, or when a signal came (then stop here: the process exits so that
        the job is requeued)."""
        for i, (c, row) in enumerate(zip(self.cells, rows, strict=True)):
            c.global_step = int(row["global_step"])
            assert c.log is not None, "resume() starts the log"
            c.log.write(row)
            if update in self.snapshot_updates:  # before the checkpoint: a checkpoint at u implies its snapshot
                self._snapshot(i, update)
        stop = self._preemption.requested
        if update % int(self.cfg.checkpoint_every) == 0 or update == self.num_updates or stop:
            for i in range(len(self.cells)):
                self._save(i, update)
        if stop:
            for c in self.cells:
                c.cell.write_status(state=INTERRUPTED, interrupted_at=now(), signal=self._preemption.signum)
                log.warning("%s: checkpointed at update %d; exiting for requeue", c.key, update)
                assert c.log is not None
                c.log.close(exit_code=1)
                c.log = None
            self._preemption.exit()

    def _save(self, i: int, update: int) -> None:
        c, agents, optimizer = self.cells[i], self._saved["agents"], self._saved["optimizer"]
        checkpoint.save(
            c.cell.checkpoint, model=agents.state_dict(i), optimizer=agents.optimizer_state_dict(optimizer, i),
            policy_rng=agents.generators[i].get_state(),
            update=update, global_step=c.global_step, games=c.games.count,
            game_scores=list(c.games.scores), game_frames=list(c.games.frames), **self._saved["facts"],
        )
        c.cell.write_status(update=update, global_step=c.global_step, checkpoint_update=update, updated_at=now())

    def _snapshot(self, i: int, update: int) -> None:
        c = self.cells[i]
        atomic_write_bytes(c.cell.snapshot(update), checkpoint.encode_snapshot(
            self._saved["agents"].state_dict(i), update=update, global_step=c.global_step, **self._saved["facts"]))

    def _resume_snapshots(self, i: int) -> None:
        """The cell's snapshots at its (re)start: those past the update it starts from belong to
        training that was lost with the kill and go; the one of that update is written if it is
        due and missing (update 0: the weights as initialised)."""
        c = self.cells[i]
        if c.cell.snapshots_dir.is_dir():
            remove_temporaries(c.cell.snapshots_dir)
        for update, path in c.cell.snapshots().items():
            if update > c.start_update:
                durable_step("remove", path)
                path.unlink()
        if c.start_update in self.snapshot_updates and not c.cell.snapshot(c.start_update).exists():
            self._snapshot(i, c.start_update)
        missed = sorted(u for u in self.snapshot_updates if u < c.start_update and not c.cell.snapshot(u).exists())
        if missed:
            log.warning("%s: no snapshot of update(s) %s: the run had passed them when snapshots=%s was asked for",
                        c.key, ", ".join(map(str, missed)), self.cfg.snapshots)

    def _finish(self, c: CellRun) -> None:
        eprewmean = c.games.mean_score
        c.cell.write_status(state=DONE, finished_at=now(), global_step=c.global_step, eprewmean=eprewmean)
        log.info("%s: done, %d agent steps, eprewmean %.2f", c.key, c.global_step, eprewmean)
        c.result = {"eprewmean": eprewmean, "global_step": c.global_step}
