"""The analysis package on real run directories: every artefact's numbers recomputed here.

Two studies: `real`, trained by src/train.py and scored by fls.evaluation (tiny, so its
curves have no finished game: the NaN-only case); and `syn`, written through the same
writers (MetricsCSV, fls.evaluation's game columns and summary, status.json) with known
numbers and the gaps of a half-finished sweep: a seed still running, a (game, model) never
started, an empty and a header-only metrics.csv, NaN eprewmean rows, seeds of different
lengths, a seed evaluated on Breakout but not on BreakoutInfinite.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from analysis import fig3, table2, table3, table4, table5
from analysis.__main__ import main
from analysis.grid import Grid
from analysis.load import FileSource, SourceError, read_metrics_csv
from analysis.paper import PaperValues
from analysis.render import Artefact, Skipped, latex, markdown, markdown_table
from analysis.wandb_source import WandbSource, flat_config, run_cell, run_curve
from fls.evaluation import GAME_COLUMNS, evaluate_cell, summarize, write_results
from fls.rundir import METRIC_COLUMNS as COLUMNS, X_AXIS, CellDir, RunLayout
from fls.train_log import MetricsCSV

from conftest import PYTHON, REPO

PAPER_VALUES = REPO / "data" / "paper_values"
FRAMES_PER_UPDATE = 1024

# docs/protocol.md#names: parameters with 4 actions; 6, 9 and 18 actions add 1,026, 2,565 and 7,182
SPEC_PARAMS = {
    "nature_cnn": 1_686_693, "daqn": 130_726, "rs_ppo": 1_720_999, "rs_ppo_nopad": 1_720_999,
    "sparse_fls": 1_836_710, "sparse_fls_pool": 263_846, "sparse_fls_norm": 1_836_710,
    "sparse_fls_1x1": 1_703_590, "sparse_fls_sp2": 1_836_710, "sparse_fls_norelu": 1_836_710,
    "sparse_fls_norelu_pool": 263_846, "sparse_fls_first_conv": 1_762_982,
    "sparse_fls_each_conv": 2_063_016, "dense_fls": 280_358, "dense_fls_norelu": 280_358,
}
EXTRA_PER_ACTIONS = {4: 0, 6: 1_026, 9: 2_565, 18: 7_182}


# Writers: the project's own, as training and evaluation call them


def write_metrics(cell: CellDir, eprewmeans: list[float]) -> None:
    """One row per update; NaN eprewmean = no game finished yet (written empty, as the trainer does)."""
    cell.path.mkdir(parents=True, exist_ok=True)
    metrics = MetricsCSV(cell.metrics)
    for update, eprew in enumerate(eprewmeans, start=1):
        metrics.write({"update": update, "global_step": update * FRAMES_PER_UPDATE // 4,
                       X_AXIS: update * FRAMES_PER_UPDATE, "charts/eprewmean": eprew, "charts/SPS": 100.0})
    metrics.close()


def write_eval(cell: CellDir, scores: list[float], eval_game: str | None = None, backend: str = "gymnasium") -> None:
    """games.parquet and summary.json through fls.evaluation's own writer."""
    n = len(scores)
    games = pd.DataFrame({"env": np.arange(n) % 4, "game": np.arange(n) // 4, "score": scores,
                          "frames": np.full(n, 4000), "agent_steps": np.full(n, 990), "seconds": np.full(n, 1.5),
                          "truncated": np.zeros(n, bool)})
    games = games[GAME_COLUMNS].astype({"env": "int32", "game": "int32", "score": "float64", "frames": "int64",
                                        "agent_steps": "int64", "seconds": "float64", "truncated": "bool"})
    target = eval_game or cell.cell.game
    settings = {"eval_game": target, "games": n, "num_envs": 4, "max_frames": 30000, "seed": 1_000_000_000,
                "sample": True, "checkpoint_global_step": 4096,
                "env": {"backend": backend, "noop_max": 30, "frame_skip": 4, "frame_stack": 4, "stack_fill": "zeros",
                        "episodic_life": True, "fire_reset": True}}
    summary = {**summarize(games), "seconds": 3.0, "settings": settings, "cell": cell.cell.key, "checkpoint_update": 4}
    write_results(cell, target, games, summary)


def write_trials(cell: CellDir, rows: list[dict]) -> None:
    """saliency/trials.csv in the columns src/saliency.py writes."""
    cell.saliency_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    for col in ("nss_frames", "kl_frames", "sauc_frames", "frames"):
        frame[col] = 100
    frame["checkpoint_global_step"] = 4096
    frame.to_csv(cell.saliency_dir / "trials.csv", index=False)


# The synthetic study: known numbers, a partial sweep

STUDY = "syn"
SEEDS = [1, 2, 3]
RNG = np.random.default_rng(7)
SCORES = {  # (game, model, seed) -> evaluated game scores; absent = not evaluated
    **{("breakout", "nature_cnn", s): RNG.integers(0, 400, 8 + s).astype(float).tolist() for s in SEEDS},
    **{("breakout", "sparse_fls", s): RNG.integers(100, 500, 8).astype(float).tolist() for s in (1, 2)},
    **{("breakout", "dense_fls", s): RNG.integers(0, 100, 6).astype(float).tolist() for s in SEEDS},
    **{("seaquest", "nature_cnn", s): RNG.integers(100, 2000, 5).astype(float).tolist() for s in SEEDS},
    **{("seaquest", "sparse_fls", s): RNG.integers(100, 900, 5).astype(float).tolist() for s in SEEDS},
}
INFINITE = {  # breakout cells scored on breakout_infinite
    **{("nature_cnn", s): (np.asarray(SCORES["breakout", "nature_cnn", s]) * 1.1).round().tolist() for s in SEEDS},
    ("sparse_fls", 1): RNG.integers(200, 600, 8).astype(float).tolist(),
}
CURVES = {  # (game, model, seed) -> eprewmean per update (NaN before the first finished game)
    ("breakout", "nature_cnn", 1): [1.5, 2.0, 3.25, 4.0, 5.5, 6.0, 7.0, 8.5, 9.0, 10.0],
    ("breakout", "nature_cnn", 2): [math.nan, math.nan, 3.0, 3.5, 4.0, 5.0],
    ("breakout", "nature_cnn", 3): [2.0, 2.5, 3.0, 4.5, 5.0, 6.5, 7.5, 8.0],
    ("breakout", "sparse_fls", 1): [1.0, 2.0, 3.0, 4.0],
    ("breakout", "sparse_fls", 2): [1.5, 2.5],
    ("breakout", "sparse_fls", 3): [],  # running, nothing logged yet: header-only file
    ("breakout", "dense_fls", 1): [0.5, 0.75, 1.0],
    ("breakout", "dense_fls", 2): [0.25, 0.5, 1.25],
    ("breakout", "sparse_fls_norelu", 1): [0.0, 0.5, 0.25],
    ("seaquest", "nature_cnn", 1): [80.0, 120.0, 160.0],
    ("seaquest", "nature_cnn", 2): [90.0, 100.0],
    ("seaquest", "nature_cnn", 3): [math.nan] * 3,
    ("seaquest", "sparse_fls", 1): [70.0, 110.0, 150.0],
    ("seaquest", "sparse_fls", 2): [60.0, 140.0],
}
EMPTY_METRICS = [("breakout", "dense_fls", 3), ("seaquest", "sparse_fls", 3)]  # 0-byte metrics.csv
RUNNING = {("breakout", "sparse_fls", 3)}


def trial_rows(game: str, model: str, seed: int) -> list[dict]:
    """Two trials x two alignments at 210x160, one at 84x84, and the model-free maps."""
    rows = []
    base = {"sparse_fls": 0.5, "dense_fls": 1.0}[model] + 0.1 * seed + (0.3 if game == "seaquest" else 0.0)
    for alignment in ("spec", "paper"):
        for k, trial in enumerate(("100_RZ_1", "200_RZ_2")):
            shift = 0.01 * k + (0.002 if alignment == "paper" else 0.0)
            rows.append({"trial": trial, "map": "model", "resolution": "210x160", "alignment": alignment,
                         "nss": base + shift, "kl": 2.0 + base + shift,
                         # no frame with a defined sAUC in the second trial of dense seed 2
                         "sauc": math.nan if (model, seed, k) == ("dense_fls", 2, 1) else 0.6 + shift})
            for map_, nss in (("center", 0.8 + 0.05 * k), ("uniform", math.nan)):
                rows.append({"trial": trial, "map": map_, "resolution": "210x160", "alignment": alignment,
                             "nss": nss, "kl": 2.5 + 0.1 * k, "sauc": 0.5 if map_ == "center" else math.nan})
    rows.append({"trial": "100_RZ_1", "map": "model", "resolution": "84x84", "alignment": "spec",
                 "nss": 9.0, "kl": 9.0, "sauc": 0.9})
    return rows


SALIENCY = {("breakout", "sparse_fls", 1), ("breakout", "sparse_fls", 2), ("breakout", "dense_fls", 1),
            ("breakout", "dense_fls", 2), *(("seaquest", "sparse_fls", s) for s in SEEDS)}


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    layout = RunLayout(root)
    cells = set(CURVES) | set(EMPTY_METRICS) | set(SCORES)
    for game, model, seed in cells:
        cell = layout.cell(STUDY, game, model, seed)
        cell.path.mkdir(parents=True, exist_ok=True)
        cell.write_status(state="running" if (game, model, seed) in RUNNING else "done")
        if (game, model, seed) in CURVES:
            write_metrics(cell, CURVES[game, model, seed])
            if not CURVES[game, model, seed]:
                cell.metrics.write_text(",".join(COLUMNS) + "\n")
        else:
            cell.metrics.write_text("")
        if (game, model, seed) in SCORES:
            write_eval(cell, SCORES[game, model, seed])
        if game == "breakout" and (model, seed) in INFINITE:
            write_eval(cell, INFINITE[model, seed], "breakout_infinite")
        if (game, model, seed) in SALIENCY:
            write_trials(cell, trial_rows(game, model, seed))
    return root


@pytest.fixture(scope="module")
def syn(syn_root):
    source = FileSource(syn_root, STUDY)
    return source, Grid.of(source.cells())


def csv_row(frame: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(frame), bool)
    for key, value in where.items():
        mask &= frame[key].to_numpy() == value
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


# Table 2


def test_table2_counts_the_registry_modules_as_spec_1(tmp_path, capsys, monkeypatch):
    artefact = table2.build()
    counts = artefact.data.set_index(["model", "num_actions"])["params"]
    assert set(artefact.data["num_actions"]) == set(EXTRA_PER_ACTIONS)
    for model, params in SPEC_PARAMS.items():
        for actions, extra in EXTRA_PER_ACTIONS.items():
            assert counts[model, actions] == params + extra, (model, actions)
    four = artefact.data[artefact.data.num_actions == 4].set_index("model")
    assert four.loc["sparse_fls", "percent_of_nature_cnn"] == 108.9  # the paper's "% of [24]"
    assert four.loc["daqn", "percent_of_nature_cnn"] == 7.8
    assert set(four.index[four.in_paper_table2]) == {"nature_cnn", "daqn", "rs_ppo", "sparse_fls", "sparse_fls_pool",
                                                     "dense_fls", "sparse_fls_first_conv", "sparse_fls_each_conv"}

    monkeypatch.chdir(tmp_path)  # without --study nothing is written, not even under ./runs
    assert main(["table2"]) == 0
    out = capsys.readouterr().out
    assert "| Sparse + FLS after each conv layer" in out and "2,063,016" in out and "1,843,892" in out
    assert not any(tmp_path.iterdir())
    assert main(["table2", "--study", "s", "--run-root", str(tmp_path)]) == 0
    written = tmp_path / "s" / "analysis"
    assert sorted(p.name for p in written.iterdir()) == ["table2.csv", "table2.md", "table2.tex"]
    csv = pd.read_csv(written / "table2.csv")
    assert csv_row(csv, model="dense_fls", num_actions=18)["params"] == 280_358 + 7_182
    assert "1,686,693" in (written / "table2.tex").read_text()


# Table 3


def test_table3_pools_all_games_of_all_seeds_and_marks_partial_cells(syn):
    source, grid = syn
    artefact = table3.build(source, grid)
    data = artefact.data
    for (game, model) in {(g, m) for g, m, _ in SCORES}:
        pooled = np.concatenate([SCORES[game, model, s] for s in SEEDS if (game, model, s) in SCORES])
        row = csv_row(data, game=game, model=model)
        assert row["mean"] == pytest.approx(pooled.mean())
        assert row["std"] == pytest.approx(pooled.std())  # population std over all games
        assert row["n_games"] == len(pooled)
    assert csv_row(data, game="breakout", model="sparse_fls")["n_seeds"] == 2
    assert csv_row(data, game="seaquest", model="dense_fls")["n_games"] == 0

    table = artefact.sections[0][1].set_index("Model")
    assert list(table.columns) == ["Breakout", "Seaquest"]
    assert list(table.index) == ["Nature CNN", "Sparse FLS", "Sparse FLS w/o final ReLU", "Dense FLS + sum-pooling"]
    assert table.loc["Sparse FLS", "Breakout"].endswith("(2/3 seeds, 16 games)")
    assert table.loc["Nature CNN", "Breakout"].endswith("(3 seeds, 30 games)")
    assert table.loc["Dense FLS + sum-pooling", "Seaquest"] == "—"
    assert table.loc["Sparse FLS w/o final ReLU", "Breakout"] == "—"
    # best mean per game in bold, and only that one
    for game, column in (("breakout", "Breakout"), ("seaquest", "Seaquest")):
        best = data[data.game == game].set_index("model")["mean"].idxmax()
        bolds = [m for m in table.index if table.loc[m, column].startswith("**")]
        assert bolds == [table3.model_label(best)]

    text = "\n".join(artefact.notes)
    assert "14 of 24 seed runs evaluated" in text
    assert "3 of 8 (game, model) cells have none, shown as —: breakout/sparse_fls_norelu, " in text
    assert "seaquest/dense_fls." in text
    assert "Missing 10 seed runs (training state: 1 running, 1 done, 8 with no run directory)" in text
    assert "breakout/sparse_fls/seed_3 (running), breakout/sparse_fls_norelu/seed_1 (done)." in text


# Table 4


def independent_table4(metric: str, game: str, model: str, resolution="210x160", alignment="spec"):
    per_seed = []
    for seed in SEEDS:
        if (game, model, seed) not in SALIENCY:
            continue
        rows = [r for r in trial_rows(game, model, seed)
                if (r["map"], r["resolution"], r["alignment"]) == ("model", resolution, alignment)]
        values = [r[metric] for r in rows if not math.isnan(r[metric])]
        if values:
            per_seed.append(np.mean(values))
    if not per_seed:
        return math.nan, math.nan, 0
    return np.mean(per_seed), np.std(per_seed), len(per_seed)


def test_table4_means_trials_per_seed_then_seeds_beside_the_paper(syn):
    source, grid = syn
    artefact = table4.build(source, grid, PaperValues(PAPER_VALUES))
    data = artefact.data
    for metric in ("nss", "kl", "sauc"):
        for game in ("breakout", "seaquest"):
            for model in ("sparse_fls", "dense_fls"):
                mean, std, n = independent_table4(metric, game, model)
                if n == 0:
                    continue
                row = csv_row(data, metric=metric, game=game, row=model, resolution="210x160", alignment="spec")
                assert (row["mean"], row["std"], row["n"]) == (pytest.approx(mean), pytest.approx(std), n)
    # every setting is in the CSV; the 84x84 rows are their own
    row = csv_row(data, metric="nss", game="breakout", row="sparse_fls", resolution="84x84", alignment="spec")
    assert row["mean"] == 9.0
    paper_row = csv_row(data, metric="nss", game="breakout", row="sparse_fls", resolution="210x160", alignment="spec")
    assert (paper_row["paper_mean"], paper_row["paper_std"]) == (0.510, 0.055)

    sections = dict(artefact.sections)
    nss = sections["NSS (higher is better)"].set_index("Model")
    assert list(nss.index) == ["Sparse FLS", "Sparse FLS w/o final ReLU", "Dense FLS + sum-pooling",
                               "Center prior †", "Uniform †"]
    # Table 4's games only: no BeamRider; the paper's value beside ours
    assert list(nss.columns) == ["Breakout", "Breakout (paper)", "Seaquest", "Seaquest (paper)"]
    assert nss.loc["Sparse FLS", "Breakout (paper)"] == "0.510 ± 0.055"
    assert nss.loc["Sparse FLS w/o final ReLU", "Breakout (paper)"] == "n/a"
    mean, std, _ = independent_table4("nss", "breakout", "sparse_fls")
    ci = csv_row(data, metric="nss", game="breakout", row="sparse_fls", resolution="210x160", alignment="spec")
    assert nss.loc["Sparse FLS", "Breakout"] == f"{mean:.3f} ± {std:.3f} [{ci['lower']:.3f}, {ci['upper']:.3f}] (2/3 seeds)"
    # bootstrap over trials and seeds: the extremes are one seed's one trial (seed 1 trial 1: 0.6; seed 2 trial 2: 0.71)
    assert 0.6 <= ci["lower"] < mean < ci["upper"] <= 0.71 and ci["ci_over"] == "trials"
    assert nss.loc["Dense FLS + sum-pooling", "Breakout"].startswith("**")  # highest NSS
    assert nss.loc["Dense FLS + sum-pooling", "Breakout"].endswith("(2/3 seeds)")
    assert nss.loc["Dense FLS + sum-pooling", "Seaquest"] == "—"
    # sAUC undefined in one of dense seed 2's trials: that seed's value is its other trial
    sauc = csv_row(data, metric="sauc", game="breakout", row="dense_fls", resolution="210x160", alignment="spec")
    assert sauc["mean"] == pytest.approx((0.605 + 0.6) / 2) and sauc["n"] == 2
    kl = sections["KL divergence (lower is better)"].set_index("Model")
    # lowest KL: the centre prior (2.55) beats every model, so it is bold and no model is (issue 36)
    assert kl.loc["Center prior †", "Breakout"].startswith("**")
    assert not any(kl.loc[m, "Breakout"].startswith("**") for m in ("Sparse FLS", "Dense FLS + sum-pooling"))
    # the model-free maps: one row each, over the game's trials (undefined NSS for a uniform map)
    assert nss.loc["Center prior †", "Breakout"].startswith(f"{np.mean([0.8, 0.85]):.3f} ± {np.std([0.8, 0.85]):.3f} [")
    assert nss.loc["Uniform †", "Breakout"] == "—"
    assert kl.loc["Uniform †", "Seaquest"] == "2.550 ± 0.050 [2.500, 2.600]"  # two trials, 2.5 and 2.6

    other = table4.build(source, grid, PaperValues(PAPER_VALUES), alignment="paper")
    mean, _, _ = independent_table4("nss", "seaquest", "sparse_fls", alignment="paper")
    assert f"{mean:.3f} ± " in dict(other.sections)["NSS (higher is better)"].set_index("Model").loc["Sparse FLS", "Seaquest"]


def test_table4_without_paper_values_or_saliency_still_renders(syn, tmp_path):
    source, grid = syn
    artefact = table4.build(source, grid, PaperValues(tmp_path / "nowhere"))
    nss = dict(artefact.sections)["NSS (higher is better)"]
    assert list(nss.columns) == ["Model", "Breakout", "Seaquest"]
    assert any("Paper values not found" in n for n in artefact.notes)
    markdown(artefact), latex(artefact)

    layout = RunLayout(tmp_path)  # a study where no cell has saliency metrics yet: no all-dash table (issue 36)
    for seed in (1, 2):
        layout.cell("bare", "breakout", "sparse_fls", seed).write_status(state="running")
    bare = FileSource(tmp_path, "bare")
    skipped = table4.build(bare, Grid.of(bare.cells()), PaperValues(PAPER_VALUES))
    assert isinstance(skipped, Skipped) and skipped.reason.startswith(
        "no saliency metrics in study 'bare' at preset spec, 210x160, 'spec' alignment (src/saliency.py scores")
    assert isinstance(table5.build(bare, Grid.of(bare.cells()), PaperValues(PAPER_VALUES)), Skipped)


# Table 5


def test_table5_gain_over_the_seeds_evaluated_on_both(syn):
    source, grid = syn
    artefact = table5.build(source, grid, PaperValues(PAPER_VALUES))
    data = artefact.data.set_index("model")
    standard = np.concatenate([SCORES["breakout", "nature_cnn", s] for s in SEEDS])
    infinite = np.concatenate([INFINITE["nature_cnn", s] for s in SEEDS])
    row = data.loc["nature_cnn"]
    assert row["breakout_mean"] == pytest.approx(standard.mean())
    assert row["infinite_mean"] == pytest.approx(infinite.mean()) and row["infinite_std"] == pytest.approx(infinite.std())
    assert row["gain_percent"] == pytest.approx(100 * (infinite.mean() / standard.mean() - 1))
    assert (row["paper_infinite_mean"], row["paper_gain_percent"]) == (652, 5.4)
    # sparse_fls: breakout on seeds 1, 2; infinite on seed 1 only -> gain on seed 1
    sparse = data.loc["sparse_fls"]
    expected = 100 * (np.mean(INFINITE["sparse_fls", 1]) / np.mean(SCORES["breakout", "sparse_fls", 1]) - 1)
    assert sparse["gain_percent"] == pytest.approx(expected) and sparse["gain_seeds"] == 1
    table = artefact.sections[0][1].set_index("Model")
    assert table.loc["Sparse FLS", "gain"] == f"{expected:+.1f}% (1 paired seed)"
    assert table.loc["Sparse FLS", "BreakoutInfinite"].endswith("(1/3 seeds, 8 games)")
    assert table.loc["Dense FLS + sum-pooling", "BreakoutInfinite"] == "—"
    assert table.loc["Nature CNN", "paper BreakoutInfinite"] == "652 ± 274"
    assert table.loc["Sparse FLS w/o final ReLU", "paper gain"] == "+4.4%"


def test_table5_gives_no_gain_between_two_env_backends(tmp_path):
    layout = RunLayout(tmp_path)
    for seed in (1, 2):
        cell = layout.cell(STUDY, "breakout", "nature_cnn", seed)
        cell.path.mkdir(parents=True)
        cell.write_status(state="done")
        write_eval(cell, [10.0, 20.0], backend="native")
        write_eval(cell, [30.0, 40.0], "breakout_infinite", backend="gymnasium")
    source = FileSource(tmp_path, STUDY)
    artefact = table5.build(source, Grid.of(source.cells()), PaperValues(PAPER_VALUES))
    row = artefact.data.set_index("model").loc["nature_cnn"]
    assert math.isnan(row["gain_percent"]) and row["backends"] == "gymnasium,native"
    assert artefact.sections[0][1].set_index("Model").loc["Nature CNN", "gain"] == "n/a: env backends differ"
    assert any("Nature CNN: evaluated on gymnasium and native" in n for n in artefact.notes)


# Figures


def test_fig3_mean_and_band_over_seeds_of_different_lengths(syn, syn_root):
    source, grid = syn
    built = fig3.build(source, grid, "fig3")
    curves = built.data
    part = curves[(curves.game == "breakout") & (curves.model == "nature_cnn")].set_index("frames")
    seeds = {s: pd.Series(CURVES["breakout", "nature_cnn", s],
                          index=FRAMES_PER_UPDATE * np.arange(1, len(CURVES["breakout", "nature_cnn", s]) + 1.0)).dropna()
             for s in SEEDS}
    for frames, row in part.iterrows():
        values = [c[frames] for c in seeds.values() if c.index[0] <= frames <= c.index[-1]]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values))
    assert part["n"].tolist()[:3] == [2, 2, 3]  # seed 2's first game ended on its third update
    assert part.index.max() == 10 * FRAMES_PER_UPDATE  # the longest seed, not the shortest
    assert set(curves[curves.game == "seaquest"].model) == {"nature_cnn", "sparse_fls"}
    # seaquest/nature_cnn seed 3 has only NaN rows: two seeds with data
    assert curves[(curves.game == "seaquest") & (curves.model == "nature_cnn")]["seeds_with_data"].iloc[0] == 2
    assert "sparse_fls_norelu" not in set(curves.model)  # Figure 7's, not Figure 3's

    fig7 = fig3.build(source, grid, "fig7")
    assert set(fig7.data.model) == {"sparse_fls", "sparse_fls_norelu", "dense_fls"}
    assert fig3.build(source, grid, "fig6") is None  # only its reference model is in the study


def test_figures_are_written_as_png_and_svg_of_the_expected_size(syn_root, capsys):
    assert main(["all", "--study", STUDY, "--run-root", str(syn_root), "--paper-values", str(PAPER_VALUES)]) == 0
    out = capsys.readouterr().out
    analysis = RunLayout(syn_root).analysis_dir(STUDY)
    names = {p.name for p in analysis.iterdir()}
    for table in ("table2", "table3", "table4", "table5"):
        assert {f"{table}.md", f"{table}.csv", f"{table}.tex"} <= names
    assert {"fig3.png", "fig3.svg", "fig3.csv", "fig7.png", "fig7.svg"} <= names and "fig6.png" not in names
    assert "fig6: none of its models" in out and str(analysis / "fig3.png") in out
    for name in ("fig3", "fig7"):  # 2 games: two 4.8 x 3.4 in panels side by side + legend, 100 dpi
        with Image.open(analysis / f"{name}.png") as image:
            assert image.size == (960, 420) and image.format == "PNG"
        assert (analysis / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert fig3.figure_size(6) == pytest.approx((14.4, 7.6))  # the paper's six games: 3 x 2 panels
    md = (analysis / "table3.md").read_text()
    assert "| Dense FLS + sum-pooling" in md and "—" in md and "(2/3 seeds, 16 games)" in md
    tex = (analysis / "table3.tex").read_text()
    assert r"\textbf{" in tex and r"$\pm$" in tex and "---" in tex and "—" not in tex
    assert "Sparse FLS w/o final ReLU" in (analysis / "table4.md").read_text()


# Sources and readers


def test_half_written_metrics_files_read_as_curves_or_nothing(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("")
    assert read_metrics_csv(path).empty
    path.write_text(",".join(COLUMNS) + "\n")
    assert read_metrics_csv(path).empty
    row = dict.fromkeys(COLUMNS, "")
    lines = [",".join(COLUMNS)]
    for update, eprew in ((1, ""), (2, "3.5"), (3, "4")):
        lines.append(",".join({**row, "update": str(update), X_AXIS: str(update * 1024), "charts/eprewmean": eprew}[c]
                              for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n4,1024,40")  # a kill mid-row
    curve = read_metrics_csv(path)
    assert curve.to_dict("list") == {"frames": [2048.0, 3072.0], "eprewmean": [3.5, 4.0]}
    assert read_metrics_csv(tmp_path / "absent.csv").empty


class _RunShape:
    """Shaped like wandb.apis.public.Run for what the adapter reads; no server behind it."""

    def __init__(self, name, config, tags, rows, state="finished"):
        self.name, self.config, self.tags, self.state, self._rows = name, config, tags, state, rows


class StandInRun(_RunShape):
    def scan_history(self, keys=None, page_size=None):
        # W&B yields only the rows that have every key asked for
        return iter([{k: r[k] for k in keys} for r in self._rows if all(k in r for k in keys)])


class SampledRun(_RunShape):
    """A Run read through history() only: a DataFrame, NaN where a row lacks a key."""

    def history(self, keys=None, pandas=True, samples=500):
        assert pandas
        return pd.DataFrame([{k: r.get(k, math.nan) for k in ["_step", *keys]} for r in self._rows])


class StandInApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        wanted = set(filters["tags"]["$in"])
        return [r for r in self._runs if wanted & set(r.tags)]


def stand_in_runs(study: str) -> list[StandInRun]:
    runs = []
    for i, ((game, model, seed), values) in enumerate(sorted(CURVES.items())):
        # as WandbRun.log: NaN values are not logged, so those rows lack eprewmean
        rows = [{"_step": k, X_AXIS: (k + 1) * FRAMES_PER_UPDATE, **({} if math.isnan(v) else {"charts/eprewmean": v})}
                for k, v in enumerate(values)]
        config = {"game.name": game, "model.name": model, "seed": seed, "study": study, "ppo.gamma": 0.99}
        if i % 3 == 1:  # the same config as the API may hand it back: nested, or wrapped in {"value": ...}
            config = {"game": {"name": game}, "model": {"value": {"name": model}}, "seed": {"value": seed}, "study": study}
        cls = SampledRun if i % 2 else StandInRun
        runs.append(cls(f"{game}/{model}/seed_{seed}", config, [study, game, model, f"seed_{seed}"], rows,
                        state="running" if (game, model, seed) in RUNNING else "finished"))
    runs.append(StandInRun("breakout/nature_cnn/seed_1", {"study": "other", "seed": 1}, [study, "other"], []))
    return runs


def test_wandb_adapter_returns_what_the_files_give(syn, syn_root):
    files, grid = syn
    api = StandInApi(stand_in_runs(STUDY))
    source = WandbSource("team/fls-sweeps", STUDY, files=files, api=api)
    assert api.calls == [] and source.cells().shape[0] == len(CURVES)
    assert api.calls == [("team/fls-sweeps", {"tags": {"$in": [STUDY]}})]

    key = ["game", "model", "seed", "frames"]
    ours = source.metrics().sort_values(key).reset_index(drop=True)
    theirs = files.metrics().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)

    cells = source.cells().set_index(["game", "model", "seed"])["state"]
    assert cells["breakout", "sparse_fls", 3] == "running" and cells["breakout", "nature_cnn", 1] == "done"
    curves = fig3.build(source, Grid.of(files.cells()), "fig3").data
    pd.testing.assert_frame_equal(curves, fig3.build(files, grid, "fig3").data)
    assert table3.build(source, grid).data.equals(table3.build(files, grid).data)  # evaluations from the files

    assert flat_config({"a": {"value": 1}, "b": {"c": {"value": "x"}}, "d.e": 2}) == {"a": 1, "b.c": "x", "d.e": 2}
    named_only = StandInRun("seaquest/daqn/seed_9", {}, [STUDY], [])
    assert run_cell(named_only) == {"game": "seaquest", "model": "daqn", "seed": 9, "state": "done"}
    assert run_cell(StandInRun("not-a-cell", {}, [STUDY], [])) is None
    assert run_curve(named_only).empty
    with pytest.raises(ValueError, match="wandb:<entity>/<project>"):
        WandbSource("no-project", STUDY)

    class Unreachable:
        def runs(self, path, filters=None):
            raise ConnectionError("no route to api.wandb.ai")

    with pytest.raises(SourceError, match="W&B team/p: ConnectionError: no route"):
        WandbSource("team/p", STUDY, api=Unreachable()).cells()


# Rendering


def test_markdown_and_latex_renderers():
    table = pd.DataFrame({"Model": ["a|b", "c_d"], "Breakout": ["**1.0 ± 0.1**", "—"], "x": ["50%", "n/a"]})
    md = markdown_table(table).splitlines()
    assert md == ["| Model |      Breakout |   x |",
                  "| ----- | ------------: | --: |",
                  "| a\\|b  | **1.0 ± 0.1** | 50% |",
                  "| c_d   |             — | n/a |"]
    tex = latex(Artefact("t", "T & co", pd.DataFrame(), [(None, table)]))
    assert r"\textbf{1.0 $\pm$ 0.1}" in tex and r"c\_d" in tex and "50\\%" in tex and r"T \& co" in tex


# The real pipeline: src/train.py and fls.evaluation


@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    res = subprocess.run([PYTHON, "src/train.py", "-m", "experiment=smoke", f"run_root={root}", "seed=1,2",
                          "total_timesteps=256"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cell = RunLayout(root).cell("smoke", "breakout", "nature_cnn", 1)
    # only seed 1 is scored: seed 2 stays "trained, not evaluated"
    cfg = OmegaConf.merge(OmegaConf.load(cell.config), {"eval": {"games": 4, "num_envs": 2}, "device": "cpu"})
    assert evaluate_cell(cfg, cell)["n"] == 4
    return root


def test_real_study_table3_and_fig3_from_trainer_and_evaluator_files(real_root, capsys):
    source = FileSource(real_root, "smoke")
    grid = Grid.of(source.cells())
    assert (grid.games, grid.models, grid.seeds) == (["breakout"], ["nature_cnn"], [1, 2])
    cell = RunLayout(real_root).cell("smoke", "breakout", "nature_cnn", 1)
    games = pd.read_parquet(cell.eval_games())
    row = table3.build(source, grid).data.iloc[0]
    assert (row["mean"], row["std"], row["n_games"], row["n_seeds"]) == (
        pytest.approx(games.score.mean()), pytest.approx(games.score.std(ddof=0)), 4, 1)
    assert json.loads(cell.eval_summary().read_text())["mean"] == pytest.approx(row["mean"])

    # 256 agent steps finish no game: every eprewmean is NaN, and nothing breaks
    assert pd.read_csv(cell.metrics)["charts/eprewmean"].isna().all()
    res = subprocess.run([PYTHON, "-m", "analysis", "all", "--study", "smoke", "--run-root", str(real_root)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(1/2 seeds, 4 games)" in res.stdout and "breakout/nature_cnn/seed_2 (done)" in res.stdout
    assert "table4: no model with a saliency map (its own or a post-hoc one)" in res.stdout
    assert "fig5: no trained model of study 'smoke' on a game of Atari-HEAD" in res.stdout  # nature_cnn has no map
    with Image.open(RunLayout(real_root).analysis_dir("smoke") / "fig3.png") as image:
        assert image.size == (480, 420)
    assert pd.read_csv(RunLayout(real_root).analysis_dir("smoke") / "fig3.csv").empty
    # Figure 8 (Breakout's scatterplot): every evaluated game a point, from games.parquet alone
    assert "## Figure 8: Breakout scatterplot" in res.stdout and "fig12" not in res.stdout
    points = pd.read_csv(RunLayout(real_root).analysis_dir("smoke") / "fig8.csv")
    assert sorted(points["score"]) == sorted(games.score) and (points["agent_steps"] == games.agent_steps.sort_index()).all()
    assert (points["density"] >= 1).all() and points["density"].sum() >= len(points)
    assert (RunLayout(real_root).analysis_dir("smoke") / "fig8.svg").exists()
    res = subprocess.run([PYTHON, "-m", "analysis", "fig12", "--study", "smoke", "--run-root", str(real_root)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "fig12: no evaluated spaceinvaders game in study 'smoke'; skipped" in res.stdout


def test_scatter_density_counts_the_games_sharing_a_cell():
    from analysis.scatter import density

    x = np.array([10.0, 10.0, 10.0, 500.0, 990.0, 1000.0])
    y = np.array([0.0, 0.0, 0.1, 5.0, 9.0, 9.0])
    assert density(x, y, bins=10).tolist() == [3, 3, 3, 1, 2, 2]
    assert density(np.array([]), np.array([])).tolist() == []


def test_cli_refuses_what_it_cannot_build(tmp_path):
    run = lambda *a: subprocess.run([PYTHON, "-m", "analysis", *a], cwd=REPO, capture_output=True, text=True, timeout=60)
    res = run("table3")
    assert res.returncode == 2 and "needs --study" in res.stderr
    res = run("table3", "--study", "nothing", "--run-root", str(tmp_path))
    assert res.returncode == 2 and "no cells of study 'nothing'" in res.stderr
