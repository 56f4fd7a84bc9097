"""The trained agents of zoo/: every entry loads, installs as a cell and plays a real game;
packing a trained cell makes an entry that acts as the cell did; damage is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fls.errors import ConfigError
from fls.rundir import PROVENANCE, WEIGHTS, RunLayout, ZooEntry
from fls.schedule import Schedule
from fls.trained_cell import load_model
from fls.training_cell import open_training_cell
from fls.zoo.entry import entries, install, read_entry, sha256
from fls.zoo.further import check_continuation, continue_training
from fls.zoo.pack import pack, table

from conftest import PYTHON, REPO

ENTRIES = entries()


def test_the_zoo_has_the_breakout_agents():
    assert {"breakout_sparse_fls", "breakout_sparse_fls_first_conv", "breakout_nature_cnn"} <= set(ENTRIES)


def test_the_readme_tables_are_the_entries_own():
    # the table is written by hand from `python -m fls.zoo table`: a re-packed entry must not
    # leave the README showing its predecessor's score
    assert table() in (REPO / "zoo" / "README.md").read_text()


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_is_small_documented_and_matches_its_config_file(name):
    path = REPO / "zoo" / name
    config, weights = read_entry(ZooEntry(name))
    assert (path / WEIGHTS).stat().st_size < 8 * 2**20
    assert all(v.dtype == torch.float16 for v in weights["state_dict"].values() if v.is_floating_point())
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done" and status["global_step"] == weights["global_step"] > 100_000
    provenance = json.loads((path / PROVENANCE).read_text())
    assert len(provenance["commit"]) == 40 and provenance["command"].startswith("python src/train.py")
    assert provenance["random_agent"]["n"] >= 32
    summary = json.loads((path / "eval" / config["game"]["name"] / "summary.json").read_text())
    assert summary["n"] >= 32 and summary["mean"] > provenance["random_agent"]["mean"] + 2 * provenance["random_agent"]["std"]
    entry_conf = OmegaConf.load(REPO / "conf" / "zoo" / f"{name}.yaml")
    assert entry_conf.zoo == name and entry_conf.seed == config["seed"]
    assert f"override /game: {config['game']['name']}" in (REPO / "conf" / "zoo" / f"{name}.yaml").read_text()
    assert f"override /model: {config['model']['name']}" in (REPO / "conf" / "zoo" / f"{name}.yaml").read_text()
    assert f"| {name} |" in (REPO / "zoo" / "README.md").read_text()


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_evaluates_one_game_as_a_cell(name, tmp_path):
    res = subprocess.run([PYTHON, "src/evaluate.py", f"zoo={name}", f"run_root={tmp_path}", "eval.games=1",
                          "eval.num_envs=1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    config, _ = read_entry(ZooEntry(name))
    cell = RunLayout(tmp_path).cell("zoo", config["game"]["name"], config["model"]["name"], config["seed"])
    summary = json.loads(cell.eval_summary(config["game"]["name"]).read_text())
    assert summary["n"] == 1 and summary["cell"] == cell.cell.key
    assert not (REPO / "zoo" / name / "eval" / config["game"]["name"] / "games.parquet").exists()


def test_the_first_conv_agents_own_map_follows_the_ball(tmp_path):
    # what the README's contact sheet shows, for the film `make demo` writes: the first game
    # (the first 500 agent steps here), its own map on the ball in most frames that show it,
    # far more often than the same maps read at other frames' balls
    res = subprocess.run([PYTHON, "src/evaluate.py", "zoo=breakout_sparse_fls_first_conv", "video=true",
                          "eval.video.max_frames=2000", f"run_root={tmp_path}"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    config, _ = read_entry(ZooEntry("breakout_sparse_fls_first_conv"))
    game = config["game"]["name"]
    cell = RunLayout(tmp_path).cell("zoo", game, config["model"]["name"], config["seed"])
    on_ball = json.loads((cell.video_dir(game) / "video.json").read_text())["games"][0]["map_at_ball"]
    assert on_ball["frames"] > 200 and on_ball["on_ball"] > 0.5, on_ball
    assert on_ball["on_ball"] > on_ball["on_ball_control"] + 0.2, on_ball
    assert f"contact sheet {cell.video_dir(game) / 'contact_sheet.png'}" in res.stdout + res.stderr


@pytest.fixture(scope="module")
def trained_cell(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    res = subprocess.run([PYTHON, "src/train.py", "experiment=smoke", "model=sparse_fls", f"run_root={root}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return RunLayout(root).cell("smoke", "breakout", "sparse_fls", 1).path


def test_a_packed_cell_installs_and_acts_as_the_cell(trained_cell, tmp_path):
    zoo_dir, conf_dir = tmp_path / "zoo", tmp_path / "conf_zoo"
    entry = pack(trained_cell, "mine", commit="0" * 40, command="python src/train.py experiment=smoke",
                     zoo_dir=zoo_dir, conf_dir=conf_dir)
    assert {p.name for p in entry.iterdir()} >= {"config.yaml", "status.json", "metrics.csv", WEIGHTS, PROVENANCE}
    assert "override /model: sparse_fls" in (conf_dir / "mine.yaml").read_text()
    with pytest.raises(ConfigError, match="exists; remove it first"):
        pack(trained_cell, "mine", zoo_dir=zoo_dir, conf_dir=conf_dir)

    cell = install("mine", tmp_path / "runs", zoo_dir=zoo_dir)
    assert cell.path == RunLayout(tmp_path / "runs").cell("zoo", "breakout", "sparse_fls", 1).path
    assert cell.is_done() and cell.status()["zoo"] == "mine"
    original = load_model(RunLayout(trained_cell.parents[3]).cell("smoke", "breakout", "sparse_fls", 1), torch.device("cpu"))
    installed = load_model(cell, torch.device("cpu"))
    obs = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        a, b = original.model(obs), installed.model(obs)
    logits = [x[0] if isinstance(x, tuple) else x for x in (a, b)]
    assert torch.allclose(logits[0], logits[1], atol=2e-2)  # fp16 weights
    # installing again reuses the cell; another version of the entry is refused
    assert install("mine", tmp_path / "runs", zoo_dir=zoo_dir).path == cell.path
    weights = torch.load(entry / WEIGHTS, weights_only=True)
    weights["global_step"] += 1
    torch.save(weights, entry / WEIGHTS)
    with pytest.raises(ConfigError, match="weights.pt: not the weights zoo entry mine records"):
        install("mine", tmp_path / "runs", zoo_dir=zoo_dir)
    provenance = json.loads((entry / PROVENANCE).read_text())  # a new version, packed as such
    (entry / PROVENANCE).write_text(json.dumps({**provenance, "weights_sha256": sha256(entry / WEIGHTS)}))
    with pytest.raises(ConfigError, match="holds another version of zoo entry mine"):
        install("mine", tmp_path / "runs", zoo_dir=zoo_dir)


def test_a_run_stopped_past_its_checkpoint_packs_the_checkpoint_and_its_rows(trained_cell, tmp_path):
    # what a killed run leaves: rows logged after the last checkpoint, a status still "running"
    cell = tmp_path / "cell"
    shutil.copytree(trained_cell, cell)
    update = json.loads((cell / "status.json").read_text())["checkpoint_update"]
    lines = (cell / "metrics.csv").read_text().splitlines()
    extra = lines[-1].split(",")
    extra[0], extra[4] = str(update + 1), "999.0"
    (cell / "metrics.csv").write_text("\n".join([*lines, ",".join(extra)]) + "\n")
    status = json.loads((cell / "status.json").read_text())
    status.pop("eprewmean", None)
    (cell / "status.json").write_text(json.dumps({**status, "state": "running"}))

    entry = pack(cell, "stopped", commit="0" * 40, zoo_dir=tmp_path / "zoo", conf_dir=tmp_path / "conf_zoo")
    rows = (entry / "metrics.csv").read_text().splitlines()
    assert rows == lines and int(rows[-1].split(",")[0]) == update
    packed = json.loads((entry / "status.json").read_text())
    last_score = lines[-1].split(",")[4]  # empty where no game ended in the window
    assert packed["update"] == update and packed["eprewmean"] == (float(last_score) if last_score else None)
    assert "stopped at update" in packed["note"]


def test_a_damaged_entry_is_one_line(trained_cell, tmp_path):
    zoo_dir = tmp_path / "zoo"
    entry = pack(trained_cell, "mine", commit="0" * 40, zoo_dir=zoo_dir, conf_dir=tmp_path / "conf_zoo")
    good = (entry / WEIGHTS).read_bytes()
    (entry / WEIGHTS).write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match=r"weights.pt: damaged or not a zoo weights file") as info:
        install("mine", tmp_path / "runs", zoo_dir=zoo_dir)
    assert "\n" not in str(info.value)
    (entry / WEIGHTS).write_bytes(good)
    (entry / "config.yaml").write_text("game: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yaml: damaged"):
        install("mine", tmp_path / "runs", zoo_dir=zoo_dir)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="zoo=nope: no such entry"):
        install("nope", tmp_path / "runs", zoo_dir=zoo_dir)


def test_a_zoo_entry_with_a_contradicting_cell_is_refused(tmp_path):
    res = subprocess.run([PYTHON, "src/evaluate.py", "zoo=breakout_nature_cnn", "model=sparse_fls",
                          f"run_root={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith(("A.L.E", "[Powered"))]
    assert len(lines) == 1 and "zoo=breakout_nature_cnn: the entry is nature_cnn" in lines[0]


def _train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # -m goes before the overrides
    return subprocess.run([PYTHON, "src/train.py", *flags, "experiment=zoo", *[a for a in args if a not in flags]],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_an_entry_trains_further_from_its_weights_and_packs_with_its_history(tmp_path):
    name = "breakout_sparse_fls"
    config, weights = read_entry(ZooEntry(name))
    rollout = config["num_envs"] * config["ppo"]["num_steps"]
    more = weights["global_step"] + rollout  # one update more
    res = _train(f"zoo={name}", f"run_root={tmp_path}", f"total_timesteps={more}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming at update {weights['update']}/" in res.stdout and "sampling stream start afresh" in res.stdout
    assert f"update {weights['update'] + 1} runs at learning rate" in res.stdout
    cell = RunLayout(tmp_path).cell("zoo", "breakout", "sparse_fls", config["seed"])
    status = cell.status()
    assert status["state"] == "done" and status["global_step"] == more and status["update"] == weights["update"] + 1
    assert status["continued_from"]["entry"] == name and status["continued_from"]["global_step"] == weights["global_step"]
    rows = (REPO / "zoo" / name / "metrics.csv").read_text().splitlines()
    assert cell.metrics.read_text().splitlines()[: len(rows)] == rows and len(cell.metrics.read_text().splitlines()) == len(rows) + 1
    # the schedule of the new total_timesteps: update U + 1 of U + 1 runs at 1/(U + 1) of the rate
    new_row = dict(zip(rows[0].split(","), cell.metrics.read_text().splitlines()[-1].split(",")))
    assert float(new_row["charts/learning_rate"]) == pytest.approx(config["ppo"]["learning_rate"] / (weights["update"] + 1))
    assert int(float(new_row["charts/games"])) >= int(float(dict(zip(rows[0].split(","), rows[-1].split(",")))["charts/games"]))
    # one Adam update away from the entry's weights, far from a fresh initialisation
    trained = torch.load(cell.checkpoint, weights_only=True)["model"]
    moved = max((trained[k] - v.float()).abs().max().item() for k, v in weights["state_dict"].items() if v.is_floating_point())
    assert 0 < moved < 0.05
    # the same line again: done, skipped; packed, the new entry names the one it grew from
    again = _train(f"zoo={name}", f"run_root={tmp_path}", f"total_timesteps={more}")
    assert again.returncode == 0 and "is done" in again.stdout
    entry = pack(cell.path, "further", command="python src/train.py experiment=zoo zoo=breakout_sparse_fls",
                     random_agent=None, zoo_dir=tmp_path / "zoo", conf_dir=tmp_path / "conf_zoo")
    provenance = json.loads((entry / PROVENANCE).read_text())
    assert provenance["continued_from"]["entry"] == name
    assert provenance["continued_from"]["commit"] == json.loads((REPO / "zoo" / name / PROVENANCE).read_text())["commit"]


@pytest.mark.parametrize("args, message", [
    (["model=nature_cnn"], "zoo=breakout_sparse_fls: the entry is sparse_fls on breakout"),
    (["ppo.learning_rate=0.001"], "zoo=breakout_sparse_fls: the entry was trained with other settings (ppo.learning_rate"),
    (["total_timesteps=100000"], "trains nothing more"),
    (["pack=seeds", "pack.seeds=[1,2]"], "trains further alone; use pack=none"),
    (["installed"], "did not start from zoo entry breakout_sparse_fls"),
    (["overwrite=true"], "zoo=breakout_sparse_fls with overwrite=true"),
    (["-m", "model=sparse_fls,nature_cnn"], "the entry is sparse_fls on breakout, seed 1, but the command line asks for nature_cnn"),
])
def test_training_an_entry_further_refuses_what_it_cannot_continue(args, message, tmp_path):
    if args == ["installed"]:  # the entry installed there for evaluation is not a cell to train
        install("breakout_sparse_fls", tmp_path)
        args = []
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = _train("zoo=breakout_sparse_fls", f"run_root={tmp_path}", *args, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith(("A.L.E", "[Powered"))]
    assert len(lines) == 1 and message in lines[0], lines
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_cell_left_half_made_by_a_crash_starts_from_the_entry_again(tmp_path):
    name = "breakout_sparse_fls"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=zoo", f"zoo={name}", f"run_root={tmp_path}"])
    cell = RunLayout(tmp_path).cell("zoo", "breakout", "sparse_fls", 1)
    _, weights = read_entry(ZooEntry(name))
    fp32 = {k: v.float() for k, v in weights["state_dict"].items()}
    continue_training(cfg, cell, Schedule.of(cfg))
    assert cell.status()["continued_from"]["entry"] == name
    for crash in ("before the checkpoint", "before the status"):
        cell.checkpoint.unlink()
        if crash == "before the status":
            cell.status_file.unlink()
        continue_training(cfg, cell, Schedule.of(cfg))  # a rerun seeds the cell again
        state = torch.load(cell.checkpoint, weights_only=True)
        assert state["update"] == weights["update"] and all(torch.equal(state["model"][k], v) for k, v in fp32.items())
    assert check_continuation(cfg, cell, Schedule.of(cfg))[2] is None  # complete: it resumes as any cell
    cell.checkpoint.unlink()  # half made, then run with the plain line: refused, not trained from scratch
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        plain = compose("train", overrides=["experiment=zoo", f"run_root={tmp_path}"])
    with pytest.raises(ConfigError, match=f"was being started from zoo entry {name}.*with zoo={name}"):
        open_training_cell(plain, cell)
    continue_training(cfg, cell, Schedule.of(cfg))
    cell.write_status(continued_from=None)  # a cell of something else is never seeded over
    with pytest.raises(ConfigError, match="did not start from zoo entry"):
        continue_training(cfg, cell, Schedule.of(cfg))
