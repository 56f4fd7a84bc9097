"""The one way into a trained cell: its model from the checkpoint, on a device, in eval mode.

Evaluation, saliency videos and the Atari-HEAD scoring all open cells here; acting is the
model's own `act` (fls.models.ActorCritic). A checkpoint carries the model's name, game
and action count, so a cell opens without its config.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from fls import checkpoint
from fls.config import resolve_device
from fls.models import ActorCritic, build_model
from fls.rundir import CellDir

log = logging.getLogger(__name__)


@dataclass
class TrainedCell:
    cell: CellDir
    model: ActorCritic
    device: torch.device
    update: int
    global_step: int
    game: str


def load_model(cell: CellDir, device: torch.device) -> TrainedCell:
    """The cell's latest checkpoint as a model in eval mode (raises CheckpointError)."""
    state = checkpoint.load(cell.checkpoint, map_location=device)
    model = build_model(state["model_name"], state["num_actions"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedCell(cell, model, device, int(state["update"]), int(state["global_step"]), str(state["game"]))


def load_snapshot(cell: CellDir, update: int, device: torch.device) -> TrainedCell:
    """The cell's snapshot after `update` (snapshots=<n>) as a model in eval mode, its fp16
    weights back in fp32 (raises CheckpointError)."""
    state = checkpoint.load_snapshot(cell.snapshot(update), map_location=device)
    model = build_model(state["model_name"], state["num_actions"]).to(device)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()})
    model.eval()
    return TrainedCell(cell, model, device, int(state["update"]), int(state["global_step"]), str(state["game"]))


def open_trained_cell(cfg: DictConfig, cell: CellDir) -> TrainedCell | None:
    """The trained cell `cfg` names, or None (having said why) when there is nothing to use:
    no checkpoint yet, or training unfinished without eval.allow_unfinished."""
    if not cell.has_checkpoint():
        # Not logged: the log file would create the directory of a cell that does not exist.
        print(f"{cell.cell.key}: no checkpoint (not trained yet); skipping", file=sys.stderr)
        return None
    if not cell.is_done() and not cfg.eval.allow_unfinished:
        log.warning("%s: training has not finished (state %s); skipping. eval.allow_unfinished=true "
                    "uses its latest checkpoint", cell.cell.key, cell.state)
        return None
    return load_model(cell, resolve_device(cfg.device))

