"""Checkpoints: everything a run needs to continue at the same update after a kill.

A checkpoint holds the model, the optimizer, the update index and agent step, the
episode-statistics window and every RNG state. It is written to a temporary file and
renamed over the old one, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fls.rundir import atomic_write_bytes

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the file is left as it is."""


def rng_states() -> dict[str, Any]:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
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


def save(path: Path, *, policy_rng: torch.Tensor | None = None, **state: Any) -> None:
    """`policy_rng`: the state of the cell's own sampling generator (fls.seed_pack)."""
    rng = rng_states()
    if policy_rng is not None:
        rng["policy"] = policy_rng
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "rng": rng, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, or raise CheckpointError naming the file and what to do."""
    path = Path(path)
    try:
        # Our own files hold numpy RNG state and plain containers besides tensors.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"{path} is unreadable ({type(e).__name__}: {e}); it was left untouched: move it "
            "away to restart the cell from scratch, or pass overwrite=true to discard the cell"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer (format {FORMAT})")
    return state
