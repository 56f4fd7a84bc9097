"""Durability (docs/durability.md): what a kill -9 at any write, a full disk, a bad switch or a
tampered file leaves behind. Each test reproduces one way results were lost, mixed or trusted.

The fault hook of fls.rundir stops a process at its n-th durable step (a rename that publishes
a file, a metrics row appended, a folder moved or removed): FLS_FAULT_AT=n. In-process runs
here replace the kill by an exception that no handler of the code under test catches
(`Killed`, a SystemExit, as the preemption path's own exit), so nothing runs that a kill -9
would not run; test_every_write_of_a_cell_killed_for_real (slow) kills real processes.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fls import checkpoint, config, durable
from fls.cli import check_overrides
from fls.errors import CellDamaged, CellWriteError, CheckpointError, ConfigError
from fls.evaluation import evaluate_cells
from fls.rundir import LOCK_PREFIX, PROVENANCE, WEIGHTS, RunLayout, ZooEntry, cell_from_config, read_eval_result
from fls.saliency_checks import check_config as check_saliency_config
from fls.gaze_scores import score_cell
from fls.train_log import MetricsCSV
from fls.video import check_evaluate_config
from fls.training_cell import check_train_config, open_training_cell
from fls.zoo.entry import FORMAT, entries, install, read_entry, sha256
from studies import status as sweep_status

from conftest import PYTHON, REPO, copy_runs

CHECKS = {"train": check_train_config, "evaluate": check_evaluate_config, "saliency": check_saliency_config}


def compose_cfg(entry: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name=entry):
        return compose(entry, overrides=list(overrides))


# ---------------------------------------------------------------------------------------
# 1, 6, 8: every switch is a real boolean, every env key is checked, log_every_s is a number
# ---------------------------------------------------------------------------------------


def switches(cfg: Any, prefix: str = "") -> list[str]:
    """The dotted keys of every boolean leaf of a composed config."""
    out = []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += switches(value, f"{name}.")
        elif isinstance(value, bool):
            out.append(name)
    return out


@pytest.mark.parametrize("entry", ["train", "evaluate", "saliency"])
def test_every_boolean_key_of_conf_refuses_anything_but_true_or_false(entry, tmp_path, atari_head_sample):
    base = [f"run_root={tmp_path}", "game=mspacman", f"saliency.root={atari_head_sample}"] if entry == "saliency" \
        else [f"run_root={tmp_path}"]
    keys = set()
    for experiment in ([], ["experiment=smoke"], ["experiment=paper"], ["experiment=zoo"]):
        cfg = compose_cfg(entry, *base, *experiment)
        keys |= set(switches(OmegaConf.to_container(cfg, resolve=False)))
    assert {"overwrite", "env.episodic_life", "env.fire_reset"} <= keys
    assert keys <= set(config.SWITCHES), "a boolean key of conf/ that config.SWITCHES does not check"
    # the command line as Hydra reads it: "no" is a string
    with pytest.raises(ConfigError, match=r"^overwrite=no: expected true or false$"):
        check_overrides(entry, [*base, "overwrite=no"], CHECKS[entry])
    cfg = compose_cfg(entry, *base)
    for key in sorted(keys):
        for bad in ("no", 2, "abc"):
            changed = cfg.copy()
            OmegaConf.update(changed, key, bad, force_add=True)
            with pytest.raises(ConfigError, match=rf"^{key}={bad}: expected true or false$"):
                CHECKS[entry](changed)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("override, message", [
    ("log_every_s=abc", "log_every_s=abc: expected a number"),
    ("log_every_s=-1", "log_every_s=-1: expected a number of seconds >= 0"),
    ("env.noop_max=abc", "env.noop_max=abc: expected a non-negative integer"),
    ("env.backend=foo", "env.backend=foo: expected one of"),
])
def test_log_every_s_and_env_keys_are_checked(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check_overrides("train", [f"run_root={tmp_path}", override], check_train_config)


# ---------------------------------------------------------------------------------------
# 5: a torn metrics row
# ---------------------------------------------------------------------------------------


def metrics_rows(path: Path, updates: list[int]) -> str:
    m = MetricsCSV(path)
    for u in updates:
        m.write({"update": u, "global_step": 256 * u, "global/game_frames": 1024 * u, "charts/eprewmean": 1.5 * u})
    m.close()
    return path.read_text()


@pytest.mark.parametrize("torn", ["1", "4,1024,40", "3,768,3072,2.5,"])
def test_a_torn_last_metrics_row_is_dropped_on_resume(tmp_path, torn):
    path = tmp_path / "metrics.csv"
    whole = metrics_rows(path, [1, 2, 3])
    path.write_text(whole + torn)  # a kill (or a full disk) in the middle of the next row
    metrics = MetricsCSV(path)
    assert [r["update"] for r in metrics.rows()] == ["1", "2", "3"]
    assert metrics.truncate_after(3) == 3
    assert path.read_text() == whole
    metrics.write({"update": 4, "global_step": 1024})
    metrics.close()
    assert [r["update"] for r in MetricsCSV(path).rows()] == ["1", "2", "3", "4"]


def test_a_damaged_row_before_the_last_is_still_refused(tmp_path):
    path = tmp_path / "metrics.csv"
    lines = metrics_rows(path, [1, 2, 3]).splitlines()
    lines[2] = "2,51"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CellDamaged, match="line 3 is not a metrics row"):
        MetricsCSV(path).rows()


# ---------------------------------------------------------------------------------------
# 7: checkpoints never run code
# ---------------------------------------------------------------------------------------


class Payload:
    """What a crafted checkpoint.pt holds: a pickled call that runs when it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "hook": Payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "system" in message, message
    assert not marker.exists()


@pytest.fixture(scope="module")
def smoke_runs(mspacman_smoke_runs, tmp_path_factory) -> Path:
    """This module's copy of the session's two tiny Ms. Pac-Man cells (read-only here: tests copy it)."""
    return copy_runs(mspacman_smoke_runs, tmp_path_factory.mktemp("durability") / "runs")


def linked(source: Path, target: Path) -> Path:
    """A copy of a run root whose files are hard links: instant, and safe for evaluation and
    scoring, which replace files (rename) and never write into one."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def mspacman(root: Path, model: str = "sparse_fls"):
    return RunLayout(root).cell("smoke", "mspacman", model, 1)


def test_checkpoints_hold_only_what_weights_only_loads_and_old_ones_still_load(smoke_runs, tmp_path):
    state = torch.load(mspacman(smoke_runs).checkpoint, weights_only=True)  # no allowlist: tensors and plain values
    assert state["format"] == checkpoint.FORMAT
    checkpoint.set_rng_states(state["rng"])
    a = (random.random(), np.random.random(), torch.rand(1).item())
    checkpoint.set_rng_states(state["rng"])
    assert (random.random(), np.random.random(), torch.rand(1).item()) == a
    # a checkpoint of format 1 (numpy's RNG state as an ndarray, as the trainer wrote them
    # before) still loads, and restores that state
    numpy_state = np.random.get_state()
    draw = np.random.random()
    torch.save({**state, "format": 1, "rng": {**state["rng"], "numpy": numpy_state}}, tmp_path / "old.pt")
    loaded = checkpoint.load(tmp_path / "old.pt")
    checkpoint.set_rng_states(loaded["rng"])
    assert np.random.random() == draw
    assert same(loaded["model"], state["model"]) and same(loaded["optimizer"], state["optimizer"])


def test_evaluating_a_crafted_checkpoint_is_one_line_and_runs_nothing(smoke_runs, tmp_path):
    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root, "nature_cnn")
    marker = tmp_path / "ran"
    cell.checkpoint.unlink()  # a link to the shared copy's file: a new file in its place
    torch.save({"format": checkpoint.FORMAT, "model": Payload(marker)}, cell.checkpoint)
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", "game=mspacman", "model=nature_cnn",
                          f"run_root={root}", "eval.games=1", "eval.num_envs=1"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and str(cell.checkpoint) in lines[0], res.stderr[-3000:]
    assert not marker.exists()


def test_every_zoo_entry_records_the_hash_of_its_weights():
    for name in entries():
        path = REPO / "zoo" / name
        provenance = json.loads((path / PROVENANCE).read_text())
        assert provenance["weights_sha256"] == sha256(path / WEIGHTS)
        read_entry(ZooEntry(name))


def test_tampered_zoo_weights_are_one_line_and_run_nothing(tmp_path):
    entry = tmp_path / "zoo" / "breakout_nature_cnn"
    shutil.copytree(REPO / "zoo" / "breakout_nature_cnn", entry)
    marker = tmp_path / "ran"
    good = (entry / WEIGHTS).read_bytes()
    torch.save({"format": FORMAT, "state_dict": Payload(marker)}, entry / WEIGHTS)
    with pytest.raises(ConfigError) as info:
        install("breakout_nature_cnn", tmp_path / "runs", zoo_dir=tmp_path / "zoo")
    assert "\n" not in str(info.value) and "weights.pt" in str(info.value)
    assert not marker.exists() and not (tmp_path / "runs").exists()
    # other numbers in a well-formed file: not the weights the entry records
    weights = torch.load(io.BytesIO(good), weights_only=True)
    first = next(k for k, v in weights["state_dict"].items() if v.is_floating_point())
    weights["state_dict"][first] = weights["state_dict"][first] + 1
    torch.save(weights, entry / WEIGHTS)
    with pytest.raises(ConfigError, match=r"weights.pt: not the weights zoo entry breakout_nature_cnn records") as info:
        install("breakout_nature_cnn", tmp_path / "runs", zoo_dir=tmp_path / "zoo")
    assert "\n" not in str(info.value)


def test_an_installed_zoo_cell_whose_weights_changed_is_refused(tmp_path):
    cell = install("breakout_nature_cnn", tmp_path)
    assert install("breakout_nature_cnn", tmp_path).path == cell.path  # intact: reused
    state = checkpoint.load(cell.checkpoint)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 0.5
    buffer = io.BytesIO()
    torch.save(state, buffer)
    cell.checkpoint.write_bytes(buffer.getvalue())
    with pytest.raises(ConfigError, match="is not zoo entry breakout_nature_cnn's weights") as info:
        install("breakout_nature_cnn", tmp_path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# 8: damaged files are one line
# ---------------------------------------------------------------------------------------


def test_a_cell_config_that_is_not_yaml_is_one_line_and_not_resumable(tmp_path, capsys):
    cfg = compose_cfg("train", "experiment=smoke", f"run_root={tmp_path}")
    cell = cell_from_config(cfg)
    cell.path.mkdir(parents=True)
    cell.config.write_text("game: [unclosed\n")
    cell.checkpoint.write_bytes(b"")  # what sweep-status sees of a cell with a checkpoint
    cell.write_status(state="interrupted", update=1, num_updates=2)
    with pytest.raises(CellDamaged, match=rf"^{re.escape(str(cell.config))}: damaged, not YAML") as info:
        open_training_cell(cfg, cell)
    assert "\n" not in str(info.value)
    assert sweep_status.main(["--study", "smoke", "--run-root", str(tmp_path), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "seed_1  failed" in out and "config.yaml: damaged, not YAML" in out and "resumable" not in out.split("\n")[1]


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path):
    # what a read-only or full file system answers; here the cell's folder cannot be made
    (tmp_path / "runs").write_text("a file where the run root should be")
    cell = RunLayout(tmp_path / "runs").cell("s", "breakout", "nature_cnn", 1)
    with pytest.raises(CellWriteError, match=r"\.lock-eval-breakout: cannot write: .*eval-breakout needs to write") as info:
        with cell.lock("eval-breakout"):
            pass
    assert "\n" not in str(info.value)


def test_status_json_is_strict_json(tmp_path):
    cell = RunLayout(tmp_path).cell("s", "breakout", "nature_cnn", 1)
    cell.write_status(eprewmean=float("nan"), scores=[1.0, float("inf")])

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    status = json.loads(cell.status_file.read_text(), parse_constant=refuse)
    assert status == {"eprewmean": None, "scores": [1.0, None]}


# ---------------------------------------------------------------------------------------
# 2, 3, 4, 8: an evaluation is one unit
# ---------------------------------------------------------------------------------------

EVAL = ("experiment=smoke", "game=mspacman", "model=nature_cnn", "eval.num_envs=2", "eval.max_frames=400")


def evaluate(root: Path, *overrides: str):
    cfg = compose_cfg("evaluate", *EVAL, f"run_root={root}", *overrides)
    check_evaluate_config(cfg)
    cell = cell_from_config(cfg)
    return evaluate_cells([cfg], [cell])[0]


class Killed(SystemExit):
    """A kill -9 of the process at a durable step, in-process: no handler of the code under test
    catches it (they let SystemExit through, as the preemption path's own exit)."""


@pytest.fixture
def faults(monkeypatch, tmp_path):
    """arm(n): the n-th durable step from now raises Killed; steps(): what the last run did."""
    log = tmp_path / "fault_steps.log"

    def die():
        raise Killed(137)

    monkeypatch.setattr(durable, "_die", die)

    class Faults:
        def arm(self, n: int | None) -> None:
            monkeypatch.setattr(durable, "_steps", 0)
            log.unlink(missing_ok=True)
            monkeypatch.setenv("FLS_FAULT_LOG", str(log))
            if n is None:
                monkeypatch.delenv("FLS_FAULT_AT", raising=False)
            else:
                monkeypatch.setenv("FLS_FAULT_AT", str(n))

        def disarm(self) -> None:
            monkeypatch.delenv("FLS_FAULT_AT", raising=False)
            monkeypatch.delenv("FLS_FAULT_LOG", raising=False)

        def steps(self) -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

    yield Faults()


def eval_results(cell, game: str = "mspacman") -> dict[str, Any]:
    """Everything an evaluation leaves, less wall times: the current result and every kept one
    (by content, not by the stamp of their folder), and the names of every file."""
    def unit(folder: Path) -> tuple:
        result = read_eval_result(folder)
        assert result is not None, folder
        summary = {k: v for k, v in result.summary.items() if k not in ("seconds", "sha256")}
        games = pd.read_parquet(io.BytesIO(result.files["games.parquet"])).drop(columns="seconds")
        return json.dumps(summary, sort_keys=True), games.to_json()

    folder = cell.eval_dir(game)
    previous = cell.eval_previous(game)
    kept = sorted(unit(p) for p in previous.iterdir()) if previous.exists() else []
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                   and not p.is_relative_to(previous))
    return {"current": unit(folder), "kept": kept, "kept_folders": len(kept), "files": names,
            "previous_files": sorted(p.name for p in previous.rglob("*") if p.is_file()) if previous.exists() else []}


SCENARIOS = {
    # a first evaluation; one with other settings (the earlier kept); one replacing it
    "first": ([], ["eval.games=2"]),
    "changed": (["eval.games=1"], ["eval.games=2"]),
    "overwrite": (["eval.games=1"], ["eval.games=2", "eval.overwrite=true"]),
}


# "changed" has every step the others have (and keeps the earlier result): the default suite's
@pytest.mark.parametrize("scenario", [pytest.param("first", marks=pytest.mark.slow), "changed",
                                      pytest.param("overwrite", marks=pytest.mark.slow)])
def test_an_evaluation_killed_at_any_write_leaves_the_old_or_the_new_result(scenario, smoke_runs, tmp_path, faults):
    before, run = SCENARIOS[scenario]
    clean = linked(smoke_runs, tmp_path / "clean")
    if before:
        evaluate(clean, *before)
    start = tmp_path / "start"
    linked(clean, start)
    faults.arm(None)
    evaluate(clean, *run)
    steps = faults.steps()
    expected = eval_results(mspacman(clean, "nature_cnn"))
    assert len(steps) >= 2, steps
    for n in range(1, len(steps) + 1):
        root = tmp_path / f"kill_{n}"
        linked(start, root)
        cell = mspacman(root, "nature_cnn")
        faults.arm(n)
        with pytest.raises(Killed):
            evaluate(root, *run)
        faults.disarm()
        # what a reader sees at once: the old result or the new one, whole
        seen = read_eval_result(cell.eval_dir("mspacman"))
        if before or seen is not None:
            assert seen is not None and seen.summary["n"] in (1, 2), (n, steps[n - 1])
            games = pd.read_parquet(io.BytesIO(seen.files["games.parquet"]))
            assert len(games) == seen.summary["n"]
        evaluate(root, *run)
        assert eval_results(cell) == expected, (n, steps[n - 1])


def test_every_earlier_evaluation_is_kept_in_a_folder_of_its_own(smoke_runs, tmp_path):
    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root, "nature_cnn")
    for games in (1, 2, 3):
        evaluate(root, f"eval.games={games}")
    kept = sorted(read_eval_result(p).summary["n"] for p in cell.eval_previous("mspacman").iterdir())
    assert kept == [1, 2] and read_eval_result(cell.eval_dir("mspacman")).summary["n"] == 3
    evaluate(root, "eval.games=1")  # back to an earlier setting: recomputed, the 3 games kept too
    kept = sorted(read_eval_result(p).summary["n"] for p in cell.eval_previous("mspacman").iterdir())
    assert kept == [1, 2, 3]


def test_a_summary_that_disagrees_with_its_games_is_never_trusted(smoke_runs, tmp_path, capsys):
    from analysis.load import FileSource

    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root, "nature_cnn")
    evaluate(root, "eval.games=2")
    assert len(FileSource(root, "smoke").eval_games()) == 2
    # a summary of 1 game beside 2 games' rows (what the old writer left when killed between them)
    summary = json.loads(cell.eval_summary("mspacman").read_text())
    summary.pop("sha256")
    summary["n"] = 1
    cell.eval_summary("mspacman").write_text(json.dumps(summary))
    assert FileSource(root, "smoke").eval_games().empty
    assert "summary.json" in capsys.readouterr().err
    with pytest.raises(CellDamaged, match=r"summary.json: .*eval.overwrite=true") as info:
        evaluate(root, "eval.games=2")
    assert "\n" not in str(info.value)
    cell.eval_summary("mspacman").write_text("{ not json")  # 8: a damaged summary is one line too
    with pytest.raises(CellDamaged, match=r"summary.json: damaged"):
        evaluate(root, "eval.games=2")
    assert evaluate(root, "eval.games=2", "eval.overwrite=true")["n"] == 2
    assert len(FileSource(root, "smoke").eval_games()) == 2


def test_leftovers_of_killed_writes_in_eval_are_removed_when_the_cell_is_next_opened(smoke_runs, tmp_path):
    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root, "nature_cnn")
    evaluate(root, "eval.games=1")
    folder = cell.eval_dir("mspacman")
    leftovers = [folder / ".summary.json.4242.0123abcd.tmp", folder / ".games.parquet.4242.0123abcd.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    partial = cell.eval_previous("mspacman") / ".20260101T000000_0123abcd.partial"
    partial.mkdir(parents=True)
    evaluate(root, "eval.games=1")  # done: skipped, and cleaned
    assert not any(p.exists() for p in leftovers) and not partial.exists()


def test_a_full_disk_during_an_evaluation_keeps_the_old_result(smoke_runs, tmp_path, faults, monkeypatch):
    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root, "nature_cnn")
    evaluate(root, "eval.games=1")
    before = eval_results(cell)
    faults.arm(1)  # the disk fills while the new games are written
    monkeypatch.setenv("FLS_FAULT", "enospc")
    with pytest.raises(CellWriteError, match=rf"^{re.escape(str(cell.eval_dir('mspacman')))}/.*No space left on device") as info:
        evaluate(root, "eval.games=2", "eval.overwrite=true")
    assert "\n" not in str(info.value)
    faults.disarm()
    assert eval_results(cell) == before


# ---------------------------------------------------------------------------------------
# Scoring: every write, a corrupt cached file, leftovers
# ---------------------------------------------------------------------------------------

SCORE = ("experiment=smoke", "game=mspacman", "model=sparse_fls", "saliency.max_frames=12", "saliency.sauc_splits=5")


def score(root: Path, data: Path, *overrides: str):
    cfg = compose_cfg("saliency", *SCORE, f"run_root={root}", f"saliency.root={data}", *overrides)
    return score_cell(cfg, cell_from_config(cfg))


def saliency_results(cell) -> dict[str, Any]:
    folder = cell.saliency_dir
    return {"trials": cell.saliency_trials.read_text(),
            "frames": {str(p.relative_to(folder)): pd.read_parquet(p).to_json() for p in folder.rglob("*.parquet")},
            "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())}


def test_scoring_killed_at_any_write_ends_as_a_clean_run(smoke_runs, atari_head_sample, tmp_path, faults):
    clean = linked(smoke_runs, tmp_path / "clean")
    faults.arm(None)
    score(clean, atari_head_sample, "saliency.resolutions=[210x160,84x84]")
    steps = faults.steps()
    assert len(steps) == 3, steps  # two per-frame files, trials.csv
    expected = saliency_results(mspacman(clean))
    for n in range(1, len(steps) + 1):
        root = linked(smoke_runs, tmp_path / f"kill_{n}")
        faults.arm(n)
        with pytest.raises(Killed):
            score(root, atari_head_sample, "saliency.resolutions=[210x160,84x84]")
        faults.disarm()
        score(root, atari_head_sample, "saliency.resolutions=[210x160,84x84]")
        assert saliency_results(mspacman(root)) == expected, (n, steps[n - 1])


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75])
def test_a_corrupt_cached_frames_file_is_recomputed(smoke_runs, atari_head_sample, tmp_path, caplog, where):
    import pyarrow.parquet as pq

    root = linked(smoke_runs, tmp_path / "runs")
    cell = mspacman(root)
    score(root, atari_head_sample)
    expected = saliency_results(cell)
    path = next(cell.saliency_frames_dir().rglob("*.parquet"))
    data = bytearray(path.read_bytes())
    pages = len(data) - 8 - pq.read_metadata(path).serialized_size  # the data pages; the footer (and key) after
    at = int(pages * where)
    data[at:at + 16] = bytes(16)  # a damaged block: a traceback, or numbers read back wrong
    path.write_bytes(bytes(data))
    leftover = path.parent / f".{path.name}.4242.0123abcd.tmp"
    leftover.write_bytes(b"half")
    score(root, atari_head_sample)
    assert f"{path} does not read back whole" in caplog.text
    assert saliency_results(cell) == expected and not leftover.exists()


# ---------------------------------------------------------------------------------------
# Training: every write of a tiny run, killed
# ---------------------------------------------------------------------------------------

TRAIN = ("experiment=smoke", "num_envs=2", "ppo.num_steps=32", "ppo.num_minibatches=2", "total_timesteps=128")
TIMING = ("global/seconds", "charts/SPS")


def train_script():
    spec = importlib.util.spec_from_file_location("fls_train_script", REPO / "src" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(root: Path, *overrides: str):
    cfg = compose_cfg("train", *TRAIN, f"run_root={root}", *overrides)
    return train_script().train(cfg)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def training_results(cell) -> dict[str, Any]:
    """What a training cell holds, less wall times, hosts and the log."""
    with cell.metrics.open(newline="") as f:
        rows = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    status = cell.status()
    return {
        "rows": rows,
        "checkpoint": torch.load(cell.checkpoint, weights_only=True),
        "status": {k: status.get(k) for k in ("state", "update", "global_step", "num_updates", "checkpoint_update",
                                              "eprewmean", "total_timesteps", "error")},
        "config": {k: v for k, v in cell.recorded_config().items() if k != "run_root"},
        "files": sorted(str(p.relative_to(cell.path)) for p in cell.path.rglob("*")
                        if p.is_file() and p.name != "train.log" and not p.name.startswith(LOCK_PREFIX)),
    }


def same_training(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(same(a[k], b[k]) for k in a)


def test_training_killed_at_a_write_resumes_to_the_clean_result(tmp_path, faults):
    """The default suite's share of the fault test (the slow test kills every write for real): a
    torn metrics row before the first checkpoint, the checkpoint of the last update, and the
    final status: each re-run ends with exactly the clean run's results."""
    faults.arm(None)
    train(tmp_path / "clean")
    steps = faults.steps()
    clean = training_results(RunLayout(tmp_path / "clean").cell("smoke", "breakout", "nature_cnn", 1))
    picks = [steps.index(next(s for s in steps if " append " in s)) + 1,  # update 1's row, torn
             len(steps)]  # the final status (state done)
    for n in picks:
        root = tmp_path / f"kill_{n}"
        faults.arm(n)
        with pytest.raises(Killed):
            train(root)
        faults.disarm()
        cell = RunLayout(root).cell("smoke", "breakout", "nature_cnn", 1)
        train(root)
        assert same_training(training_results(cell), clean), (n, steps[n - 1])


def test_a_full_disk_during_training_names_the_cell_and_the_status_says_so(tmp_path, faults, monkeypatch):
    faults.arm(4)
    monkeypatch.setenv("FLS_FAULT", "enospc")
    with pytest.raises(CellWriteError) as info:
        train(tmp_path)
    step = faults.steps()[3]
    assert " replace " in step and step.endswith("checkpoint.pt"), step  # the first checkpoint
    cell = RunLayout(tmp_path).cell("smoke", "breakout", "nature_cnn", 1)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(cell.path)) and "No space left on device" in message
    status = cell.status()
    assert status["state"] == "failed" and "No space left on device" in status["error"]
    faults.disarm()
    train(tmp_path)  # space again: it goes on
    assert cell.status()["state"] == "done"


@pytest.mark.slow
def test_a_full_disk_is_one_line_at_the_command_line(tmp_path):
    log = tmp_path / "steps.log"
    env = {**os.environ, "FLS_FAULT_AT": "4", "FLS_FAULT": "enospc", "FLS_FAULT_LOG": str(log)}
    res = subprocess.run([PYTHON, "src/train.py", *TRAIN, f"run_root={tmp_path}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    cell = RunLayout(tmp_path).cell("smoke", "breakout", "nature_cnn", 1)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert res.returncode == 1 and len(lines) == 1, res.stderr[-3000:]
    assert str(cell.path) in lines[0] and "No space left on device" in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert cell.status()["state"] == "failed"


# ---------------------------------------------------------------------------------------
# The exhaustive fault test: real processes, kill -9 at every durable step
# ---------------------------------------------------------------------------------------


def cli(script: str, root: Path, *overrides: str, fault: int | None = None, log: Path | None = None):
    env = dict(os.environ)
    env.pop("FLS_FAULT_AT", None)
    if fault is not None:
        env["FLS_FAULT_AT"] = str(fault)
    if log is not None:
        env["FLS_FAULT_LOG"] = str(log)
    return subprocess.run([PYTHON, script, *overrides, f"run_root={root}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def checkpoint_update(root: Path) -> int:
    """The update of the checkpoint a killed training run left (0: none)."""
    path = RunLayout(root).cell("smoke", "breakout", "nature_cnn", 1).checkpoint
    return int(torch.load(path, weights_only=True)["update"]) if path.exists() else 0


def kill_everywhere(tmp_path: Path, name: str, start: Callable[[Path], None], script: str, overrides: tuple[str, ...],
                    results: Callable[[Path], Any], probe: Callable[[Path], Any] | None = None):
    """Run `script` once clean (listing its durable steps), then once killed at each step and
    once more to completion; returns (steps, each re-run's results, the clean run's). With
    `probe`, each re-run's results come as (what probe read after the kill, results)."""
    clean = tmp_path / f"{name}_clean"
    start(clean)
    log = tmp_path / f"{name}.log"
    res = cli(script, clean, *overrides, log=log)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = log.read_text().splitlines()
    reruns = []
    for n in range(1, len(steps) + 1):
        root = tmp_path / f"{name}_{n}"
        start(root)
        killed = cli(script, root, *overrides, fault=n)
        assert killed.returncode == -9, (n, steps[n - 1], killed.stderr[-2000:])
        seen = probe(root) if probe else None
        again = cli(script, root, *overrides)
        assert again.returncode == 0, (n, steps[n - 1], again.stderr[-3000:])
        reruns.append((seen, results(root)) if probe else results(root))
    return steps, reruns, results(clean)


@pytest.mark.slow
def test_every_write_of_a_cell_killed_for_real(smoke_runs, atari_head_sample, tmp_path):
    # training: the outcome depends only on the last checkpoint on disk when the kill came: none
    # or the last (the clean run's results), or one in between (the results of a run preempted there)
    def fresh(root: Path) -> None:
        root.mkdir()

    def trained(root: Path):
        cell = RunLayout(root).cell("smoke", "breakout", "nature_cnn", 1)
        return training_results(cell)

    steps, reruns, clean = kill_everywhere(tmp_path, "train", fresh, "src/train.py", TRAIN, trained,
                                           probe=checkpoint_update)
    assert any(" append " in s for s in steps) and any("checkpoint.pt" in s for s in steps)
    by_checkpoint: dict[int, list[Any]] = {}
    for (update, result), step in zip(reruns, steps):
        assert result["status"]["state"] == "done" and [r["update"] for r in result["rows"]] == ["1", "2"], step
        by_checkpoint.setdefault(update, []).append(result)
    assert set(by_checkpoint) == {0, 1, 2}
    for update, group in by_checkpoint.items():
        assert all(same_training(r, group[0]) for r in group), update
        if update in (0, 2):  # none, or the last: the clean run's results exactly
            assert same_training(group[0], clean)
        else:  # rows up to the checkpoint are the clean run's, and what follows is one run's
            assert same(group[0]["rows"][:update], clean["rows"][:update])

    # evaluation, with other settings than the result there (the earlier one kept)
    def evaluated(root: Path) -> None:
        copy_runs(smoke_runs, root)
        res = cli("src/evaluate.py", root, *EVAL, "eval.games=1")
        assert res.returncode == 0, res.stderr[-2000:]

    steps, reruns, clean = kill_everywhere(tmp_path, "eval", evaluated, "src/evaluate.py", (*EVAL, "eval.games=2"),
                                           lambda root: eval_results(mspacman(root, "nature_cnn")))
    assert len(steps) == 3 and all(r == clean for r in reruns), steps  # keep the old, games, summary

    # scoring
    steps, reruns, clean = kill_everywhere(tmp_path, "score", lambda root: copy_runs(smoke_runs, root), "src/saliency.py",
                                           (*SCORE, f"saliency.root={atari_head_sample}"),
                                           lambda root: saliency_results(mspacman(root)))
    assert len(steps) == 2 and all(r == clean for r in reruns), steps


@pytest.mark.slow
def test_overwrite_killed_at_every_write_for_real(tmp_path):
    # a finished, evaluated cell discarded with overwrite=true and trained again: a kill while
    # it is removed or retrained, then the same line again, ends as the clean run ends
    template = tmp_path / "finished"
    assert cli("src/train.py", template, *TRAIN).returncode == 0
    assert cli("src/evaluate.py", template, *TRAIN, "eval.games=1", "eval.num_envs=1", "eval.max_frames=400").returncode == 0
    cell = RunLayout(template).cell("smoke", "breakout", "nature_cnn", 1)
    assert cell.eval_result() is not None

    steps, reruns, clean = kill_everywhere(
        tmp_path, "overwrite", lambda root: shutil.copytree(template, root), "src/train.py", (*TRAIN, "overwrite=true"),
        lambda root: training_results(RunLayout(root).cell("smoke", "breakout", "nature_cnn", 1)))
    removed = [s for s in steps if " remove " in s]
    assert [Path(s.split()[-1]).name for s in removed[:3]] == ["eval", "checkpoint.pt", "status.json"], removed
    assert "eval" not in " ".join(clean["files"])
    assert all(same_training(r, clean) for r in reruns)
