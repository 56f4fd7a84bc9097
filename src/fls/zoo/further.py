"""A zoo entry trained further: `src/train.py zoo=<entry>` (conf/experiment/zoo.yaml).

On its first use the cell becomes a resumable cell at the entry's update, with the entry's
weights; it then trains to the new total_timesteps as if it were resuming. An entry keeps no
optimizer: Adam and the sampling stream start afresh (fls.training_cell), and the learning
rate goes on from where the new total puts it (logged beside the entry's last). A cell that
started from this entry already resumes as any cell, and is packed again when it has trained
enough (fls.zoo.pack).
"""

from __future__ import annotations

import csv
import json
import logging
from typing import Any

from omegaconf import OmegaConf

from fls.config import TRAINING_KEYS, training_identity
from fls.errors import ConfigError
from fls.facts import changes
from fls.rundir import GAMES_ENDED, INTERRUPTED, LEARNING_RATE, CellDir, ZooEntry
from fls.schedule import Schedule
from fls.zoo.entry import check_same_cell, find, model, read_entry, sha1, write_cell

log = logging.getLogger(__name__)


def continue_training(cfg: Any, cell: CellDir, schedule: Schedule) -> None:
    """Make `cell` a resumable cell at zoo entry `cfg.zoo`'s update, on its first use. The
    caller holds the cell's training lock."""
    entry, weights, net = check_continuation(cfg, cell, schedule)
    if net is None:  # the cell started from this entry before: it resumes
        return
    provenance = json.loads(entry.provenance.read_text())
    status = json.loads(entry.status_file.read_text())
    with entry.metrics.open(newline="") as f:
        last = (list(csv.DictReader(f)) or [{}])[-1]
    update = int(weights["update"])
    if schedule.anneal and LEARNING_RATE in last:
        log.warning("zoo=%s: update %d runs at learning rate %.3g, annealed over %d updates; the entry's last ran at "
                    "%s (total_timesteps=%s gives the entry's own schedule)", cfg.zoo, update + 1,
                    schedule.lr(update + 1), schedule.num_updates, f"{float(last[LEARNING_RATE]):.3g}",
                    status.get("total_timesteps"))
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    write_cell(
        cell, entry, weights, net, OmegaConf.to_yaml(config),
        {"games": int(float(last.get(GAMES_ENDED) or 0)), "game_scores": [], "game_frames": []},
        state=INTERRUPTED, update=update, global_step=int(weights["global_step"]), checkpoint_update=update,
        env_reset_seeds=status.get("env_reset_seeds", []),
        # the entry's own history travels into the entry this cell is packed into
        continued_from={"entry": str(cfg.zoo), "weights_sha1": sha1(entry.weights), "update": update,
                        "global_step": int(weights["global_step"]), "commit": provenance.get("commit"),
                        "total_timesteps": status.get("total_timesteps"),
                        "continued_from": provenance.get("continued_from")},
    )


def check_continuation(cfg: Any, cell: CellDir, schedule: Schedule) -> tuple[ZooEntry, dict[str, Any], Any]:
    """Every reason zoo entry `cfg.zoo` cannot train further in `cell`, as one ConfigError,
    reading only: (the entry, its weights file, the model with the weights in fp32), the model
    None when the cell has started from the entry already."""
    name = str(cfg.zoo)
    entry = find(name)
    config, weights = read_entry(entry)
    check_same_cell(name, config, cfg)
    differ = [f"{key}: {a} -> {b}" for key, a, b in
              changes(training_identity(config), training_identity(OmegaConf.masked_copy(cfg, list(TRAINING_KEYS))))
              if key != "total_timesteps"]  # the one setting that training further changes
    if differ:
        raise ConfigError(f"zoo={name}: the entry was trained with other settings ({'; '.join(differ[:4])}); "
                          "it trains further only with its own (conf/experiment/zoo.yaml)")
    if schedule.num_updates <= int(weights["update"]):
        raise ConfigError(f"zoo={name}: the entry has trained {weights['update']} updates ({weights['global_step']:,} "
                          f"agent steps); total_timesteps={cfg.total_timesteps} trains nothing more: ask for more")
    ours = (cell.status().get("continued_from") or {}).get("entry") == name
    if ours and cell.has_checkpoint():  # complete (write_cell): it resumes as any cell
        planned = cell.recorded_config().get("total_timesteps") if cell.config.exists() else None
        if planned is not None and int(planned) != int(cfg.total_timesteps):
            raise ConfigError(f"{cell.path} trains zoo entry {name} further to total_timesteps={planned}; to go "
                              f"beyond, pack it as an entry (python -m fls.zoo pack {cell.path} <entry>) and train "
                              "that further, or use another run_root=")
        return entry, weights, None
    if not ours and (cell.status_file.exists() or cell.has_checkpoint()):
        raise ConfigError(f"{cell.path} exists and did not start from zoo entry {name} (evaluating the entry installs "
                          "it there too); use another run_root= to train the entry further")
    return entry, weights, model(entry, weights)
