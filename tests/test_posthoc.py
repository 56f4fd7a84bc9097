"""Post-hoc saliency (fls.saliency.posthoc) on real smoke-trained cells and real Atari-HEAD frames:
the maps themselves, then scored beside the model's own map (trials.csv, Table 4) and in videos."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fls.rundir import RunLayout
from fls.saliency import posthoc
from fls.saliency.atari_head import AtariHead
from fls.saliency.gaze import play_trial
from fls.trained_cell import load_model

from conftest import PYTHON, REPO, copy_runs

TRIAL = 593
METHODS_ARG = "saliency.maps=[model,jacobian,integrated_gradients,gradcam,greydanus,greydanus_value]"


@pytest.fixture(scope="module")
def runs(mspacman_smoke_runs, tmp_path_factory) -> Path:
    return copy_runs(mspacman_smoke_runs, tmp_path_factory.mktemp("posthoc") / "runs")


def model_of(runs: Path, name: str):
    return load_model(RunLayout(runs).cell("smoke", "mspacman", name, 1), torch.device("cpu")).model


@pytest.fixture(scope="module")
def stacks(atari_head_sample: Path) -> torch.Tensor:
    """Four real processed stacks of the sample trial, as the scoring plays them."""
    trial = AtariHead(atari_head_sample).load(TRIAL)
    frames = [f.stack for f, _ in zip(play_trial(trial), range(40))][::10]
    return torch.from_numpy(np.stack(frames))


@pytest.mark.parametrize("name", ["nature_cnn", "sparse_fls"])
def test_every_method_draws_a_finite_map_of_the_input_grid(runs: Path, stacks: torch.Tensor, name: str):
    model = model_of(runs, name)
    for method in posthoc.MAPS:
        if method == "model" and name == "nature_cnn":
            assert posthoc.needs(method, model) == "nature_cnn has no attention map"
            with pytest.raises(ValueError, match="no attention map"):
                posthoc.draw(model, stacks, method)
            continue
        maps = posthoc.draw(model, stacks, method)
        assert maps.shape == (4, 84, 84) and maps.dtype == torch.float32, method
        assert torch.isfinite(maps).all() and (maps >= 0).all(), method
        assert (maps.flatten(1).amax(1) > 0).all(), f"{method}: an all-zero map"


def test_the_gradient_map_is_the_finite_difference_of_the_chosen_logit(runs: Path, stacks: torch.Tensor):
    model = model_of(runs, "nature_cnn").double()
    obs = stacks[:1]
    saliency = posthoc.draw(model, obs, "jacobian")[0].double()
    frames = obs.double() / 255.0
    with torch.no_grad():
        action = int(model.forward_frames(frames)[0].argmax())
    flat = saliency.flatten()
    pixels = [divmod(int(i), 84) for i in flat.argsort(descending=True)[:3]] + [(10, 70), (60, 20)]
    h = 1e-6
    for y, x in pixels:
        slopes = []
        for c in range(4):
            up, down = frames.clone(), frames.clone()
            up[0, c, y, x] += h
            down[0, c, y, x] -= h
            with torch.no_grad():
                slope = (model.forward_frames(up)[0][0, action] - model.forward_frames(down)[0][0, action]) / (2 * h)
            slopes.append(abs(float(slope)))
        assert float(saliency[y, x]) == pytest.approx(max(slopes), rel=1e-4, abs=1e-9), (y, x)
    assert float(saliency.max()) > 0


def test_the_greydanus_map_is_zero_where_the_model_does_not_look(runs: Path, stacks: torch.Tensor):
    model = model_of(runs, "nature_cnn")
    keep = torch.ones(1, 1, 84, 84)
    keep[..., :42] = 0  # the model never sees the left half of the screen

    def blind(frames: torch.Tensor):
        return model.forward_frames(frames * keep)[:2]

    for head in ("policy", "value"):
        maps = posthoc.greydanus(blind, stacks.float() / 255.0, head)
        # a mask reaches 4 sigma + 1 = 21 pixels from its grid point: grid points at x <= 20
        # perturb nothing the model sees, and the map between them is zero (to the rounding
        # of a batch of 289 stacks against a batch of 4: about 1e-9 of the map's peak)
        peak = maps.flatten(1).amax(1)
        assert (peak > 0).all() and (maps[..., 42:].flatten(1).amax(1) == peak).all(), head
        assert (maps[..., :21].flatten(1).amax(1) <= 1e-6 * peak).all(), head


def test_greydanus_perturbs_with_their_masks():
    masks = posthoc.perturbation_masks(5, 5.0)
    assert masks.shape == (17 * 17, 84, 84)
    centre = 8 * 17 + 8  # the grid point (40, 40)
    assert masks.max(axis=(1, 2)).tolist() == [1.0] * len(masks)
    assert masks[centre, 40, 40] == 1 and np.unravel_index(masks[centre].argmax(), (84, 84)) == (40, 40)
    assert masks[centre, 40, 62] == 0 and masks[centre, 40, 61] > 0  # truncated at 4 sigma (+ the disk's pixel)


def test_posthoc_maps_are_scored_beside_the_models_own(runs: Path, atari_head_sample: Path):
    res = subprocess.run([PYTHON, "src/saliency.py", "-m", "experiment=smoke", "game=mspacman",
                          "model=sparse_fls,nature_cnn", f"run_root={runs}", f"saliency.root={atari_head_sample}",
                          METHODS_ARG, "saliency.max_frames=6", "saliency.preset=posthoc", "saliency.sauc_splits=5"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for name, own in (("sparse_fls", ["model"]), ("nature_cnn", [])):
        trials = pd.read_csv(RunLayout(runs).cell("smoke", "mspacman", name, 1).saliency_trials)
        assert sorted(trials["map"]) == sorted([*own, *posthoc.METHODS, "center", "uniform"]), name
        drawn = trials[trials["map"].isin(posthoc.MAPS)]
        assert (drawn["frames"] == 6).all() and np.isfinite(drawn[["nss", "kl", "sauc"]].to_numpy(float)).all(), name
    assert "nature_cnn has no attention map; not scoring saliency.maps=model" in res.stdout + res.stderr

    res = subprocess.run([PYTHON, "-m", "analysis", "table4", "--study", "smoke", "--run-root", str(runs),
                          "--preset", "posthoc"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = RunLayout(runs).analysis_dir("smoke")
    table = (out / "table4.md").read_text()
    for row in ("Sparse FLS", "Sparse FLS · Greydanus", "Nature CNN · Jacobian", "Nature CNN · Grad-CAM",
                "Nature CNN · Integrated Gradients", "Nature CNN · Greydanus (value)", "Center prior †"):
        assert re.search(rf"^\| {re.escape(row)} +\|", table, re.M), row
    stats = pd.read_csv(out / "table4.csv")
    assert {"nature_cnn/greydanus", "sparse_fls/jacobian"} <= set(stats["row"])


@pytest.mark.parametrize("overrides, complaint", [
    (["saliency.maps=[model,lime]"], "saliency.maps=lime: expected one of model, jacobian"),
    (["saliency.posthoc.ig_steps=1"], "saliency.posthoc.ig_steps=1: expected an integer >= 2"),
    (["saliency.posthoc.greydanus.blur_sigma=0"], "saliency.posthoc.greydanus.blur_sigma=0: expected a positive"),
    (["saliency.maps=[]", "saliency.baselines=[]"], "nothing to score"),
])
def test_bad_posthoc_settings_are_refused_in_one_line(runs: Path, atari_head_sample: Path, overrides, complaint):
    res = subprocess.run([PYTHON, "src/saliency.py", "experiment=smoke", "game=mspacman", "model=nature_cnn",
                          f"run_root={runs}", f"saliency.root={atari_head_sample}", *overrides],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and complaint in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_video_overlays_any_method(runs: Path):
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", "game=mspacman", "model=nature_cnn",
                          f"run_root={runs}", "video=true", "eval.video.map=gradcam", "eval.video.max_frames=60",
                          "eval.video.sheet_frames=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = RunLayout(runs).cell("smoke", "mspacman", "nature_cnn", 1).video_dir("mspacman", "gradcam")
    record = json.loads((out / "video.json").read_text())
    assert record["map"] == "gradcam" and record["games"][0]["map_max"] > 0
    assert (out / "game_0.mp4").stat().st_size > 0 and (out / "contact_sheet.png").exists()
    bad = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", "game=mspacman", "model=nature_cnn",
                          f"run_root={runs}", "video=true", "eval.video.map=lime"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "eval.video.map=lime: expected one of model, jacobian" in bad.stderr


def test_figure5_shows_each_models_maps_on_a_real_frame_with_the_fixations(runs: Path):
    res = subprocess.run([PYTHON, "-m", "analysis", "fig5", "--study", "smoke", "--run-root", str(runs),
                          "--maps", "model,greydanus"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = RunLayout(runs).analysis_dir("smoke")
    drawn = pd.read_csv(out / "fig5.csv")
    assert sorted(zip(drawn["model"], drawn["map"])) == [("nature_cnn", "greydanus"), ("sparse_fls", "greydanus"),
                                                         ("sparse_fls", "model")]
    assert (drawn["trial"] == TRIAL).all() and (drawn["gaze_points"] > 0).all() and (drawn["map_peak"] > 0).all()
    from PIL import Image

    width, height = Image.open(out / "fig5.png").size
    assert (width, height) == (3 * 200, 290)  # one row (Ms. Pac-Man), three panels
    assert (out / "fig5.svg").exists()
    bad = subprocess.run([PYTHON, "-m", "analysis", "fig5", "--study", "smoke", "--run-root", str(runs),
                          "--maps", "model,lime"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --maps lime: expected some of model, jacobian, integrated_gradients, gradcam, greydanus, greydanus_value")


def test_figure4_replays_each_cell_and_draws_two_frames_per_map(runs: Path):
    res = subprocess.run([PYTHON, "-m", "analysis", "fig4", "--study", "smoke", "--run-root", str(runs),
                          "--games", "mspacman", "--models", "sparse_fls,nature_cnn", "--maps", "model,gradcam",
                          "--replay-steps", "90"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nature CNN: nature_cnn has no attention map; --maps model skipped" in res.stdout
    out = RunLayout(runs).analysis_dir("smoke")
    drawn = pd.read_csv(out / "fig4.csv")
    assert sorted(zip(drawn["model"], drawn["map"])) == [("nature_cnn", "gradcam")] * 2 + [
        ("sparse_fls", "gradcam")] * 2 + [("sparse_fls", "model")] * 2
    assert (drawn["replay_seed"] == 1_000_000_000 + 1000).all()  # the cell's evaluation seed
    first, second = drawn[drawn["model"] == "sparse_fls"]["agent_step"].iloc[:2]
    # 1/3 and 2/3 of a replay cut at 90 x 4 frames (the no-op start takes some of them)
    assert 20 < first < second < 90 and abs(second - 2 * first) <= 1
    from PIL import Image

    assert Image.open(out / "fig4.png").size == (6 * 200, 290)  # one game, six panels
    # replayed with a fixed seed: the same frames again
    again = subprocess.run([PYTHON, "-m", "analysis", "fig4", "--study", "smoke", "--run-root", str(runs),
                            "--games", "mspacman", "--models", "sparse_fls", "--maps", "model", "--replay-steps", "90"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    redrawn = pd.read_csv(out / "fig4.csv")
    pd.testing.assert_frame_equal(redrawn, drawn[(drawn["model"] == "sparse_fls") & (drawn["map"] == "model")]
                                  .reset_index(drop=True))
