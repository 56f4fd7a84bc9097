"""The entry points' command line, checked before Hydra runs it.

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

import re
import sys
from collections.abc import Callable
from typing import Any

from fls.config import CONF_DIR, group_options
from fls.errors import ConfigError

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


def check_overrides(config_name: str, args: list[str], check: Callable[[Any], None] | None = None) -> None:
    """Raise ConfigError for the first bad override of `args` (Hydra's argv)."""
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
            raise ConfigError(f"{o.input_line}: a sweep needs -m (python src/{config_name}.py -m {o.input_line})")
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
                              f"python src/{config_name}.py --cfg job; add a new one with +{line})") from None
        raise ConfigError(message) from None
    if check is not None and not multirun:
        check(cfg)


def check_command_line(config_name: str, check: Callable[[Any], None] | None = None) -> None:
    """check_overrides on sys.argv: one line and exit status 2 when it fails."""
    args = sys.argv[1:]
    if any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in args):
        return  # Hydra's own flags: --cfg job, --help, --info, -cn, ...
    try:
        check_overrides(config_name, args, check)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
