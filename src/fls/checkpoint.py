"""Checkpoints: everything a run needs to continue at the same update after a kill.

A checkpoint holds the model, the optimizer, the update index and agent step, the
episode-statistics window and every RNG state. It is written to a temporary file and
renamed over the old one, so a kill at any moment leaves the previous checkpoint intact.

It holds only what `torch.load(weights_only=True)` reads (tensors, numbers, strings, and
lists, tuples and dicts of them; numpy's RNG state as a tensor), and is read that way: a
crafted file (a pickle that calls a function when it is read) is refused without running
anything. Format 1, written before, kept numpy's state as an ndarray: its reader allows
numpy's array and dtype and nothing else.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fls.durable import atomic_write_bytes
from fls.errors import CheckpointError

FORMAT = 2
FORMATS = (1, 2)


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    state = states["numpy"]
    if isinstance(state, dict):
        np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                             state["cached_gaussian"]))
    else:  # format 1: numpy's own tuple
        np.random.set_state(state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def policy_rng_state(states: dict[str, Any], device: torch.device) -> torch.Tensor:
    """The state of the generator the cell's policy samples from (fls.seed_pack). Checkpoints
    written before packed seeds hold only torch's global states, which it sampled from then."""
    if "policy" in states:
        return states["policy"]
    if device.type == "cuda" and "cuda" in states:
        return states["cuda"][device.index or 0]
    return states["torch"]


def encode(*, policy_rng: torch.Tensor | None = None, **state: Any) -> bytes:
    """The bytes of a checkpoint of `state` and this process's RNG states. `policy_rng`: the
    state of the cell's own sampling generator (fls.seed_pack)."""
    rng = rng_states()
    if policy_rng is not None:
        rng["policy"] = policy_rng
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "rng": rng, **state}, buffer)
    return buffer.getvalue()


def save(path: Path, **state: Any) -> None:
    atomic_write_bytes(path, encode(**state))


# Format 1's numpy RNG state: an ndarray of uint32 (numpy's array rebuilder, ndarray and dtype)
_NUMPY_ARRAYS = {f"{f.__module__}.{f.__qualname__}": f for f in
                 (np.ndarray, np.dtype, np.dtypes.UInt32DType, np._core.multiarray._reconstruct)}


def load_plain(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load(weights_only=True) of `path`, or CheckpointError in one line: a file that
    is not a torch file, or one that would call a function (a crafted pickle), which is
    named and not run. Format 1's numpy arrays are allowed, and nothing else."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a damaged zip or pickle
        error = e
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        unsafe = []
    if unsafe and set(unsafe) <= set(_NUMPY_ARRAYS):
        try:
            with torch.serialization.safe_globals(list(_NUMPY_ARRAYS.values())):
                return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            error = e
    elif unsafe:
        raise CheckpointError(f"{path}: refused, not read: it would call {', '.join(sorted(unsafe))} when loaded "
                              "(a checkpoint holds tensors and plain values only); it was left untouched: "
                              "remove it if you did not make it") from None
    first = (str(error).strip().splitlines() or [""])[0]
    raise CheckpointError(f"{path} is unreadable ({type(error).__name__}: {first}); it was left untouched: move it "
                          "away to restart the cell from scratch, or pass overwrite=true to discard the cell") from None


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, or raise CheckpointError naming the file and what to do."""
    state = load_plain(path, map_location)
    if not isinstance(state, dict) or state.get("format") not in FORMATS:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer (format {FORMAT})")
    return state
