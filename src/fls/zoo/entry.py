"""A zoo entry read and checked, and installed as the cell that evaluation and scoring open.

`zoo=<entry>` makes src/evaluate.py and src/saliency.py open the cell
<run_root>/zoo/<game>/<model>/seed_<k>: `install` puts the entry there on first use (weights
back in fp32, as a checkpoint the one loader, fls.trained_cell, reads); each later use checks
that the installed checkpoint still holds the entry's weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fls import checkpoint
from fls.durable import atomic_write_bytes, atomic_write_text
from fls.errors import CheckpointError, ConfigError
from fls.models import build_model
from fls.rundir import ZOO_DIR, ZOO_STUDY, CellDir, RunLayout, ZooEntry

# What weights.pt holds (fls.zoo.pack writes it): this format tag, the model's state_dict in
# fp16, and the facts of a checkpoint that fls.trained_cell needs
FORMAT = "fls-zoo-1"
FACTS = ("model_name", "num_actions", "game", "update", "global_step")


def entries(zoo_dir: Path = ZOO_DIR) -> list[str]:
    return ZooEntry.names(zoo_dir)


def find(name: str, zoo_dir: Path = ZOO_DIR) -> ZooEntry:
    """The entry `name`, or a ConfigError naming the entries there are."""
    entry = ZooEntry(name, zoo_dir)
    if not entry.exists():
        raise ConfigError(f"zoo={name}: no such entry in {zoo_dir}; expected one of {', '.join(entries(zoo_dir)) or 'none'}")
    return entry


def read_entry(entry: ZooEntry) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, weights file contents) of an entry; ConfigError naming the damaged file, or
    the weights file that is not the one its provenance records."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(entry.config), resolve=True)
        assert isinstance(config, dict) and {"game", "model", "seed"} <= set(config)
        cell = (str(config["game"]["name"]), str(config["model"]["name"]), int(config["seed"]))
    except Exception as e:  # yaml errors, a missing file, keys missing
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{entry.config}: damaged or not a trained cell's config ({type(e).__name__}: {first})") from None
    try:
        weights = checkpoint.load_plain(entry.weights)
        assert isinstance(weights, dict) and weights.get("format") == FORMAT
        assert all(k in weights for k in (*FACTS, "state_dict"))
    except (CheckpointError, OSError, AssertionError) as e:
        why = str(e).replace(f"{entry.weights}", "").strip(" :") or "not the format of fls.zoo.pack"
        raise ConfigError(f"{entry.weights}: damaged or not a zoo weights file ({why})") from None
    try:
        recorded = json.loads(entry.provenance.read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and sha256(entry.weights) != recorded:
        raise ConfigError(f"{entry.weights}: not the weights zoo entry {entry.name} records (its SHA-256 differs from "
                          f"{entry.provenance.name}'s); restore it (git checkout {entry.path})")
    if (weights["game"], weights["model_name"]) != cell[:2]:
        raise ConfigError(f"{entry.weights}: weights of {weights['model_name']} on {weights['game']}, "
                          f"but {entry.config.name} says {cell[1]} on {cell[0]}")
    return config, weights


def model(entry: ZooEntry, weights: dict[str, Any]) -> torch.nn.Module:
    """The entry's model with its weights in fp32; weights that do not fit are a damaged entry."""
    net = build_model(weights["model_name"], int(weights["num_actions"]))
    try:
        net.load_state_dict({k: v.float() for k, v in weights["state_dict"].items()})
    except RuntimeError as e:
        raise ConfigError(f"{entry.weights}: does not fit a {weights['model_name']} ({str(e).splitlines()[0]})") from None
    return net


def sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _same_weights(state: dict[str, Any], weights: dict[str, Any]) -> bool:
    """Whether a checkpoint's model holds exactly the entry's weights (fp16, back in fp32)."""
    entry = {k: v.float() if v.is_floating_point() else v for k, v in weights["state_dict"].items()}
    net = state.get("model")
    return (isinstance(net, dict) and net.keys() == entry.keys()
            and all(isinstance(net[k], torch.Tensor) and net[k].dtype == v.dtype and torch.equal(net[k], v)
                    for k, v in entry.items()))


def install(name: str, run_root: Path | str, zoo_dir: Path = ZOO_DIR) -> CellDir:
    """The cell of zoo entry `name` under run_root, put there on first use. A cell there
    that holds another version of the entry is refused, not replaced."""
    entry = find(name, zoo_dir)
    config, weights = read_entry(entry)
    cell = RunLayout(run_root).cell(ZOO_STUDY, config["game"]["name"], config["model"]["name"], int(config["seed"]))
    digest = sha1(entry.weights)
    if cell.status_file.exists():
        if cell.status().get("zoo_weights_sha1") != digest:
            raise ConfigError(f"{cell.path} holds another version of zoo entry {name} (or a cell trained there); "
                              "remove it, or use another run_root=")
        if cell.has_checkpoint():
            if not _same_weights(checkpoint.load(cell.checkpoint), weights):
                raise ConfigError(f"{cell.checkpoint} is not zoo entry {name}'s weights (it changed since it was "
                                  f"installed); remove {cell.path} to install the entry again")
            return cell
    net = model(entry, weights)  # weights that do not fit are found before anything is written
    status = json.loads(entry.status_file.read_text())
    write_cell(cell, entry, weights, net, entry.config.read_text(), {"zoo": name},
               **status, zoo=name, zoo_weights_sha1=digest)
    return cell


def write_cell(cell: CellDir, entry: ZooEntry, weights: dict[str, Any], net: torch.nn.Module, config_yaml: str,
               facts: dict[str, Any], **status: Any) -> None:
    """The cell of `entry`: its config, learning curve, status, then the checkpoint, the last
    file written: a cell without one is half made and is written again."""
    cell.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cell.config, config_yaml)
    if entry.metrics.is_file():
        atomic_write_bytes(cell.metrics, entry.metrics.read_bytes())
    cell.write_status(**status)
    checkpoint.save(cell.checkpoint, model=net.state_dict(), **{k: weights[k] for k in FACTS}, **facts)


def select(cfg: Any) -> CellDir | None:
    """The installed cell of `cfg.zoo` (None when no zoo entry is asked for)."""
    name = cfg.get("zoo")
    if not name:
        return None
    check_same_cell(str(name), read_entry(find(str(name)))[0], cfg)
    return install(str(name), cfg.run_root)


def check_same_cell(name: str, config: dict[str, Any], cfg: Any) -> None:
    """The command line asks for the entry's own game, model and seed."""
    got = (str(config["game"]["name"]), str(config["model"]["name"]), int(config["seed"]))
    expected = (str(cfg.game.name), str(cfg.model.name), int(cfg.seed))
    if got != expected:
        raise ConfigError(f"zoo={name}: the entry is {got[1]} on {got[0]}, seed {got[2]}, but the command line "
                          f"asks for {expected[1]} on {expected[0]}, seed {expected[2]}; "
                          f"leave game/model/seed to the entry (conf/zoo/{name}.yaml)")
