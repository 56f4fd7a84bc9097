"""The errors every entry point turns into one line: a config value that cannot run (exit
status 2), and the cells of a packed job that were refused while the others ran. Their own
module, so that the config checks and the env factory (which checks its own settings) can
both raise them without importing each other."""


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and what is accepted."""


class CellsRefused(RuntimeError):
    """Cells of a packed job (pack=seeds) that could not run, raised after the job's other
    cells have: `cells` names them, so a sweep counts failed cells, not jobs."""

    def __init__(self, refused: dict[str, Exception], total: int):
        self.cells = list(refused)
        reasons = "; ".join(f"{key}: {error}" for key, error in refused.items())
        super().__init__(f"{len(refused)} of {total} cells of this packed job were refused (the others ran): {reasons}")
