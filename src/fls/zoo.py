"""Trained agents shipped with the repository: zoo/<entry>/, and the way into them.

An entry is a finished trained cell in a small form (zoo/README.md):

    zoo/<entry>/
        config.yaml     the cell's composed training config, as the trainer recorded it
        status.json     its status at packing (state done; global_step = agent steps trained)
        metrics.csv     its learning curve, one row per PPO update
        weights.pt      the model's weights in fp16 and the facts a checkpoint carries
                        (model name, game, actions, update, agent steps); no optimizer
        eval/<game>/summary.json   its evaluations (their games.parquet stay in the run)
        provenance.json the commit it was trained at, the command that trains it again,
                        the random agent's score measured the same way, and the SHA-256
                        of weights.pt: a weights file that differs is refused

`zoo=<entry>` (conf/zoo/<entry>.yaml, written by `pack`) makes src/evaluate.py and
src/saliency.py open the cell <run_root>/zoo/<game>/<model>/seed_<k>: `install` puts the
entry there on first use (weights back in fp32, as a checkpoint the one loader,
fls.trained_cell, reads), so a zoo agent is evaluated, filmed and scored exactly as any
trained cell, and its results land in a run directory, never in the repository. Each
later use checks that the installed checkpoint still holds the entry's weights. src/train.py zoo=<entry>
trains an entry further (`continue_training`): its cell starts at the entry's update, with
the entry's weights and a fresh Adam, and is packed again when it has trained enough.

    python -m fls.zoo pack <cell dir> <entry> [--commit SHA] [--command "..."]   make an entry
    python -m fls.zoo list                                                       the entries
    python -m fls.zoo table                                  the table of zoo/README.md
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fls import checkpoint
from fls.cell_lifecycle import TRAINING_KEYS, source_commit, training_identity
from fls.config import changes
from fls.errors import ConfigError
from fls.rundir import (REPO, CellDamaged, CellDir, CellWriteError, RunLayout, atomic_write_bytes, atomic_write_text,
                        read_eval_result, strict_json)
from fls.train_log import MetricsCSV

log = logging.getLogger(__name__)

ZOO_DIR = REPO / "zoo"
ZOO_CONF = REPO / "conf" / "zoo"
STUDY = "zoo"
FORMAT = "fls-zoo-1"
WEIGHTS = "weights.pt"
PROVENANCE = "provenance.json"
# the facts of a checkpoint that fls.trained_cell needs, kept beside the weights
FACTS = ("model_name", "num_actions", "game", "update", "global_step")


def entries(zoo_dir: Path = ZOO_DIR) -> list[str]:
    return sorted(p.name for p in zoo_dir.iterdir() if (p / WEIGHTS).is_file()) if zoo_dir.is_dir() else []


def entry_dir(name: str, zoo_dir: Path = ZOO_DIR) -> Path:
    path = zoo_dir / name
    if not (path / WEIGHTS).is_file():
        raise ConfigError(f"zoo={name}: no such entry in {zoo_dir}; expected one of {', '.join(entries(zoo_dir)) or 'none'}")
    return path


def read_entry(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, weights file contents) of an entry; ConfigError naming the damaged file, or
    the weights file that is not the one its provenance.json records."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)
        assert isinstance(config, dict) and {"game", "model", "seed"} <= set(config)
        cell = (str(config["game"]["name"]), str(config["model"]["name"]), int(config["seed"]))
    except Exception as e:  # yaml errors, a missing file, keys missing
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{path / 'config.yaml'}: damaged or not a trained cell's config ({type(e).__name__}: {first})") from None
    try:
        weights = checkpoint.load_plain(path / WEIGHTS)
        assert isinstance(weights, dict) and weights.get("format") == FORMAT
        assert all(k in weights for k in (*FACTS, "state_dict"))
    except (checkpoint.CheckpointError, OSError, AssertionError) as e:
        why = str(e).replace(f"{path / WEIGHTS}", "").strip(" :") or "not the format of fls.zoo.pack"
        raise ConfigError(f"{path / WEIGHTS}: damaged or not a zoo weights file ({why})") from None
    try:
        recorded = json.loads((path / PROVENANCE).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and sha256(path / WEIGHTS) != recorded:
        raise ConfigError(f"{path / WEIGHTS}: not the weights zoo entry {path.name} records (its SHA-256 differs from "
                          f"{PROVENANCE}'s); restore it (git checkout {path})")
    if (weights["game"], weights["model_name"]) != cell[:2]:
        raise ConfigError(f"{path / WEIGHTS}: weights of {weights['model_name']} on {weights['game']}, "
                          f"but config.yaml says {cell[1]} on {cell[0]}")
    return config, weights


def _model(path: Path, weights: dict[str, Any]) -> torch.nn.Module:
    """The entry's model with its weights in fp32; weights that do not fit are a damaged entry."""
    from fls.models import build_model

    model = build_model(weights["model_name"], int(weights["num_actions"]))
    try:
        model.load_state_dict({k: v.float() for k, v in weights["state_dict"].items()})
    except RuntimeError as e:
        raise ConfigError(f"{path / WEIGHTS}: does not fit a {weights['model_name']} ({str(e).splitlines()[0]})") from None
    return model


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _same_weights(state: dict[str, Any], weights: dict[str, Any]) -> bool:
    """Whether a checkpoint's model holds exactly the entry's weights (fp16, back in fp32)."""
    entry = {k: v.float() if v.is_floating_point() else v for k, v in weights["state_dict"].items()}
    model = state.get("model")
    return (isinstance(model, dict) and model.keys() == entry.keys()
            and all(isinstance(model[k], torch.Tensor) and model[k].dtype == v.dtype and torch.equal(model[k], v)
                    for k, v in entry.items()))


def install(name: str, run_root: Path | str, zoo_dir: Path = ZOO_DIR) -> CellDir:
    """The cell of zoo entry `name` under run_root, put there on first use. A cell there
    that holds another version of the entry is refused, not replaced."""
    path = entry_dir(name, zoo_dir)
    config, weights = read_entry(path)
    cell = RunLayout(run_root).cell(STUDY, config["game"]["name"], config["model"]["name"], int(config["seed"]))
    digest = _sha1(path / WEIGHTS)
    if cell.status_file.exists():
        if cell.status().get("zoo_weights_sha1") != digest:
            raise ConfigError(f"{cell.path} holds another version of zoo entry {name} (or a cell trained there); "
                              "remove it, or use another run_root=")
        if cell.has_checkpoint():
            if not _same_weights(checkpoint.load(cell.checkpoint), weights):
                raise ConfigError(f"{cell.checkpoint} is not zoo entry {name}'s weights (it changed since it was "
                                  f"installed); remove {cell.path} to install the entry again")
            return cell
    model = _model(path, weights)  # weights that do not fit are found before anything is written
    status = json.loads((path / "status.json").read_text())
    _write_cell(cell, path, weights, model, (path / "config.yaml").read_text(), {"zoo": name},
                **status, zoo=name, zoo_weights_sha1=digest)
    return cell


def _write_cell(cell: CellDir, path: Path, weights: dict[str, Any], model: torch.nn.Module, config_yaml: str,
                facts: dict[str, Any], **status: Any) -> None:
    """The cell of entry `path`: its config, learning curve, status, then the checkpoint, the
    last file written: a cell without one is half made and is written again."""
    cell.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cell.config, config_yaml)
    if (path / "metrics.csv").is_file():
        atomic_write_bytes(cell.metrics, (path / "metrics.csv").read_bytes())
    cell.write_status(**status)
    checkpoint.save(cell.checkpoint, model=model.state_dict(), **{k: weights[k] for k in FACTS}, **facts)


def select(cfg: Any) -> CellDir | None:
    """The installed cell of `cfg.zoo` (None when no zoo entry is asked for)."""
    name = cfg.get("zoo")
    if not name:
        return None
    _check_same_cell(str(name), read_entry(entry_dir(str(name)))[0], cfg)
    return install(str(name), cfg.run_root)


def _check_same_cell(name: str, config: dict[str, Any], cfg: Any) -> None:
    got = (str(config["game"]["name"]), str(config["model"]["name"]), int(config["seed"]))
    expected = (str(cfg.game.name), str(cfg.model.name), int(cfg.seed))
    if got != expected:
        raise ConfigError(f"zoo={name}: the entry is {got[1]} on {got[0]}, seed {got[2]}, but the command line "
                          f"asks for {expected[1]} on {expected[0]}, seed {expected[2]}; "
                          f"leave game/model/seed to the entry (conf/zoo/{name}.yaml)")


# ---------------------------------------------------------------------------------------
# Training an entry further
# ---------------------------------------------------------------------------------------


def continue_training(cfg: Any, cell: CellDir, batch_size: int) -> None:
    """Make `cell` a resumable cell at zoo entry `cfg.zoo`'s update, on its first use, so that
    src/train.py zoo=<entry> trains the entry further (to cfg.total_timesteps) as if it were
    resuming it. An entry keeps no optimizer: Adam and the sampling stream start afresh
    (fls.training_run.resume), and the learning rate goes on from where the new
    total_timesteps puts it (logged beside the entry's last). A cell that started from this
    entry already resumes as any cell. The caller holds the cell's training lock."""
    path, weights, model = check_continuation(cfg, cell, batch_size)
    if model is None:  # the cell started from this entry before: it resumes
        return
    provenance = json.loads((path / PROVENANCE).read_text())
    status = json.loads((path / "status.json").read_text())
    with (path / "metrics.csv").open(newline="") as f:
        last = (list(csv.DictReader(f)) or [{}])[-1]
    update, num_updates = int(weights["update"]), int(cfg.total_timesteps) // batch_size
    if cfg.ppo.anneal_lr and "charts/learning_rate" in last:
        lr = (1.0 - update / num_updates) * float(cfg.ppo.learning_rate)  # that of update `update` + 1
        log.warning("zoo=%s: update %d runs at learning rate %.3g, annealed over %d updates; the entry's last ran at "
                    "%s (total_timesteps=%s gives the entry's own schedule)", cfg.zoo, update + 1, lr, num_updates,
                    f"{float(last['charts/learning_rate']):.3g}", status.get("total_timesteps"))
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    _write_cell(
        cell, path, weights, model, OmegaConf.to_yaml(config),
        {"games": int(float(last.get("charts/games") or 0)), "game_scores": [], "game_frames": []},
        state="interrupted", update=update, global_step=int(weights["global_step"]), checkpoint_update=update,
        env_reset_seeds=status.get("env_reset_seeds", []),
        # the entry's own history travels into the entry this cell is packed into
        continued_from={"entry": str(cfg.zoo), "weights_sha1": _sha1(path / WEIGHTS), "update": update,
                        "global_step": int(weights["global_step"]), "commit": provenance.get("commit"),
                        "total_timesteps": status.get("total_timesteps"),
                        "continued_from": provenance.get("continued_from")},
    )


def check_continuation(cfg: Any, cell: CellDir, batch_size: int) -> tuple[Path, dict[str, Any], Any]:
    """Every reason zoo entry `cfg.zoo` cannot train further in `cell`, as one ConfigError,
    reading only: (entry folder, its weights file, the model with the weights in fp32), the
    model None when the cell has started from the entry already."""
    name = str(cfg.zoo)
    path = entry_dir(name)
    config, weights = read_entry(path)
    _check_same_cell(name, config, cfg)
    differ = [f"{key}: {a} -> {b}" for key, a, b in
              changes(training_identity(config), training_identity(OmegaConf.masked_copy(cfg, list(TRAINING_KEYS))))
              if key != "total_timesteps"]  # the one setting that training further changes
    if differ:
        raise ConfigError(f"zoo={name}: the entry was trained with other settings ({'; '.join(differ[:4])}); "
                          "it trains further only with its own (conf/experiment/zoo.yaml)")
    if int(cfg.total_timesteps) // batch_size <= int(weights["update"]):
        raise ConfigError(f"zoo={name}: the entry has trained {weights['update']} updates ({weights['global_step']:,} "
                          f"agent steps); total_timesteps={cfg.total_timesteps} trains nothing more: ask for more")
    ours = (cell.status().get("continued_from") or {}).get("entry") == name
    if ours and cell.has_checkpoint():  # complete (_write_cell): it resumes as any cell
        planned = cell.recorded_config().get("total_timesteps") if cell.config.exists() else None
        if planned is not None and int(planned) != int(cfg.total_timesteps):
            raise ConfigError(f"{cell.path} trains zoo entry {name} further to total_timesteps={planned}; to go "
                              f"beyond, pack it as an entry (python -m fls.zoo pack {cell.path} <entry>) and train "
                              "that further, or use another run_root=")
        return path, weights, None
    if not ours and (cell.status_file.exists() or cell.has_checkpoint()):
        raise ConfigError(f"{cell.path} exists and did not start from zoo entry {name} (evaluating the entry installs "
                          "it there too); use another run_root= to train the entry further")
    return path, weights, _model(path, weights)


# ---------------------------------------------------------------------------------------
# Making an entry
# ---------------------------------------------------------------------------------------


def pack(cell_path: Path, name: str, *, commit: str | None = None, command: str | None = None,
         random_agent: dict[str, Any] | None = None, zoo_dir: Path = ZOO_DIR, conf_dir: Path = ZOO_CONF) -> Path:
    """zoo/<name>/ from a trained cell's directory, and conf/zoo/<name>.yaml."""
    cell_path = Path(cell_path)
    state = checkpoint.load(cell_path / "checkpoint.pt")
    config = OmegaConf.load(cell_path / "config.yaml")
    status = json.loads((cell_path / "status.json").read_text())
    target = zoo_dir / name
    if target.exists():
        raise ConfigError(f"{target} exists; remove it first to pack {name} again")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **{k: state[k] for k in FACTS},
                "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}}, buffer)
    target.mkdir(parents=True)
    atomic_write_bytes(target / WEIGHTS, buffer.getvalue())
    shutil.copyfile(cell_path / "config.yaml", target / "config.yaml")
    shutil.copyfile(cell_path / "metrics.csv", target / "metrics.csv")
    metrics = MetricsCSV(target / "metrics.csv")
    metrics.truncate_after(state["update"])  # a stopped run logs past its last checkpoint, which is the entry
    rows = metrics.rows()
    trained = {k: status.get(k) for k in ("global_step", "update", "num_updates", "total_timesteps", "eprewmean",
                                          "started_at", "env_reset_seeds", "num_envs")}
    if rows and trained.get("eprewmean") is None:  # an interrupted run's status has no final score
        trained["eprewmean"] = float(rows[-1]["charts/eprewmean"] or "nan")  # empty: no game ended yet
    if isinstance(trained.get("eprewmean"), float) and math.isnan(trained["eprewmean"]):
        trained["eprewmean"] = None  # no game ended in the window; status.json stays strict JSON
    if status.get("state") != "done":
        trained["note"] = (f"training was stopped at update {state['update']} of {status.get('num_updates')} "
                           f"(state {status.get('state')}); the entry is that checkpoint")
    atomic_write_text(target / "status.json", json.dumps({**trained, "state": "done", "global_step": state["global_step"],
                                                          "update": state["update"]}, indent=2, sort_keys=True) + "\n")
    for folder in sorted(p for p in (cell_path / "eval").glob("*") if p.is_dir()):
        result = read_eval_result(folder)  # whole evaluations only (CellDamaged: one line)
        if result is not None:
            (target / "eval" / folder.name).mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / "eval" / folder.name / "summary.json", strict_json(result.summary, indent=2) + "\n")
    provenance = {"commit": commit or status.get("commit") or source_commit(),
                  "trained_as": "/".join(cell_path.parts[-4:]), "command": command,
                  "random_agent": random_agent, "weights_sha256": sha256(target / WEIGHTS)}
    if status.get("continued_from"):  # trained further from an earlier entry (continue_training)
        provenance["continued_from"] = status["continued_from"]
    atomic_write_text(target / PROVENANCE, json.dumps(provenance, indent=2) + "\n")
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
        f"study: {STUDY}\n"
        f"seed: {int(config.seed)}\n"
        "# which folder of zoo/ src/evaluate.py and src/saliency.py install and open\n"
        f"zoo: {name}\n"
    ))
    return target


def random_agent_scores(game: Any, env: Any, games: int, num_envs: int, seed: int, max_frames: int) -> dict[str, Any]:
    """A uniformly random policy, played with evaluation's own loop, envs and seeds."""
    import numpy as np

    from fls.envs import make_vec_env
    from fls.evaluation import play_games, shares, summarize

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
        config, weights = read_entry(zoo_dir / name)
        game = config["game"]["name"]
        summary_path = zoo_dir / name / "eval" / game / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        provenance = json.loads((zoo_dir / name / PROVENANCE).read_text())
        rnd = provenance.get("random_agent")
        score = f"{summary['mean']:.1f} +/- {summary['std']:.1f} ({summary['n']})" if summary else "not evaluated"
        random_score = f"{rnd['mean']:.2f} +/- {rnd['std']:.2f} ({rnd['n']})" if rnd else "-"
        lines.append(f"| {name} | {game} | {weights['model_name']} | {weights['global_step']:,} | {score} | "
                     f"{random_score} | {str(provenance.get('commit'))[:7]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fls.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="make zoo/<entry>/ from a trained cell")
    p.add_argument("cell", type=Path)
    p.add_argument("entry")
    p.add_argument("--commit", help="the commit it was trained at (default: the one its status records, else HEAD)")
    p.add_argument("--command", help="the command that trains it again")
    p.add_argument("--random-games", type=int, default=32, help="games of the random agent to measure (0: none)")
    sub.add_parser("list", help="the entries")
    sub.add_parser("table", help="the markdown table of zoo/README.md")
    args = parser.parse_args(argv)
    try:
        if args.command == "table":
            print(table())
            return 0
        if args.command == "list":
            for name in entries():
                config, weights = read_entry(ZOO_DIR / name)
                print(f"{name}: {weights['model_name']} on {weights['game']}, {weights['global_step']} agent steps")
            return 0
        random_agent = None
        if args.random_games:
            from fls.config import load_group
            from fls.evaluation import eval_seed

            config = OmegaConf.load(args.cell / "config.yaml")
            eval_cfg = load_group("eval", "paper")
            cfg = OmegaConf.create({"seed": int(config.seed), "eval": eval_cfg})
            random_agent = random_agent_scores(config.game, config.env, args.random_games, int(eval_cfg.num_envs),
                                               eval_seed(cfg), int(config.game.eval_max_frames))
        print(pack(args.cell, args.entry, commit=args.commit, command=args.command, random_agent=random_agent))
    except (ConfigError, checkpoint.CheckpointError, OSError, CellWriteError, CellDamaged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
