"""Interval estimates (analysis/intervals.py, scores.py, stats.py, efficiency.py; the CIs of
Tables 3-5): known answers on synthetic score arrays, then a real small study.

The real study is the session's two Ms. Pac-Man smoke cells (conftest `mspacman_smoke_runs`,
sparse_fls and nature_cnn, seed 1), copied, with seed 2 of both trained beside them (256
steps), every cell evaluated on 2 short games and Sparse FLS scored on the bundled Atari-HEAD
trial (20 frames): one game, one trial, two seeds, all real files of the trainer, the
evaluator and the scorer.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import efficiency, stats, table3, table4, table5
from analysis.__main__ import main
from analysis.grid import Grid
from analysis.intervals import Bootstrap, estimate, fraction_above, iqm, probability_of_improvement, rliable
from analysis.load import FileSource
from analysis.paper import PaperValues
from analysis.render import Skipped
from analysis.scores import reference_scores, run_matrix, seed_means
from analysis.wandb_source import WandbSource
from fls.rundir import RunLayout

from conftest import PYTHON, REPO, copy_runs
from test_analysis import STUDY, StandInApi, stand_in_runs, syn_root, write_eval  # noqa: F401 (syn_root: a fixture)

QUICK = Bootstrap(reps=500, seed=3)


# Known answers on synthetic arrays


def test_iqm_matches_a_hand_computation_and_rliables():
    # 8 values, sorted -50 1 2 3 4 5 6 100: int(8/4) = 2 cut off each end, the mean of 2, 3, 4, 5
    x = np.array([[100.0, 1.0], [3.0, 6.0], [-50.0, 5.0], [4.0, 2.0]])  # 4 runs x 2 games
    assert iqm(x) == 3.5
    # per game, 5 seeds: one cut off each end
    seeds = np.array([[1.0], [2.0], [3.0], [10.0], [100.0]])
    assert iqm(seeds, axis=0).tolist() == [pytest.approx(5.0)]
    assert iqm(np.array([[2.0], [7.0]]), axis=0).tolist() == [4.5]  # 2 or 3 seeds: nothing cut, the mean
    _, metrics, _ = rliable()
    rng = np.random.default_rng(0)
    for shape in [(5, 6), (7, 3), (2, 4), (10, 1)]:
        values = rng.integers(0, 6, shape).astype(float)  # ties included
        assert iqm(values) == pytest.approx(metrics.aggregate_iqm(values))


def test_probability_of_improvement_is_rliables_with_known_answers():
    library, metrics, _ = rliable()
    rng = np.random.default_rng(1)
    for nx, ny, games in [(5, 5, 6), (3, 4, 2), (2, 7, 1)]:
        x = rng.integers(0, 4, (nx, games)).astype(float)  # small integers: many ties
        y = rng.integers(0, 4, (ny, games)).astype(float)
        assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    taus = np.linspace(-1, 5, 13)
    scores = rng.integers(0, 5, (5, 3)).astype(float)
    assert fraction_above(scores, taus).tolist() == pytest.approx(library.score_distributions(scores, taus).tolist())

    # two identical models: P = 0.5 exactly, and the interval holds 0.5
    same = rng.normal(size=(5, 4))
    (point, interval), = estimate({"same": (same, same.copy())}, probability_of_improvement, QUICK).values()
    assert float(point) == 0.5 and interval[0] <= 0.5 <= interval[1]
    # two independent draws of one distribution: P near 0.5, its interval holds 0.5
    a, b = rng.normal(size=(10, 6)), rng.normal(size=(10, 6))
    (point, interval), = estimate({"alike": (a, b)}, probability_of_improvement, QUICK).values()
    assert abs(float(point) - 0.5) < 0.15 and interval[0] <= 0.5 <= interval[1]
    # a model always better (every seed above every seed of the other, on every game): P = 1, CI [1, 1]
    (point, interval), = estimate({"better": (a + 100, b)}, probability_of_improvement, QUICK).values()
    assert float(point) == 1.0 and interval.ravel().tolist() == [1.0, 1.0]
    (point, _), = estimate({"worse": (b, a + 100)}, probability_of_improvement, QUICK).values()
    assert float(point) == 0.0


def test_bootstrap_is_seeded_reproducible_and_configurable():
    x = np.random.default_rng(2).normal(size=(6, 3))
    statistic = lambda s: iqm(s, axis=0)  # noqa: E731
    first = estimate({"k": x}, statistic, QUICK)["k"][1]
    np.random.seed(12345)  # whatever the global generator holds before, the same intervals
    again = estimate({"k": x}, statistic, QUICK)["k"][1]
    assert np.array_equal(first, again)
    other_seed = estimate({"k": x}, statistic, Bootstrap(reps=500, seed=4))["k"][1]
    more_reps = estimate({"k": x}, statistic, Bootstrap(reps=2000, seed=3))["k"][1]
    assert not np.array_equal(first, other_seed) and not np.array_equal(first, more_reps)
    state = np.random.get_state()[1].copy()
    estimate({"k": x}, statistic, QUICK)
    assert np.array_equal(np.random.get_state()[1], state)  # the global generator is left as it was
    with pytest.raises(ValueError, match="--reps 10: expected at least 100"):
        Bootstrap(reps=10)


def test_run_matrix_keeps_the_seeds_every_game_has():
    means = pd.DataFrame({"game": ["a"] * 3 + ["b"] * 2, "model": "m", "seed": [1, 2, 3, 1, 2],
                          "score": [1.0, 2.0, 3.0, 10.0, 20.0], "games": 4})
    matrix, notes = run_matrix(means, "m", ["a", "b"], "score")
    assert matrix.tolist() == [[1.0, 10.0], [2.0, 20.0]]
    assert notes == ["a: seed 3 left out (2 on every game)"]


def test_reference_scores_are_the_papers_games_with_their_source():
    refs = reference_scores()
    assert sorted(refs.index) == sorted(["beamrider", "breakout", "mspacman", "spaceinvaders", "enduro", "seaquest"])
    assert tuple(refs.loc["breakout"]) == (1.7, 30.5) and tuple(refs.loc["seaquest"]) == (68.4, 42054.7)
    header = (REPO / "data" / "reference_scores.csv").read_text()
    assert "Agent57" in header and "arXiv:2003.13350" in header and "dqn_zoo" in header


# A synthetic study of known seed means: five seeds, two games


FIVE = {  # (game, model) -> each seed's game scores; seed means below
    ("breakout", "nature_cnn"): [[1, 1], [2, 2], [3, 3], [10, 10], [100, 100]],  # means 1, 2, 3, 10, 100
    ("breakout", "sparse_fls"): [[40, 60], [50, 50], [60, 40], [70, 70], [80, 80]],
    ("seaquest", "nature_cnn"): [[200], [300], [400], [500], [600]],
    ("seaquest", "sparse_fls"): [[700], [800], [900], [1000], [1100]],
}


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("five")
    layout = RunLayout(root)
    for (game, model), per_seed in FIVE.items():
        for seed, scores in enumerate(per_seed, start=1):
            cell = layout.cell("five", game, model, seed)
            cell.path.mkdir(parents=True)
            cell.write_status(state="done")
            write_eval(cell, [float(s) for s in scores])
    return root


def test_table3_iqm_over_seeds_with_its_interval(five):
    source = FileSource(five, "five")
    artefact = table3.build(source, Grid.of(source.cells()), QUICK)
    row = artefact.data.set_index(["game", "model"]).loc[("breakout", "nature_cnn")]
    assert row["iqm"] == pytest.approx(5.0)  # seed means 1, 2, 3, 10, 100: the mean of 2, 3, 10
    assert row["mean"] == pytest.approx(np.mean([1, 2, 3, 10, 100]))  # the paper's column is still there
    assert 1.0 <= row["iqm_lower"] < 5.0 < row["iqm_upper"] <= 100.0 and row["iqm_seeds"] == 5
    headings = [h for h, _ in artefact.sections]
    assert headings == ["Mean ± std over all games (the paper's)", "IQM over seeds [95% CI]"]
    shown = artefact.sections[1][1].set_index("Model")
    assert shown.loc["Nature CNN", "Breakout"] == f"5.0 [{row['iqm_lower']:.1f}, {row['iqm_upper']:.1f}]"


def test_aggregate_poi_and_profiles_of_two_games(five, capsys):
    assert main(["stats", "--study", "five", "--run-root", str(five), "--reps", "500", "--bootstrap-seed", "3"]) == 0
    out = capsys.readouterr().out
    analysis = RunLayout(five).analysis_dir("five")
    aggregate = pd.read_csv(analysis / "aggregate.csv").set_index(["model", "metric"])
    refs = reference_scores()
    norm = lambda g, s: (s - refs.loc[g, "random"]) / (refs.loc[g, "human"] - refs.loc[g, "random"])  # noqa: E731
    cnn = np.array([[norm("breakout", m), norm("seaquest", s)] for m, s in zip([1, 2, 3, 10, 100], [200, 300, 400, 500, 600])])
    assert aggregate.loc[("nature_cnn", "IQM"), "value"] == pytest.approx(iqm(cnn))
    assert aggregate.loc[("nature_cnn", "Median"), "value"] == pytest.approx(np.median(cnn.mean(axis=0)))
    assert aggregate.loc[("nature_cnn", "Mean"), "value"] == pytest.approx(cnn.mean())
    assert aggregate.loc[("nature_cnn", "Optimality gap"), "value"] == pytest.approx(1 - np.minimum(cnn, 1).mean())
    for _, r in aggregate.iterrows():
        assert r["lower"] <= r["value"] <= r["upper"]
    # Sparse FLS beats Nature CNN on Seaquest in every seed pair; on Breakout its seed means 50, 50, 50, 70, 80
    # beat 1, 2, 3 and 10 but not 100: 20 of 25 pairs
    poi = pd.read_csv(analysis / "poi.csv").set_index(["x", "y"]).loc[("sparse_fls", "nature_cnn")]
    assert poi["p"] == pytest.approx((1.0 + 20 / 25) / 2) and poi["lower"] <= poi["p"] <= poi["upper"]
    assert "| P(Sparse FLS > Nature CNN) | 0.90 |" in out and "Sparse FLS scores higher" in out
    for name in ("aggregate", "poi", "profiles"):
        assert (analysis / f"{name}.png").exists() and (analysis / f"{name}.svg").exists()
    assert "efficiency: no reward curve in study 'five'" in out  # no metrics.csv: said, not drawn
    profiles = pd.read_csv(analysis / "profiles.csv")
    at_zero = profiles[(profiles.model == "sparse_fls") & (profiles.tau == profiles.tau.min())]["fraction"]
    assert at_zero.iloc[0] == 1.0
    with Image.open(analysis / "poi.png") as image:
        assert image.size[0] == 640
    # the same command, the same numbers
    again = RunLayout(five).analysis_dir("five") / "poi.csv"
    before = again.read_text()
    assert main(["poi", "--study", "five", "--run-root", str(five), "--reps", "500", "--bootstrap-seed", "3"]) == 0
    assert again.read_text() == before


def test_one_game_has_no_aggregate_and_one_seed_no_interval(five, capsys):
    assert main(["stats", "--study", "five", "--run-root", str(five), "--seeds", "1", "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "| P(Sparse FLS > Nature CNN) | 1.00 | none (Sparse FLS: 1 seed, Nature CNN: 1 seed) |" in out
    assert "No band (1 seed): Nature CNN, Sparse FLS." in out
    source = FileSource(five, "five")
    shown = table3.build(source, Grid.of(source.cells(), [1]), QUICK).sections[1][1].set_index("Model")
    assert shown.loc["Nature CNN", "Breakout"] == "1.0 (1 seed)"

    means = seed_means(source.eval_games(None))
    built = stats.build_aggregate(means[means.game == "breakout"], Grid.of(source.cells()), QUICK)
    assert isinstance(built[0], Skipped) and "needs 2 or more evaluated games with reference scores; the study has 1 " \
        "(Breakout)" in built[0].reason


def test_pairs_are_checked_before_anything_is_written(five, capsys):
    analysis = RunLayout(five).analysis_dir("five")
    before = {p.name: p.stat().st_mtime_ns for p in analysis.iterdir()} if analysis.exists() else {}
    for args, complaint in (
        (["--pairs", "sparse_fls:dqn"], "error: --pairs: dqn not in the study (its models: nature_cnn, sparse_fls)"),
        (["--pairs", "sparse_fls"], "error: --pairs sparse_fls: expected model:model pairs of two different models, "
                                    "comma-separated (e.g. sparse_fls:dense_fls)"),
        (["--reps", "5"], "error: --reps 5: expected at least 100 bootstrap resamples"),
        (["--bootstrap-seed", "-1"], "error: --bootstrap-seed -1: expected an integer >= 0"),
    ):
        assert main(["stats", "--study", "five", "--run-root", str(five), *args]) == 2
        assert capsys.readouterr().err.strip() == complaint
    after = {p.name: p.stat().st_mtime_ns for p in analysis.iterdir()} if analysis.exists() else {}
    assert after == before  # nothing written


# A real small study


@pytest.fixture(scope="module")
def small(mspacman_smoke_runs, tmp_path_factory) -> Path:
    root = copy_runs(mspacman_smoke_runs, tmp_path_factory.mktemp("stats") / "runs")
    sample = REPO / "data" / "atari_head_sample"
    for command in (
        ["src/train.py", "-m", "experiment=smoke", "game=mspacman", "model=sparse_fls,nature_cnn", "seed=2",
         "total_timesteps=256"],
        ["src/evaluate.py", "-m", "experiment=smoke", "game=mspacman", "model=sparse_fls,nature_cnn", "seed=1,2",
         "eval.games=2", "eval.num_envs=2", "eval.max_frames=2000"],
        ["src/saliency.py", "-m", "experiment=smoke", "game=mspacman", "model=sparse_fls", "seed=1,2",
         f"saliency.root={sample}", "saliency.max_frames=20", "saliency.sauc_splits=5"],
    ):
        res = subprocess.run([PYTHON, *command, f"run_root={root}"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return root


def test_real_study_every_interval_and_what_it_cannot_compute(small):
    res = subprocess.run([PYTHON, "-m", "analysis", "all", "--study", "smoke", "--run-root", str(small), "--reps", "500"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    analysis = RunLayout(small).analysis_dir("smoke")
    source = FileSource(small, "smoke")
    means = seed_means(source.eval_games(None)).set_index(["model", "seed"])["score"]

    # Table 3: IQM of 2 seeds = their mean, its interval between them
    t3 = pd.read_csv(analysis / "table3.csv").set_index("model")
    for model in ("sparse_fls", "nature_cnn"):
        pair = means.loc[model].to_numpy()
        assert t3.loc[model, "iqm"] == pytest.approx(pair.mean()) and t3.loc[model, "iqm_seeds"] == 2
        assert pair.min() - 1e-9 <= t3.loc[model, "iqm_lower"] <= t3.loc[model, "iqm_upper"] <= pair.max() + 1e-9

    # is FLS free: one line, with its interval
    poi = pd.read_csv(analysis / "poi.csv").iloc[0]
    expected = probability_of_improvement(means.loc["sparse_fls"].to_numpy()[:, None],
                                          means.loc["nature_cnn"].to_numpy()[:, None])
    assert (poi["x"], poi["y"], poi["games"]) == ("sparse_fls", "nature_cnn", 1)
    assert poi["p"] == pytest.approx(expected) and poi["lower"] <= poi["p"] <= poi["upper"]
    assert f"| P(Sparse FLS > Nature CNN) | {expected:.2f} | [{poi['lower']:.2f}, {poi['upper']:.2f}] | MsPacman |" \
        in out
    assert (analysis / "poi.png").exists() and (analysis / "profiles.png").exists()

    # what it cannot compute, said in one line each; nothing drawn for it
    assert "aggregate: an aggregate over games needs 2 or more evaluated games with reference scores; the study has 1 " \
           "(MsPacman)" in out
    assert "table5: no breakout cell of study 'smoke' evaluated on breakout_infinite" in out
    assert "efficiency: no reward curve in study 'smoke'" in out  # 512 steps: no game finished in training
    assert not (analysis / "table5.md").exists() and not (analysis / "aggregate.md").exists()

    # Table 4: one trial, so its intervals are over frames, marked and explained
    t4 = pd.read_csv(analysis / "table4.csv")
    shown = t4[(t4.resolution == "210x160") & (t4.alignment == "spec") & (t4["n"] > 0)]
    assert set(shown["ci_over"].dropna()) == {"frames"}
    own = shown[(shown.row == "sparse_fls") & (shown.metric == "nss")].iloc[0]
    assert own["lower"] <= own["mean"] <= own["upper"] and own["n"] == 2
    assert "‡ MsPacman: one trial scored, so the CI resamples its frames" in out
    # the best row is bold, the centre prior and the uniform map included
    table = (analysis / "table4.md").read_text()
    nss = shown[shown.metric == "nss"].set_index("row")["mean"]
    best = {"sparse_fls": "Sparse FLS", "center": "Center prior †"}[nss.idxmax()]
    bold_rows = [line.split("|")[1].strip() for line in table.split("### KL")[0].splitlines() if "**" in line]
    assert bold_rows == [best]


def test_real_study_with_one_seed_says_so(small, capsys):
    assert main(["table4", "--study", "smoke", "--run-root", str(small), "--seeds", "1", "--reps", "200"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| Sparse FLS "))
    assert "(1 seed)" in line and "±" not in line.split("|")[2]
    # the interval is seed 1's alone: a bootstrap over its frames (seed 2's frames left out)
    frames = FileSource(small, "smoke").saliency_frames("mspacman", "593", "spec",
                                        "210x160", "spec")
    mine = frames[(frames.model == "sparse_fls") & (frames["map"] == "model") & (frames.seed == 1)].sort_values("frame")
    cube = mine[["nss", "kl", "sauc"]].to_numpy("float64")[None, :, :]
    (_, interval), = estimate({"table4/mspacman/frame/1": cube}, lambda x: np.nanmean(np.nanmean(x, axis=1), axis=0),
                              Bootstrap(reps=200), task_bootstrap=True).values()
    t4 = pd.read_csv(RunLayout(small).analysis_dir("smoke") / "table4.csv")
    row = t4[(t4.row == "sparse_fls") & (t4.metric == "nss") & (t4.resolution == "210x160") & (t4.alignment == "spec")]
    assert (row["lower"].iloc[0], row["upper"].iloc[0]) == (pytest.approx(interval[0, 0]), pytest.approx(interval[1, 0]))
    assert row["mean"].iloc[0] == pytest.approx(np.nanmean(mine["nss"]))

    assert main(["table4", "--study", "smoke", "--run-root", str(small), "--preset", "paper"]) == 0
    assert capsys.readouterr().out.strip() == (
        "table4: no saliency metrics in study 'smoke' at preset paper, 210x160, 'paper' alignment "
        "(found: spec/210x160/spec; --preset, --resolution, --alignment); skipped")


def test_figure4_has_a_colour_bar(mspacman_smoke_runs):
    from analysis import fig4

    source = FileSource(mspacman_smoke_runs, "smoke")
    built = fig4.build(mspacman_smoke_runs, "smoke", Grid.of(source.cells()), ["mspacman"], ["sparse_fls"], steps=30)
    bars = [ax for ax in built.figure.axes if "peak" in ax.get_ylabel()]
    assert len(built.figure.axes) == 3 and len(bars) == 1  # two frames and the bar
    assert bars[0].get_ylim() == (0.0, 1.0)


def test_table4_bolds_a_baseline_that_beats_every_model():
    """issue 36: a model was bold while the centre prior scored higher."""
    grid = Grid(["mspacman"], ["sparse_fls"], [1], {("mspacman", "sparse_fls", 1): "done"})
    ours = {("nss", "sparse_fls", "mspacman"): {"mean": 1.078, "std": math.nan, "n": 1},
            ("nss", "center", "mspacman"): {"mean": 1.157, "std": 0.0, "n": 1}}
    table = table4.section(ours, {}, "nss", ["mspacman"], ["sparse_fls"], grid).set_index("Model")
    assert table.loc["Sparse FLS", "MsPacman"] == "1.078 (1 seed)"
    assert table.loc["Center prior †", "MsPacman"] == "**1.157** (1 trial)"


def test_a_real_study_without_saliency_or_breakout_infinite_skips_tables_4_and_5(mspacman_smoke_runs):
    """issue 36: `make demo` printed all-dash Tables 4 and 5; a study with no data for them skips them."""
    source = FileSource(mspacman_smoke_runs, "smoke")  # Sparse FLS on Ms. Pac-Man, never scored on Atari-HEAD
    grid = Grid.of(source.cells())
    skipped = table4.build(source, grid, PaperValues(), bootstrap=QUICK)
    assert isinstance(skipped, Skipped) and skipped.reason.startswith(
        "no saliency metrics in study 'smoke' at preset spec, 210x160, 'spec' alignment (src/saliency.py scores")
    assert isinstance(table5.build(source, grid, PaperValues(), QUICK), Skipped)


def test_sample_efficiency_reads_wandb_as_the_files(syn_root):
    files = FileSource(syn_root, STUDY)
    grid = Grid.of(files.cells())
    online = WandbSource("team/fls-sweeps", STUDY, files=files, api=StandInApi(stand_in_runs(STUDY)))
    ours = [a for a in efficiency.build(online, grid, QUICK) if not isinstance(a, Skipped)]
    theirs = [a for a in efficiency.build(files, grid, QUICK) if not isinstance(a, Skipped)]
    assert [a.name for a in ours] == [a.name for a in theirs] == ["efficiency_breakout", "efficiency_seaquest"]
    for a, b in zip(ours, theirs):
        pd.testing.assert_frame_equal(a.data, b.data)
    curve = theirs[0].data.set_index(["model", "frames"])
    # breakout/dense_fls: seeds 1 and 2 cover frames 1024-3072; 2 seeds: the IQM is their mean
    first = curve.loc[("dense_fls", 1024.0)]
    assert first["iqm"] == pytest.approx((0.5 + 0.25) / 2) and first["seeds"] == 2
    assert first["lower"] <= first["iqm"] <= first["upper"]
