"""Stop at a clean point when SLURM (or a user) asks.

SLURM sends SIGUSR2 before a time limit (submitit's `--signal`) and SIGTERM on
preemption or scancel; Ctrl-C sends SIGINT. The handler only records the signal: the
trainer finishes the update in progress, checkpoints, and then calls `exit()`, which
hands the signal to whoever handled it before us. Under submitit that is its requeue
handler, so the job is requeued and resumes from the checkpoint; elsewhere the process
exits with 128 + signal number, as a shell would report it.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class Preemption:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "Preemption":
        for signum in SIGNALS:
            self.previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the update
        if self.signum is None:
            log.warning("caught %s: checkpointing after this update", signal.Signals(signum).name)
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def exit(self) -> None:
        """After the checkpoint: let the previous handler act (requeue), else exit."""
        assert self.signum is not None
        signum = self.signum
        self.__exit__()
        previous: Callable[[int, FrameType | None], Any] | Any = self.previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)  # submitit: requeue, then sys.exit
        raise SystemExit(128 + signum)
