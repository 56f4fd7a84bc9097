"""Interval estimates: rliable's stratified bootstrap (Agarwal et al., NeurIPS 2021), seeded.

Every confidence interval of the analysis comes from `estimate`, a thin wrapper over
`rliable.library.get_interval_estimates` (percentile method, 95% by default):

- scores are arrays (runs x tasks x ...): runs (seeds, or trials, or frames) are resampled
  with replacement within each task (game) independently, and, with `task_bootstrap`,
  the tasks too;
- `Bootstrap(reps, seed)` makes it reproducible: rliable draws from numpy's global
  generator, so each estimate seeds it from (seed, the estimate's key) and restores it
  afterwards; the same study, reps and seed give the same intervals, whichever other
  intervals were computed before;
- fewer than 2 runs give no interval (`MIN_RUNS`): a bootstrap over one value has zero width
  and means nothing, so callers say "1 seed" instead.

The statistics are rliable's (`iqm`), or equal to rliable's and vectorised where rliable's
runs a Python loop per resample (`probability_of_improvement`, `fraction_above`); the tests
hold them equal on random arrays with ties.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

DEFAULT_REPS = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
MIN_RUNS = 2


@dataclass(frozen=True)
class Bootstrap:
    """How many resamples, from which seed, for what coverage (`--reps`, `--bootstrap-seed`)."""

    reps: int = DEFAULT_REPS
    seed: int = DEFAULT_SEED
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        if self.reps < 100:
            raise ValueError(f"--reps {self.reps}: expected at least 100 bootstrap resamples")
        if self.seed < 0:
            raise ValueError(f"--bootstrap-seed {self.seed}: expected an integer >= 0")

    def seed_for(self, key: str) -> int:
        return (self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**32


def _pandas3_shim() -> None:
    """arch 7.2 (the last release rliable 1.2 accepts) calls pandas' private
    `deprecate_kwarg(old, new)`; pandas 3 added a leading warning class. Accept the old form
    (arch 8 vendors its own decorator; only the call with a name first is redirected)."""
    from pandas.util import _decorators

    original = _decorators.deprecate_kwarg
    params = list(inspect.signature(original).parameters)
    if getattr(original, "_fls_shim", False) or not params or params[0] != "klass":
        return

    def deprecate_kwarg(*args, **kwargs):
        if args and isinstance(args[0], str):
            return original(FutureWarning, *args, **kwargs)
        return original(*args, **kwargs)

    deprecate_kwarg._fls_shim = True
    _decorators.deprecate_kwarg = deprecate_kwarg


@functools.cache
def rliable():
    """(rliable.library, rliable.metrics, rliable.plot_utils), imported on first use (statsmodels
    makes it a few seconds), with matplotlib on its file backend."""
    import matplotlib

    matplotlib.use("Agg")
    _pandas3_shim()
    from rliable import library, metrics, plot_utils

    return library, metrics, plot_utils


def estimate(scores: Mapping[str, np.ndarray | tuple[np.ndarray, ...]], func: Callable[..., np.ndarray],
             bootstrap: Bootstrap, task_bootstrap: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{key: (point estimate, interval (2 x ...): lower row, upper row)} by rliable's stratified
    bootstrap; a tuple of arrays is resampled independently (rliable's
    StratifiedIndependentBootstrap, for probability of improvement). Reproducible: see the module."""
    library, _, _ = rliable()
    out = {}
    state = np.random.get_state()
    try:
        for key, value in scores.items():
            np.random.seed(bootstrap.seed_for(key))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nan-means of resamples with no defined value
                point, interval = library.get_interval_estimates(
                    {key: value}, func, reps=bootstrap.reps, confidence_interval_size=bootstrap.confidence,
                    task_bootstrap=task_bootstrap)
            out[key] = (np.asarray(point[key], dtype="float64"), np.asarray(interval[key], dtype="float64"))
    finally:
        np.random.set_state(state)
    return out


# Statistics


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: the mean of what is left after cutting int(n / 4) values off each
    end of the sorted n (scipy's trim_mean(0.25), which rliable's `aggregate_iqm` calls on
    everything at once, axis None); numpy alone, 59x faster than scipy's on the small arrays
    resampled here (its argument checks are most of its time)."""
    arr = np.asarray(scores, dtype="float64")
    if axis is None:
        arr, axis = arr.reshape(-1), 0
    n = arr.shape[axis]
    cut = int(0.25 * n)
    return np.sort(arr, axis=axis).take(np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks, ties counted half: rliable's `probability_of_improvement`
    (the Mann-Whitney U of each task over num_runs_x x num_runs_y), on every pair at once
    instead of one scipy call per task and resample (86x faster at 5 x 6 runs, 2,000 resamples)."""
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(greater + 0.5 * ties))


def fraction_above(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The fraction of all runs x tasks scoring above each tau: rliable's score distribution
    (`library.score_distributions`), vectorised over tau."""
    flat = np.asarray(scores, dtype="float64").reshape(-1)
    return (flat[:, None] > np.asarray(taus)[None, :]).mean(axis=0)


# Text


def fmt_interval(lower: float, upper: float, digits: int) -> str:
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return ""
    return f"[{lower:,.{digits}f}, {upper:,.{digits}f}]"


def digits_for(x: float) -> int:
    """As render.fmt_number: about three significant digits, scores from 0.3 to 50,000."""
    if x is None or not math.isfinite(x):
        return 2
    return 0 if abs(x) >= 100 else 1 if abs(x) >= 1 else 2


def describe(bootstrap: Bootstrap) -> str:
    """How an interval was drawn, for a table's notes: `95% CIs: rliable's ...`."""
    return (f"{bootstrap.confidence:.0%} CIs: rliable's stratified bootstrap, percentile method, "
            f"{bootstrap.reps:,} resamples, seed {bootstrap.seed} (--reps, --bootstrap-seed)")
