"""The entry points' command line: checked before Hydra runs it, and the one way a refusal
(fls.errors) reaches the user: `error: <its message>` on stderr and its exit status.

Every entry point goes through here: the Hydra apps (src/train.py, src/evaluate.py,
src/saliency.py) wrap their task in `app`, the other command lines (python -m analysis,
studies.study, studies.status, studies.dashboard, fls.zoo) their main in `command`, and the
sweeper says its SweepError and CellsFailed with `say`.

Hydra answers an unknown group option, an unknown key or a bad value in the run directory's
path with 7 to 100 lines (its composition error, a list of search paths, a traceback)
after it has made the run directory. Here the same command line is composed first with
Hydra's compose API and checked; a bad one gets one line naming the key and what it
accepts, exit status 2, and nothing is written:

    if __name__ == "__main__":
        check_command_line("train", check_train_config)
        main()

A sweep (-m) is composed once, with the first value of each swept key (the sweeper then
checks every cell before launching any); a single run is composed as it will run and given
to the entry's own check. Hydra's own flags (--cfg, --help, ...) bypass this.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fls.errors import ConfigError, NotTrained, Refusal, Skipped
from fls.facts import CONF_DIR, REPO, group_options, script
from fls.rundir import remove_if_empty

MULTIRUN_FLAGS = ("-m", "--multirun")
SEED_RANGE = re.compile(r"^\s*(\d+)\s*-\s*\d+\s*$")  # the fls sweeper's seed=0-4


def _values(override: Any) -> list[Any]:
    """The values a group override names (none for globs and ranges, which match options)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, RangeSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    if isinstance(value, (Glob, RangeSweep)):
        return []
    return [value]


def _first(override: Any) -> str | None:
    """`key=value` with a sweep replaced by its first value; None drops a glob."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, RangeSweep

    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep):
        value = value.list[0] if value.list else None
    elif isinstance(value, RangeSweep):
        value = value.start
    elif isinstance(value, Glob):
        return None
    if isinstance(value, str) and override.key_or_group == "seed" and SEED_RANGE.match(value):
        value = SEED_RANGE.match(value).group(1)
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        value = str(value).lower()
    return f"{key}={value}"


def _shown(app: str) -> str:
    """The entry script of `app` as a command line names it, from the checkout's root."""
    return str(script(app).relative_to(REPO))


def check_overrides(config_name: str, args: list[str], check: Callable[[Any], None] | None = None) -> Any:
    """The config `args` (Hydra's argv) compose to, checked by `check` (a sweep: composed
    with the first value of each swept key, and checked by the sweeper instead); ConfigError
    for the first bad override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    multirun = any(a in MULTIRUN_FLAGS for a in args)
    lines = [a for a in args if a not in MULTIRUN_FLAGS]
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as e:
        raise ConfigError(f"cannot read the command line: {str(e).splitlines()[0]}") from None

    composed: list[str] = []
    for o in overrides:
        if o.key_or_group.startswith("hydra") or o.is_delete():
            composed.append(o.input_line)
            continue
        group = o.key_or_group
        if (CONF_DIR / group).is_dir() and o.package is None:
            options = group_options(group)
            for value in _values(o):
                if value is not None and str(value) not in options:
                    raise ConfigError(f"{group}={value}: no such {group}; expected one of {', '.join(options)}")
        if not multirun and o.is_sweep_override():
            raise ConfigError(f"{o.input_line}: a sweep needs -m (python {_shown(config_name)} -m {o.input_line})")
        first = _first(o) if multirun else o.input_line
        if first is not None:
            composed.append(first)

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
            cfg = compose(config_name=config_name, overrides=composed)
    except (HydraException, OmegaConfBaseException) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = re.match(r"Could not override '([^']+)'", message)
        if missing:
            key = missing.group(1)
            line = next((a for a in lines if a.split("=", 1)[0] == key), key)
            raise ConfigError(f"{line}: no such key in {config_name}'s config (see its keys with "
                              f"python {_shown(config_name)} --cfg job; add a new one with +{line})") from None
        raise ConfigError(message) from None
    if check is not None and not multirun:
        check(cfg)
    return cfg


def check_command_line(config_name: str, check: Callable[[Any], None] | None = None) -> None:
    """check_overrides on sys.argv: one line and exit status 2 when it fails."""
    args = sys.argv[1:]
    if any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in args):
        return  # Hydra's own flags: --cfg job, --help, --info, -cn, ...
    try:
        check_overrides(config_name, args, check)
    except Refusal as e:
        raise SystemExit(say(e)) from None


# ---------------------------------------------------------------------------------------
# The refusal path
# ---------------------------------------------------------------------------------------


def say(error: Refusal) -> int:
    """A refusal's one line, on stderr; returns its exit status."""
    print(f"error: {error}", file=sys.stderr)
    return error.exit_status


def command(main: Callable[..., int]) -> Callable[..., int]:
    """A command line's `main(argv) -> exit status` whose refusals end in their one line and
    exit status."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except Refusal as error:
            return say(error)

    return run


def app(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Hydra app's task, `task(cfg)`, whose refusals end in their one line and exit status.
    In a sweep the refusal is raised instead, so this cell alone fails and the sweeper's
    summary names it while the other cells go on; a cell with nothing to use (NotTrained)
    is skipped there, not failed: the sweeper counts it and says why."""

    @functools.wraps(task)
    def run(cfg: Any) -> Any:
        try:
            return task(cfg)
        except Refusal as error:
            return _refuse(cfg, error)

    return run


def partner(work: Callable[[], Any], cells: int) -> Any:
    """`work()` for one cell of a job of `cells`: with partners (pack=seeds), a cell with
    nothing to use is Skipped and they go on; alone, its NotTrained is the job's refusal."""
    try:
        return work()
    except NotTrained as error:
        if cells == 1:
            raise
        # printed, not logged: a log line would create the partner's (empty) directory
        print(f"skipped: {error}", file=sys.stderr)
        return Skipped(str(error))


def _refuse(cfg: Any, error: Refusal) -> Skipped:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        # Hydra made the job's directory before the config could be checked: nothing written,
        # nothing left behind
        remove_if_empty(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.run_root)))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            if isinstance(error, NotTrained):
                print(f"skipped: {error}", file=sys.stderr)
                return Skipped(str(error))
            raise error
    raise SystemExit(say(error))
