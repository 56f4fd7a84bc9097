"""src/saliency.py end to end: real tiny trained cells scored on the real Atari-HEAD sample."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.load import TRIAL_COLUMNS
from fls.saliency.atari_head import AtariHead
from fls.trained_cell import load_model
from fls.saliency.gaze import RAW_SHAPE, fixation_map, play_trial
from fls.saliency.gaze import processed_indices
from fls.saliency.metrics import center_bias, kl_divergence, nss, upscale_saliency
from fls.rundir import RunLayout

from conftest import PYTHON, REPO, copy_runs

TRIAL = 593  # the sample's Ms. Pac-Man trial: 400 raw frames, 100 processed frames


def metrics_cli(run_root: Path, root: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "src/saliency.py", *(["-m"] if multirun else []), "experiment=smoke", "game=mspacman",
           f"run_root={run_root}", f"saliency.root={root}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(mspacman_smoke_runs, tmp_path_factory) -> Path:
    """This module's copy of the session's two tiny Ms. Pac-Man cells (sparse_fls, nature_cnn)."""
    return copy_runs(mspacman_smoke_runs, tmp_path_factory.mktemp("scoring") / "runs")


@pytest.fixture(scope="module")
def scored(trained: Path, atari_head_sample: Path) -> Path:
    res = metrics_cli(trained, atari_head_sample, "model=sparse_fls,nature_cnn", multirun=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return trained


def cell(root: Path, model: str = "sparse_fls"):
    return RunLayout(root).cell("smoke", "mspacman", model, 1)


def test_trials_csv_has_the_model_and_baselines(scored: Path):
    trials = pd.read_csv(cell(scored).saliency_trials)
    assert list(trials.columns) == TRIAL_COLUMNS  # what analysis.load reads
    assert sorted(trials["map"]) == ["center", "model", "uniform"]
    assert (trials["trial"] == TRIAL).all() and (trials["frames"] == 100).all()
    assert (trials[["resolution", "alignment"]].drop_duplicates().values == [["210x160", "spec"]]).all()
    model = trials.set_index("map").loc["model"]
    assert model["nss_frames"] == model["kl_frames"] == model["sauc_frames"] == 100  # gaze on every frame
    assert np.isfinite(model[["nss", "kl", "sauc"]].astype(float)).all()
    assert 0 < model["sauc"] < 1 and model["kl"] > 0
    flat = trials.set_index("map").loc["uniform"]
    # NSS and sAUC are undefined on a constant map: no frame counts, and no number
    assert flat["nss_frames"] == flat["sauc_frames"] == 0 and np.isnan(flat["nss"]) and np.isnan(flat["sauc"])
    assert flat["kl_frames"] == 100 and flat["kl"] > 0
    status_step = cell(scored).status()["global_step"]
    assert (trials["checkpoint_global_step"] == status_step).all()


def test_a_model_without_attention_scores_the_baselines_only(scored: Path):
    trials = pd.read_csv(cell(scored, "nature_cnn").saliency_trials)
    assert sorted(trials["map"]) == ["center", "uniform"]
    # the baselines do not depend on the model: the same numbers in both cells
    other = pd.read_csv(cell(scored).saliency_trials)
    pd.testing.assert_frame_equal(trials.set_index("map")[["nss", "kl", "sauc"]],
                                  other[other["map"] != "model"].set_index("map")[["nss", "kl", "sauc"]])


def test_per_frame_results_match_a_direct_computation(scored: Path, atari_head_sample: Path):
    """The pipeline (preprocessing, model map, upscaling, gaze union) recomputed by hand on a few frames."""
    frames = pd.read_parquet(cell(scored).saliency_frames(TRIAL, "spec", "210x160"))
    assert len(frames) == 300 and frames["frame"].iloc[:100].tolist() == list(range(0, 400, 4))
    model = load_model(cell(scored), torch.device("cpu")).model
    trial = AtariHead(atari_head_sample).load(TRIAL)
    played = {f.index: f for f in play_trial(trial) if f.index in (0, 40, 200, 396)}
    center = center_bias(RAW_SHAPE, 0.25)
    for index, frame in played.items():
        with torch.no_grad():
            saliency = upscale_saliency(model.saliency(torch.from_numpy(frame.stack[None]))[0].numpy(), RAW_SHAPE)
        fixations = fixation_map(frame.gaze, RAW_SHAPE)
        row = frames[(frames["frame"] == index) & (frames["map"] == "model")].iloc[0]
        assert row["gaze_points"] == fixations.sum()
        assert row["nss"] == pytest.approx(nss(saliency, fixations), rel=1e-4)
        assert row["kl"] == pytest.approx(kl_divergence(saliency, fixations, sigma=5.0), rel=1e-4)
        base = frames[(frames["frame"] == index) & (frames["map"] == "center")].iloc[0]
        assert base["nss"] == pytest.approx(nss(center, fixations), rel=1e-9)
    # a trial row is the mean over defined frames of its per-frame rows
    trials = pd.read_csv(cell(scored).saliency_trials).set_index("map")
    for name in ("model", "center"):
        assert trials.loc[name, "sauc"] == pytest.approx(frames[frames["map"] == name]["sauc"].mean(), rel=1e-5)


def test_reruns_are_cached_and_other_settings_add_rows(scored: Path, atari_head_sample: Path):
    target = cell(scored)
    spec_file = target.saliency_frames(TRIAL, "spec", "210x160")
    before = spec_file.stat().st_mtime_ns
    res = metrics_cli(scored, atari_head_sample, "model=sparse_fls", "saliency.resolutions=[210x160,84x84]",
                      "saliency.frame_alignments=[spec,paper]")
    assert res.returncode == 0, res.stderr[-2000:]
    assert spec_file.stat().st_mtime_ns == before  # cached: not recomputed
    trials = pd.read_csv(target.saliency_trials)
    assert len(trials) == 3 * 2 * 2
    paper = trials[(trials["alignment"] == "paper") & (trials["map"] == "model") & (trials["resolution"] == "210x160")].iloc[0]
    assert paper["frames"] == 100 and paper["nss_frames"] == 99  # the authors' indexing: no gaze for frame 0
    # the same request again computes nothing: every file of the request is cached
    mtimes = {p: p.stat().st_mtime_ns for p in target.saliency_frames_dir().glob("*/*.parquet")}
    res = metrics_cli(scored, atari_head_sample, "model=sparse_fls", "saliency.resolutions=[210x160,84x84]",
                      "saliency.frame_alignments=[spec,paper]")
    assert res.returncode == 0 and "; 2 cached" in res.stdout  # 2 alignments of 1 trial, both cached
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # a setting that changes the numbers does not replace the preset's results: refused in
    # one line naming it, nothing touched; under a preset name of its own it adds rows
    for changed in ("saliency.sauc_splits=10", "saliency.max_frames=10"):
        res = metrics_cli(scored, atari_head_sample, "model=sparse_fls", changed)
        assert res.returncode == 2
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and f"{changed.split('=')[0]}: " in last and "saliency.preset=<new name>" in last
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes and len(pd.read_csv(target.saliency_trials)) == 12
    res = metrics_cli(scored, atari_head_sample, "model=sparse_fls", "saliency.sauc_splits=10", "saliency.preset=splits10")
    assert res.returncode == 0, res.stderr[-2000:]
    assert spec_file.stat().st_mtime_ns == before
    trials = pd.read_csv(target.saliency_trials)
    assert sorted(trials["preset"].value_counts().items()) == [("spec", 12), ("splits10", 3)]
    # overwrite=true replaces them: trials.csv then has the replaced file's rows of the preset
    res = metrics_cli(scored, atari_head_sample, "model=sparse_fls", "saliency.sauc_splits=10", "saliency.overwrite=true")
    assert res.returncode == 0 and spec_file.stat().st_mtime_ns != before
    assert sorted(pd.read_csv(target.saliency_trials)["preset"].value_counts().items()) == [("spec", 3), ("splits10", 3)]


def test_the_cache_knows_which_data_it_read(trained: Path, atari_head_sample: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs)
    copy = tmp_path / "sample"
    shutil.copytree(atari_head_sample, copy)
    target = cell(runs)
    shutil.rmtree(target.path / "saliency", ignore_errors=True)  # what other tests scored
    res = metrics_cli(runs, copy, "model=sparse_fls")
    assert res.returncode == 0, res.stderr[-2000:]
    first = pd.read_csv(target.saliency_trials)
    spec_file = target.saliency_frames(TRIAL, "spec", "210x160")
    mtime = spec_file.stat().st_mtime_ns

    # another copy of Atari-HEAD whose gaze differs: recomputed, not served from the cache
    labels = next(copy.rglob(f"*{TRIAL}*.txt"))
    text = labels.read_text().splitlines()
    for i in range(1, len(text)):  # every gaze point 8 pixels to the right
        fields = text[i].split(",")
        if len(fields) > 7 and fields[6] != "null":
            fields[6::2] = [f"{float(x) + 8:.2f}" for x in fields[6::2]]
        text[i] = ",".join(fields)
    labels.write_text("\n".join(text) + "\n")
    res = metrics_cli(runs, copy, "model=sparse_fls")
    assert res.returncode == 0, res.stderr[-2000:]
    assert spec_file.stat().st_mtime_ns != mtime
    second = pd.read_csv(target.saliency_trials)
    model = (second["map"] == "model")
    assert not np.allclose(first.loc[model, "nss"], second.loc[model, "nss"])

    # a damaged copy fails instead of answering from the cache
    labels.write_text("\n".join(text[:3]) + "\nnot,a,label")
    res = metrics_cli(runs, copy, "model=sparse_fls")
    assert res.returncode != 0
    assert pd.read_csv(target.saliency_trials).equals(second)


def test_table4_reads_the_results(scored: Path):
    res = subprocess.run([PYTHON, "-m", "analysis", "table4", "--study", "smoke", "--run-root", str(scored)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "MsPacman" in res.stdout and "Sparse FLS" in res.stdout and "Center prior" in res.stdout
    table = pd.read_csv(scored / "smoke" / "analysis" / "table4.csv")
    assert (table[(table["row"] == "sparse_fls") & (table["game"] == "mspacman")]["n"] >= 1).all()


@pytest.mark.parametrize(("overrides", "complaint"), [
    (["game=beamrider"], "game=beamrider: was never recorded in Atari-HEAD"),
    (["saliency.root=/nonexistent"], "saliency.root=/nonexistent"),
    (["saliency.resolutions=[100x100]"], "saliency.resolutions=100x100: expected one of 210x160, 84x84"),
    (["saliency.frame_alignments=[late]"], "saliency.frame_alignments=late: expected one of spec, paper"),
    (["saliency.trials=[12345]"], "trial 12345 is not listed"),
    (["saliency.sauc_splits=0"], "saliency.sauc_splits=0: must be a positive integer"),
    (["saliency.kl_sigma_84x84=0"], "saliency.kl_sigma_84x84=0: must be a positive number of pixels"),
])
def test_bad_settings_are_refused_in_one_line(trained: Path, atari_head_sample: Path, overrides, complaint):
    res = metrics_cli(trained, atari_head_sample, "model=sparse_fls", *overrides)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and complaint in lines[0], res.stderr


def test_a_sweep_with_an_unrecorded_game_is_refused_before_any_cell_runs(trained: Path, atari_head_sample: Path):
    res = metrics_cli(trained, atari_head_sample, "game=mspacman,beamrider", "model=sparse_fls", multirun=True)
    assert res.returncode == 2 and "game=beamrider" in res.stderr
    assert "trial(s) of" not in res.stdout + res.stderr  # no cell was scored


def test_an_untrained_cell_fails_naming_its_path_and_leaves_nothing(trained: Path, atari_head_sample: Path):
    res = metrics_cli(trained, atari_head_sample, "model=dense_fls")
    missing = cell(trained, "dense_fls").path
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: {missing}: no checkpoint, nothing to use (not trained yet)"]
    assert not missing.exists()


def test_a_broken_archive_fails_cleanly_and_keeps_earlier_results(tmp_path: Path, trained: Path, atari_head_sample: Path):
    """A generated broken copy of the sample: the error names the file, earlier results stay."""
    data = tmp_path / "atari_head"
    shutil.copytree(atari_head_sample, data)
    for path in data.rglob("*"):
        os.chmod(path, stat.S_IRWXU)
    runs = tmp_path / "runs"
    shutil.copytree(trained / "smoke" / "mspacman" / "sparse_fls", runs / "smoke" / "mspacman" / "sparse_fls",
                    ignore=shutil.ignore_patterns("saliency"))
    res = metrics_cli(runs, data, "model=sparse_fls", "saliency.max_frames=20")
    assert res.returncode == 0, res.stderr[-2000:]
    target = cell(runs)
    good = target.saliency_trials.read_bytes()
    assert pd.read_csv(target.saliency_trials)["frames"].eq(20).all()

    archive = next(data.rglob("*.tar.bz2"))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 3])
    res = metrics_cli(runs, data, "model=sparse_fls", "saliency.overwrite=true")
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and archive.name in lines[0], res.stderr
    assert target.saliency_trials.read_bytes() == good
    frame_files = [p.relative_to(target.saliency_frames_dir()) for p in target.saliency_frames_dir().rglob("*") if p.is_file()]
    assert frame_files == [Path("spec", f"trial_{TRIAL}_spec_210x160.parquet")]  # no temporary files left


# The authors' computation: saliency=paper

def paper_release(atari_head_sample: Path, tmp_path: Path) -> Path:
    """The real sample trial as a regular trial of a v4 download (the release the paper used
    had it among the regular ones), beside a generated later highscore trial."""
    from test_atari_head import v4_row, write_trial, write_v4_meta

    root = tmp_path / "atari_head"
    place = root / "ms_pacman"
    place.mkdir(parents=True)
    for f in (atari_head_sample / "ms_pacman" / "highscore").iterdir():
        shutil.copy(f, place / f.name)
    write_v4_meta(root, [v4_row("ms_pacman", TRIAL), v4_row("ms_pacman_highscore", 8)])
    write_trial(place / "highscore", 8, n=12)
    return root


def test_paper_preset_reproduces_the_authors_computation(trained: Path, atari_head_sample: Path, tmp_path: Path):
    root = paper_release(atari_head_sample, tmp_path)
    res = metrics_cli(trained, root, "model=sparse_fls", "saliency=paper")
    assert res.returncode == 0, res.stderr[-2000:]
    target = cell(trained)
    trials = pd.read_csv(target.saliency_trials)
    paper = trials[trials["preset"] == "paper"]
    # the highscore trial (a later recording) is left out; their alignment is used
    assert set(paper["trial"]) == {TRIAL} and set(paper["alignment"]) == {"paper"}
    frames = pd.read_parquet(target.saliency_frames(TRIAL, "paper", "210x160", preset="paper"))
    model_rows = frames[frames["map"] == "model"].set_index("frame")

    # by hand: paper alignment, zero-filled first stack, maps over the trial's maximum,
    # reflect upscale (scipy's zoom, as skimage's resize(order=1, mode="reflect"))
    from scipy import ndimage

    model = load_model(target, torch.device("cpu")).model
    trial = AtariHead(root).load(TRIAL)
    stacks = list(play_trial(trial, frame_alignment="paper", stack_fill="zeros"))
    assert stacks[0].stack[:3].max() == 0  # zeros, then the first frame
    with torch.no_grad():
        maps = model.saliency(torch.from_numpy(np.stack([f.stack for f in stacks]))).numpy().astype(np.float64)
    maps /= maps.max()
    for f, saliency in zip(stacks, maps):
        if f.index not in (4, 200, 392) or not len(f.gaze):
            continue
        big = ndimage.zoom(saliency, (210 / 84, 160 / 84), order=1, mode="mirror", grid_mode=True)
        fixations = fixation_map(f.gaze, RAW_SHAPE)
        assert model_rows.loc[f.index, "nss"] == pytest.approx(nss(big, fixations), rel=1e-4)
        assert model_rows.loc[f.index, "kl"] == pytest.approx(kl_divergence(big, fixations, sigma=5.0), rel=1e-4)
    assert len(model_rows) == len(processed_indices(len(trial), "paper"))
    # the preset's rows sit beside the default's: Table 4 shows one preset and says which
    res = subprocess.run([PYTHON, "-m", "analysis", "table4", "--study", "smoke", "--run-root", str(trained),
                          "--preset", "paper"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Preset paper: the authors' computation" in res.stdout


def test_paper_preset_on_the_bundled_sample_has_no_trial_and_says_why(trained: Path, atari_head_sample: Path):
    # the bundled trial is a v4 highscore recording, which the paper's release did not have
    res = metrics_cli(trained, atari_head_sample, "model=sparse_fls", "saliency=paper")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "highscore" in lines[0], res.stderr
