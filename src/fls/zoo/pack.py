"""Making a zoo entry from a trained cell, and the table of zoo/README.md from the entries."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from fls import checkpoint
from fls.durable import atomic_write_bytes, atomic_write_text, strict_json, write_refused
from fls.envs import make_vec_env
from fls.errors import ConfigError
from fls.evaluation import play_games, shares, summarize
from fls.facts import CONF_DIR, source_commit
from fls.rundir import DONE, EPREWMEAN, ZOO_DIR, ZOO_STUDY, CellDir, ZooEntry, read_eval_result
from fls.train_log import MetricsCSV
from fls.zoo.entry import FACTS, FORMAT, entries, read_entry, sha256

ZOO_CONF = CONF_DIR / "zoo"
# What an entry's status.json keeps of the cell's
TRAINED = ("global_step", "update", "num_updates", "total_timesteps", "eprewmean", "started_at", "env_reset_seeds",
           "num_envs")


def pack(cell_path: Path, name: str, *, commit: str | None = None, command: str | None = None,
         random_agent: dict[str, Any] | None = None, zoo_dir: Path = ZOO_DIR, conf_dir: Path = ZOO_CONF) -> Path:
    """zoo/<name>/ from a trained cell's directory, and conf/zoo/<name>.yaml."""
    cell = CellDir.at(cell_path)
    for path in (cell.checkpoint, cell.metrics):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; pack a trained cell's folder (<run_root>/<study>/<game>/<model>/seed_<k>)")
    state = checkpoint.load(cell.checkpoint)
    config = OmegaConf.load(cell.config)
    status = cell.status()
    entry = ZooEntry(name, zoo_dir)
    if entry.path.exists():
        raise ConfigError(f"{entry.path} exists; remove it first to pack {name} again")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **{k: state[k] for k in FACTS},
                "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}}, buffer)
    try:
        entry.path.mkdir(parents=True)
    except OSError as e:
        raise write_refused(entry.path, e) from None
    atomic_write_bytes(entry.weights, buffer.getvalue())
    atomic_write_bytes(entry.config, cell.config.read_bytes())
    atomic_write_bytes(entry.metrics, cell.metrics.read_bytes())
    metrics = MetricsCSV(entry.metrics)
    metrics.truncate_after(state["update"])  # a stopped run logs past its last checkpoint, which is the entry
    rows = metrics.rows()
    trained = {k: status.get(k) for k in TRAINED}
    if rows and trained.get("eprewmean") is None:  # an interrupted run's status has no final score
        trained["eprewmean"] = float(rows[-1][EPREWMEAN] or "nan")  # empty: no game ended yet
    if isinstance(trained.get("eprewmean"), float) and math.isnan(trained["eprewmean"]):
        trained["eprewmean"] = None  # no game ended in the window; status.json stays strict JSON
    if status.get("state") != DONE:
        trained["note"] = (f"training was stopped at update {state['update']} of {status.get('num_updates')} "
                           f"(state {status.get('state')}); the entry is that checkpoint")
    atomic_write_text(entry.status_file, json.dumps({**trained, "state": str(DONE), "global_step": state["global_step"],
                                                     "update": state["update"]}, indent=2, sort_keys=True) + "\n")
    for folder in cell.eval_dirs():
        result = read_eval_result(folder)  # whole evaluations only (CellDamaged: one line)
        if result is not None:
            atomic_write_text(entry.eval_summary(folder.name), strict_json(result.summary, indent=2) + "\n")
    provenance = {"commit": commit or status.get("commit") or source_commit(),
                  "trained_as": "/".join(cell.path.parts[-4:]), "command": command,
                  "random_agent": random_agent, "weights_sha256": sha256(entry.weights)}
    if status.get("continued_from"):  # trained further from an earlier entry (fls.zoo.further)
        provenance["continued_from"] = status["continued_from"]
    atomic_write_text(entry.provenance, json.dumps(provenance, indent=2) + "\n")
    conf_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(conf_dir / f"{name}.yaml", (
        "# @package _global_\n"
        f"# The zoo agent zoo/{name}/ (zoo/README.md); written by python -m fls.zoo pack.\n"
        f"#   python src/evaluate.py zoo={name} video=true\n"
        "defaults:\n"
        f"  - override /game: {config.game.name}\n"
        f"  - override /model: {config.model.name}\n"
        "\n"
        "# the entry's cell: <run_root>/zoo/<game>/<model>/seed_<seed>\n"
        f"study: {ZOO_STUDY}\n"
        f"seed: {int(config.seed)}\n"
        "# which folder of zoo/ src/evaluate.py and src/saliency.py install and open\n"
        f"zoo: {name}\n"
    ))
    return entry.path


def random_agent_scores(game: Any, env: Any, games: int, num_envs: int, seed: int, max_frames: int) -> dict[str, Any]:
    """A uniformly random policy, played with evaluation's own loop, envs and seeds."""
    rng = np.random.default_rng(seed)
    per_env = shares(games, num_envs)
    with make_vec_env(game, env, len(per_env), max_episode_frames=max_frames) as envs:
        played = play_games(envs, lambda obs: rng.integers(envs.num_actions, size=len(obs)), per_env, seed)
    return {**summarize(played), "seed": seed, "max_frames": max_frames}


def table(zoo_dir: Path = ZOO_DIR) -> str:
    """The markdown table of zoo/README.md, from the entries themselves."""
    lines = ["| entry | game | model | agent steps | score (mean +/- std, games) | random agent, same protocol | trained at |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for name in entries(zoo_dir):
        entry = ZooEntry(name, zoo_dir)
        config, weights = read_entry(entry)
        game = config["game"]["name"]
        summary = json.loads(entry.eval_summary(game).read_text()) if entry.eval_summary(game).is_file() else None
        provenance = json.loads(entry.provenance.read_text())
        rnd = provenance.get("random_agent")
        score = f"{summary['mean']:.1f} +/- {summary['std']:.1f} ({summary['n']})" if summary else "not evaluated"
        random_score = f"{rnd['mean']:.2f} +/- {rnd['std']:.2f} ({rnd['n']})" if rnd else "-"
        lines.append(f"| {name} | {game} | {weights['model_name']} | {weights['global_step']:,} | {score} | "
                     f"{random_score} | {str(provenance.get('commit'))[:7]} |")
    return "\n".join(lines)
