"""The one way into a trained cell: its model from the checkpoint, on a device, in eval mode.

Evaluation, saliency videos and the Atari-HEAD scoring all open cells here; acting is the
model's own `act` (fls.models.ActorCritic). A checkpoint carries the model's name, game
and action count, so a cell opens without its config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from fls import checkpoint
from fls.config import use_device
from fls.models import ActorCritic, build_model
from fls.errors import NotTrained
from fls.rundir import CellDir, RunLayout


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


def open_trained_cell(cfg: DictConfig, cell: CellDir) -> TrainedCell:
    """The trained cell `cfg` names. NotTrained, naming the cell's path, when there is nothing
    to use: no checkpoint, or training unfinished without eval.allow_unfinished."""
    if not cell.has_checkpoint():
        raise NotTrained(f"{cell.path}: no checkpoint, nothing to use ({_why_missing(cell)})")
    if not cell.is_done() and not cfg.eval.allow_unfinished:
        raise NotTrained(f"{cell.path}: training has not finished (state {cell.state}); "
                         "eval.allow_unfinished=true uses its latest checkpoint")
    return load_model(cell, use_device(cfg))


def _why_missing(cell: CellDir) -> str:
    """What a missing checkpoint most likely means: a cell not trained yet, or a study or run
    root that names another place (a misspelt study= names a study with no cells at all)."""
    layout = RunLayout(cell.root)
    study = cell.cell.study
    if not layout.root.is_dir():
        return f"run_root={cell.root} does not exist"
    # Hydra has made this cell's own (empty) folder by now: look for cells that were started
    if not any(other.config.exists() for other in layout.cells(study)):
        known = [s for s in layout.studies() if any(c.config.exists() for c in layout.cells(s))]
        return f"study={study} has no trained cells under {cell.root}; studies there: {', '.join(known) or 'none'}"
    return "not trained yet"

