"""The saliency checks end to end (issue 33): src/saliency.py saliency.checks=[...] on real tiny
trained cells (the session's Ms. Pac-Man smoke cells) and the real Atari-HEAD sample, cached
and refused by the gaze scores' rules; `python -m analysis checks` and `over_training` on them;
over_training's map-on-the-ball measure on a real Breakout zoo agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from analysis.__main__ import main as analysis_main
from fls import checkpoint
from fls.errors import ConfigError
from fls.gaze_scores import read_key
from fls.rundir import RunLayout
from fls.saliency import sanity
from fls import saliency_checks
from fls.trained_cell import load_model
from fls.zoo.entry import install

from conftest import PYTHON, REPO, copy_runs

TRIAL = 593  # the sample's Ms. Pac-Man trial
FAST = ("saliency.check.frames=3", "saliency.check.every=2", "saliency.check.start=0", "saliency.check.steps=4",
        "saliency.check.maps=[model,jacobian]", "saliency.max_frames=4")
ALL = "saliency.checks=[randomization,deletion,insertion]"


def saliency_cli(run_root: Path, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "src/saliency.py", "experiment=smoke", "game=mspacman", "model=sparse_fls", f"run_root={run_root}",
           f"saliency.root={root}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def cell(root: Path, model: str = "sparse_fls"):
    return RunLayout(root).cell("smoke", "mspacman", model, 1)


@pytest.fixture(scope="module")
def checked(mspacman_smoke_runs, tmp_path_factory, atari_head_sample: Path) -> Path:
    root = copy_runs(mspacman_smoke_runs, tmp_path_factory.mktemp("checks") / "runs")
    res = saliency_cli(root, atari_head_sample, ALL, *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def mtimes(c) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in c.saliency_check_files()}


def test_the_checks_write_every_map_and_baseline_per_frame_on_both_sources(checked: Path):
    c = cell(checked)
    names = {p.relative_to(c.saliency_checks_dir()).as_posix() for p in c.saliency_check_files()}
    expected = {f"{source}/randomization_{m}.parquet" for source in saliency_checks.SOURCES for m in ("model", "jacobian")}
    expected |= {f"{source}/{check}_{m}.parquet" for source in saliency_checks.SOURCES for check in saliency_checks.FIDELITY
                 for m in ("model", "jacobian", "random", "center")}
    assert names == expected
    results = saliency_checks.read_cell(c)
    rows = results["randomization"]
    stages = [s.name for s in sanity.stages(_model(c))]
    per_map = rows[(rows["map"] == "jacobian") & (rows["source"] == "games")]
    assert list(per_map.drop_duplicates("stage_index")["stage"]) == [saliency_checks.TRAINED, *stages]
    assert len(per_map) == 3 * (len(stages) + 1)
    trained = per_map[per_map["stage"] == saliency_checks.TRAINED]
    assert (trained[list(sanity.SIMILARITIES)] == 1).all().all()
    # the probe's maps are kept for the figure: one per stage, on frame 0
    assert per_map["probe"].notna().sum() == len(stages) + 1 and (per_map[per_map["probe"].notna()]["frame"] == 0).all()
    # the frames: greedy evaluation games at steps 0, 2, 4 and the sample's trial at processed frames 0, 2, 4
    games = per_map[per_map["stage"] == saliency_checks.TRAINED]
    assert list(games["step"]) == [0, 2, 4] and (games["origin"] == 0).all()
    head = rows[(rows["source"] == "atari_head") & (rows["stage"] == saliency_checks.TRAINED) & (rows["map"] == "model")]
    assert list(head["step"]) == [0, 8, 16] and (head["origin"] == TRIAL).all()
    fid = results["deletion"]
    assert set(fid["map"]) == {"model", "jacobian", "random", "center"}
    one = fid[(fid["map"] == "model") & (fid["source"] == "games")]
    assert len(one) == 3 and all(len(k) == 5 for k in one["kl"])  # steps=4: 5 points
    assert np.allclose([k[0] for k in one["kl"]], 0)  # nothing deleted: the clean policy
    # the greedy action the curves follow is the model's own on those frames
    assert set(one["action"]) <= set(range(9))
    # the cell's gaze scores were written too (Ms. Pac-Man has trials under saliency.root)
    assert c.saliency_trials.is_file()


def _model(c):
    return load_model(c, torch.device("cpu")).model


def test_a_rerun_reuses_the_results_and_changed_settings_follow_the_gaze_scores_rule(checked: Path,
                                                                                      atari_head_sample: Path):
    c = cell(checked)
    before = mtimes(c)
    res = saliency_cli(checked, atari_head_sample, ALL, *FAST)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "20 result(s) cached" in res.stdout + res.stderr
    assert mtimes(c) == before
    # a setting that changes the numbers: refused naming it, nothing touched (in one line: fls.cli)
    where = (f"run_root={checked}", f"saliency.root={atari_head_sample}", "model=sparse_fls", *FAST)
    with pytest.raises(ConfigError) as e:
        saliency_checks.run_checks(compose_saliency(*where, ALL, "saliency.check.top_k=0.2"), c)
    assert "saliency.check.top_k: 0.1 -> 0.2" in str(e.value) and "saliency.overwrite=true" in str(e.value)
    assert mtimes(c) == before
    # overwrite=true replaces them
    saliency_checks.run_checks(compose_saliency(*where, "saliency.checks=[randomization]", "saliency.check.top_k=0.2",
                                       "saliency.overwrite=true"), c)
    path = c.saliency_check("games", "randomization", "model")
    assert mtimes(c)[path] != before[path] and read_key(path)["settings"]["top_k"] == 0.2
    untouched = c.saliency_check("games", "deletion", "model")
    assert mtimes(c)[untouched] == before[untouched]


def compose_saliency(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("saliency", overrides=["experiment=smoke", "game=mspacman", *overrides])


@pytest.mark.parametrize(("overrides", "complaint"), [
    (["saliency.checks=[randomisation]"], "saliency.checks=randomisation: expected some of randomization, deletion, insertion"),
    ([ALL, "saliency.check.frames=0"], "saliency.check.frames=0: expected an integer >= 1"),
    ([ALL, "saliency.check.maps=[lime]"], "saliency.check.maps=lime: expected some of model, jacobian"),
    ([ALL, "saliency.check.sources=[]"], "saliency.check.sources=[]: give at least one of games, atari_head"),
    ([ALL, "saliency.check.top_k=0"], "saliency.check.top_k=0: expected a share of the pixels in (0, 1]"),
    ([ALL, "saliency.check.blur_sigma=-1"], "saliency.check.blur_sigma=-1: expected a positive number of pixels"),
    ([ALL, "saliency.check.steps=two"], "saliency.check.steps=two"),
])
def test_bad_checks_or_settings_are_one_line(overrides, complaint):
    with pytest.raises(ConfigError) as e:
        saliency_checks.check_config(compose_saliency(*overrides))
    assert complaint in str(e.value) and "\n" not in str(e.value)


def test_a_bad_check_is_refused_before_anything_is_written(mspacman_smoke_runs, tmp_path: Path, atari_head_sample: Path):
    root = copy_runs(mspacman_smoke_runs, tmp_path / "runs")
    before = sorted(p for p in root.rglob("*"))
    res = saliency_cli(root, atari_head_sample, "saliency.checks=[randomization,sanity]")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: saliency.checks=sanity: expected some of randomization, "
                                               "deletion, insertion"]
    assert sorted(p for p in root.rglob("*")) == before


def test_checks_run_on_a_game_atari_head_never_recorded():
    cfg = compose_saliency("game=beamrider", ALL)
    saliency_checks.check_config(cfg)  # the gaze scores alone refuse it (tests/test_saliency_scoring.py)
    assert not saliency_checks.scores_gaze(cfg)
    assert saliency_checks.atari_head_plan(cfg, 3, 1, 0) is None


def test_the_analysis_draws_the_table_and_figures(checked: Path, capsys):
    assert analysis_main(["checks", "--study", "smoke", "--run-root", str(checked), "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "MsPacman, frames of evaluation games" in out and "MsPacman, frames of Atari-HEAD" in out
    table = pd.read_csv(checked / "smoke" / "analysis" / "checks.csv")
    own = table[(table["map"] == "model") & (table["source"] == "games") & (table["measure"] == "spearman")].iloc[0]
    assert own["frames"] == 3 and own["lower"] <= own["value"] <= own["upper"]
    baselines = table[table["map"].isin(["random", "center"])]
    assert set(baselines["check"]) == {"deletion", "insertion"}  # no randomisation of a baseline order
    # the values are the per-frame results' means
    rows = saliency_checks.full_randomization(saliency_checks.read_cell(cell(checked))["randomization"])
    expected = rows[(rows["map"] == "model") & (rows["source"] == "games")]["spearman"].mean()
    assert own["value"] == pytest.approx(expected)
    # full randomisation is each cell's own last stage: a model with a shorter cascade keeps its rows
    shorter = saliency_checks.read_cell(cell(checked))["randomization"]
    last = shorter["stage_index"][shorter["cascade"]].max()
    both = pd.concat([shorter.assign(model="a"), shorter[shorter["stage_index"] != last].assign(model="b")])
    full = saliency_checks.full_randomization(both)
    assert set(full["model"]) == {"a", "b"}
    assert (full[full["model"] == "b"]["stage_index"] == last - 1).all()
    analysis = checked / "smoke" / "analysis"
    for name in ("checks_randomization_mspacman_sparse_fls", "checks_fidelity_mspacman"):
        assert (analysis / f"{name}.png").stat().st_size > 10_000 and (analysis / f"{name}.csv").is_file()


def test_over_training_scores_each_snapshot_against_gaze(mspacman_smoke_runs, tmp_path: Path, atari_head_sample: Path,
                                                         capsys):
    root = copy_runs(mspacman_smoke_runs, tmp_path / "runs")
    assert list(cell(root).snapshots()) == [0, 1, 2]  # snapshots=3 of the fixture's 2 updates
    assert analysis_main(["over_training", "--study", "smoke", "--run-root", str(root), "--maps", "model",
                          "--probe-frames", "4", "--atari-head", str(atari_head_sample)]) == 0
    data = pd.read_csv(root / "smoke" / "analysis" / "over_training_mspacman_sparse_fls.csv")
    assert list(data["update"]) == [0, 1, 2] and set(data["measure"]) == {"nss"} and (data["frames"] == 4).all()
    # nature_cnn draws no own map: no figure for it
    assert not (root / "smoke" / "analysis" / "over_training_mspacman_nature_cnn.png").exists()
    # the snapshots' maps differ: NSS changes with the weights
    assert data["value"].nunique() == 3


def test_over_training_finds_when_the_first_conv_map_follows_the_ball(tmp_path: Path):
    """A Breakout cell with two snapshots: a fresh model's weights and the zoo agent's, whose own
    map follows the ball (zoo/README.md): on the ball above its control only once trained."""
    c = install("breakout_sparse_fls_first_conv", tmp_path)
    state = checkpoint.load(c.checkpoint)
    facts = {k: state[k] for k in ("model_name", "num_actions", "game")}
    trained = _model(c)
    fresh = sanity.fresh_model(trained, seed=0)
    c.snapshot(0).parent.mkdir(parents=True)
    c.snapshot(0).write_bytes(checkpoint.encode_snapshot(fresh.state_dict(), update=0, global_step=0, **facts))
    c.snapshot(state["update"]).write_bytes(checkpoint.encode_snapshot(
        trained.state_dict(), update=state["update"], global_step=state["global_step"], **facts))
    assert analysis_main(["over_training", "--study", "zoo", "--run-root", str(tmp_path), "--maps", "model",
                          "--probe-frames", "48"]) == 0
    data = pd.read_csv(tmp_path / "zoo" / "analysis" / "over_training_breakout_sparse_fls_first_conv.csv")
    value = data.set_index(["update", "measure"])["value"]
    last = int(state["update"])
    assert value[last, "on_ball"] > value[last, "on_ball_control"] + 0.15
    assert value[last, "on_ball"] > value[0, "on_ball"]
