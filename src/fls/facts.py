"""Configuration facts: the checkout and its conf/, a config value read as a number, what
changed between two configs, the time and the commit a record carries.

The ground floor of fls: it imports nothing of ours but the refusal family (fls.errors, which
imports nothing), so the checks (fls.config), the layout (fls.rundir), the games (fls.games),
the studies and the benchmarks ask it instead of working these out again.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fls.errors import ConfigError

# The checkout this code runs from: its conf/, data/, zoo/ and entry scripts, whatever the
# working directory
REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
# The entry scripts, one per app; app <name> is src/<name>.py with conf/<name>.yaml (and its
# hydra.job.name). Training's sweeps make a study's grid.
TRAIN_APP = "train"
APPS = (TRAIN_APP, "evaluate", "saliency")


def script(app: str) -> Path:
    """The entry script of `app` (src/<app>.py), absolute."""
    if app not in APPS:
        raise ValueError(f"{app}: not an app; expected one of {', '.join(APPS)}")
    return REPO / "src" / f"{app}.py"


def group_options(group: str) -> list[str]:
    """The names of a config group's options (conf/<group>/*.yaml), sorted."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_group(group: str, name: str, key: str | None = None) -> Any:
    """One option of a config group outside a Hydra composition (conf/<group>/<name>.yaml),
    e.g. load_group("eval", "paper"); a ConfigError names `key` (default: the group) and the
    accepted names."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{key or group}={name}: no such {group}; expected one of {', '.join(group_options(group))}")
    return OmegaConf.load(path)


def as_int(key: str, value: Any, *, hint: str = "") -> int:
    """`value` as an integer (1e3 and "7" too, 1.5 and true not), or a ConfigError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: expected an integer{hint}")
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}={value}: expected an integer{hint}") from None


def as_float(key: str, value: Any) -> float:
    """`value` as a finite number, or a ConfigError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value}: expected a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}={value}: expected a finite number")
    return number


def changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf where two nested dicts differ,
    in key order: what a refused resume or a recomputed evaluation names."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def now(seconds: float | None = None) -> str:
    """Local time as ISO 8601 with its UTC offset (now, or at epoch `seconds`): what every
    record (status.json, a lock, jobs.jsonl) says a thing happened at."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def source_commit() -> str | None:
    """The commit of the checkout this code runs from (None outside git); a run records it
    so its results can be traced to the code that made them."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
