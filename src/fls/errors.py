"""Every refusal: an expected failure, its one line, and the exit status it ends with.

A refusal is bad input or a file that cannot be used, never a bug: its message names what was
wrong and what is accepted, or what to do. fls.cli is the one place that turns it into
`error: <message>` on stderr and the class's exit status; a bug stays a traceback. Their own
module, importing nothing, so that every layer can raise them:

    Refusal              1  the family
      ConfigError        2  a config value or command line that cannot run
      SweepError         2  bad sweep input, refused before any cell is launched
      CellBusy           1  another process holds the cell for the same work
      CellDamaged        1  a file of a cell (or of a zoo entry) that cannot be read
      CellWriteError     1  a write the file system refused (full, read-only); the old file intact
      CheckpointError    1  a checkpoint that cannot be used; the file left as it is
      NotTrained         1  a cell with nothing to evaluate or score (a sweep counts it skipped)
      AtariHeadError     1  bad or missing Atari-HEAD data
      ServiceError       1  SLURM or W&B refused a request or did not answer
      CellsRefused       1  cells of a packed job refused while the others ran
      CellsFailed        1  cells of a sweep that failed after all of them ran
"""


class Refusal(Exception):
    """An expected failure: the message is the one line the user sees."""

    exit_status = 1


class ConfigError(Refusal, ValueError):
    """A config value that cannot run; the message names the key and what is accepted."""

    exit_status = 2


class SweepError(Refusal, ValueError):
    """Bad sweep input (a range, a preflight check): nothing is launched."""

    exit_status = 2


class CellBusy(Refusal, RuntimeError):
    """Another process holds the cell for the same work (training, evaluation, scoring)."""


class CellDamaged(Refusal, ValueError):
    """A file of a cell that cannot be read (not JSON, a row that is not a metrics row, ...):
    the message names the file and what to do."""


class CellWriteError(Refusal, RuntimeError):
    """A write of a cell's file that the file system refused (a full disk, a read-only one,
    a quota): the message names the file and the reason. What was there before is intact."""


class CheckpointError(Refusal, RuntimeError):
    """A checkpoint that cannot be used; the file is left as it is."""


class NotTrained(Refusal, RuntimeError):
    """A cell that evaluation, videos or scoring cannot use: no checkpoint (never trained, or
    study= / run_root= name another place) or training unfinished. One command fails with it;
    in a sweep the cell is counted as skipped instead (fls.cli.app), since a study's later
    stage may run before all of its cells are trained."""


class AtariHeadError(Refusal, ValueError):
    """Bad or missing Atari-HEAD data; the message names the file (and line)."""


class ServiceError(Refusal, RuntimeError):
    """A service outside refused a request or did not answer (a SLURM command, W&B): the
    message names the request and the answer."""


class CellsRefused(Refusal, RuntimeError):
    """Cells of a packed job (pack=seeds) that could not run, raised after the job's other
    cells have: `cells` names them, so a sweep counts failed cells, not jobs."""

    def __init__(self, refused: dict[str, Exception], total: int):
        self.cells = list(refused)
        reasons = "; ".join(f"{key}: {error}" for key, error in refused.items())
        super().__init__(f"{len(refused)} of {total} cells of this packed job were refused (the others ran): {reasons}")


class Skipped:
    """What a sweep's cell that had nothing to use returns instead of failing (fls.cli.app):
    the sweeper counts these and says why."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"Skipped({self.reason!r})"


class CellsFailed(Refusal):
    """Cells of a sweep that failed (raised, or their job died) after every cell ran."""
