"""Evaluation (docs/protocol.md#evaluation) and saliency videos, on real tiny trained cells."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fls.envs import AtariVec, Step
from fls.evaluation import GAME_COLUMNS, play_games, shares
from fls.rundir import RunLayout
from fls.video import HEADER

from conftest import PYTHON, REPO


def cli(script: str, run_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, script, "experiment=smoke", f"run_root={run_root}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two tiny real cells of study `smoke`: nature_cnn and sparse_fls on Breakout, seed 1."""
    root = tmp_path_factory.mktemp("runs")
    res = subprocess.run([PYTHON, "src/train.py", "-m", "experiment=smoke", "model=nature_cnn,sparse_fls",
                          f"run_root={root}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def cell(root: Path, model: str = "nature_cnn"):
    return RunLayout(root).cell("smoke", "breakout", model, 1)


def test_shares_split_games_over_envs():
    assert shares(10, 4).tolist() == [3, 3, 2, 2]
    assert shares(8192, 16).tolist() == [512] * 16
    assert shares(3, 16).tolist() == [1, 1, 1]


class ScriptedGames(AtariVec):
    """Env i ends a game every period[i] steps, scoring 100 * i + its game number."""

    backend = "scripted"
    num_actions = 2
    observation_shape = (4, 84, 84)

    def __init__(self, periods: list[int]):
        self.period = np.array(periods)
        self.num_envs = len(periods)
        self.t = 0
        self.played = np.zeros(self.num_envs, dtype=int)

    def reset(self, seed=None):
        return np.zeros((self.num_envs, *self.observation_shape), dtype=np.uint8)

    def step(self, actions):
        self.t += 1
        over = self.t % self.period == 0
        score = np.where(over, 100.0 * np.arange(self.num_envs) + self.played, np.nan)
        self.played += over
        n = self.num_envs
        step = Step(np.zeros(n, np.float32), over, np.zeros(n, bool), over, np.zeros(n, bool), score,
                    np.where(over, 4 * self.period, 0), np.where(over, 0.1, np.nan))
        return self.reset(), step


def test_every_env_plays_exactly_its_share_with_uneven_game_lengths():
    envs = ScriptedGames([1, 3, 7, 2])
    per_env = np.array([4, 3, 2, 2])
    games = play_games(envs, lambda obs: np.zeros(len(obs), int), per_env, seed=0)
    assert len(games) == per_env.sum()
    for i, n in enumerate(per_env):
        mine = games[games.env == i]
        assert mine.game.tolist() == list(range(n))  # its first n games, none twice
        assert mine.score.tolist() == [100.0 * i + k for k in range(n)]
    # The evaluation lasts until the slowest env's last counted game, not a step longer:
    # env 2 (a game every 7 steps) ends its 2nd game at step 14.
    assert envs.t == 14
    assert games[games.env == 2].agent_steps.tolist() == [7, 7]  # steps the policy acted per game
    # Faster envs went on playing, but their extra games were not counted.
    assert envs.played[0] == 14 and (games.env == 0).sum() == 4


def test_evaluation_results_schema_seed_and_idempotence(trained):
    c = cell(trained)
    res = cli("src/evaluate.py", trained, "model=nature_cnn", "eval.games=6", "eval.num_envs=4")
    assert res.returncode == 0, res.stderr[-2000:]
    games = pd.read_parquet(c.eval_games())
    assert list(games.columns) == GAME_COLUMNS
    assert [str(t) for t in games.dtypes] == ["int32", "int32", "float64", "int64", "int64", "float64", "bool"]
    # a game of n agent steps lasts about 4n frames (plus the env's own reset and FIRE steps)
    assert (games.agent_steps > 0).all() and (games.frames >= 4 * games.agent_steps).all()
    assert len(games) == 6 and games.groupby("env").size().tolist() == [2, 2, 1, 1]
    assert (games.frames > 0).all() and (games.score >= 0).all()
    summary = json.loads(c.eval_summary().read_text())
    assert summary["n"] == 6
    assert summary["mean"] == pytest.approx(games.score.mean())
    assert summary["std"] == pytest.approx(games.score.std(ddof=0))
    # Breakout's limit (conf/game/breakout.yaml) and the env stack are recorded
    assert summary["settings"]["max_frames"] == 120_000
    assert summary["settings"]["env"]["backend"] == "gymnasium" and summary["settings"]["env"]["noop_max"] == 30

    # The evaluation seeds are none of the seeds the cell trained on.
    status = c.status()
    trained_on = {s + i for s in status["env_reset_seeds"] for i in range(status["num_envs"])}
    seed = summary["settings"]["seed"]
    assert seed == 1_000_000_000 + 1000 * 1  # eval.seed_offset + 1000 x cell seed
    assert not trained_on & set(range(seed, seed + 4))

    # Done means done: not recomputed ...
    stamp = c.eval_games().stat().st_mtime_ns
    again = cli("src/evaluate.py", trained, "model=nature_cnn", "eval.games=6", "eval.num_envs=4")
    assert again.returncode == 0 and "is done" in again.stdout + again.stderr
    assert c.eval_games().stat().st_mtime_ns == stamp
    # ... unless the protocol changes: then recomputed, and the earlier results are kept.
    res = cli("src/evaluate.py", trained, "model=nature_cnn", "eval.games=4", "eval.num_envs=4")
    assert res.returncode == 0 and "games 6 -> 4" in res.stderr + res.stdout
    assert len(pd.read_parquet(c.eval_games())) == 4
    kept = sorted(c.eval_previous().iterdir())
    assert len(kept) == 1 and len(pd.read_parquet(kept[0] / "games.parquet")) == 6
    assert json.loads((kept[0] / "summary.json").read_text())["n"] == 6
    # an env setting is part of the protocol too
    res = cli("src/evaluate.py", trained, "model=nature_cnn", "eval.games=4", "eval.num_envs=4", "env.noop_max=0")
    assert res.returncode == 0 and "env.noop_max 30 -> 0" in res.stderr + res.stdout
    assert json.loads(c.eval_summary().read_text())["settings"]["env"]["noop_max"] == 0
    assert len(list(c.eval_previous().iterdir())) == 2


def test_frame_limit_truncates_games(trained, tmp_path):
    c = cell(trained)
    res = cli("src/evaluate.py", trained, "model=nature_cnn", "eval.games=4", "eval.num_envs=2",
              "eval.max_frames=200", "eval.overwrite=true")
    assert res.returncode == 0, res.stderr[-2000:]
    games = pd.read_parquet(c.eval_games())
    # An untrained agent rarely relaunches the ball: a game outlives 200 frames.
    assert games.truncated.mean() >= 0.5
    assert games[games.truncated].frames.between(200, 230).all()
    assert json.loads(c.eval_summary().read_text())["truncated"] == int(games.truncated.sum())


def test_a_cell_with_nothing_to_evaluate_fails_naming_its_path(trained):
    res = cli("src/evaluate.py", trained, "model=daqn")
    missing = cell(trained, "daqn").path
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: {missing}: no checkpoint, nothing to use (not trained yet)"]
    assert not missing.exists()  # nothing left behind
    # a misspelt study names the studies that have cells
    res = cli("src/evaluate.py", trained, "study=smok")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].endswith(
        f"no checkpoint, nothing to use (study=smok has no trained cells under {trained}; studies there: smoke)")
    assert not (trained / "smok" / "breakout").exists()


def test_a_sweep_counts_the_cells_it_skipped_and_says_why(trained):
    res = subprocess.run([PYTHON, "src/evaluate.py", "-m", "experiment=smoke", f"run_root={trained}",
                          "model=nature_cnn,daqn,dense_fls", "eval.games=2", "eval.num_envs=2"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "2 of 3 cells skipped, with nothing to use:" in out
    for model in ("daqn", "dense_fls"):
        assert f"  {cell(trained, model).path}: no checkpoint, nothing to use (not trained yet)" in out
        assert not cell(trained, model).path.exists()
    assert cell(trained).eval_result() is not None  # the trained one was evaluated


def test_video_and_contact_sheet(trained):
    c = cell(trained, "sparse_fls")
    res = cli("src/evaluate.py", trained, "model=sparse_fls", "video=true", "eval.video.max_frames=400",
              "eval.video.sheet_frames=6")
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((c.video_dir() / "video.json").read_text())
    assert record["has_saliency"] and record["games"][0]["map_max"] > 0
    on_ball = record["games"][0]["map_at_ball"]  # Breakout's config locates the ball
    assert on_ball["frames"] > 0 and 0 <= on_ball["on_ball"] <= 1 and 0 <= on_ball["on_ball_control"] <= 1
    frames = read_mp4(c.video_dir() / "game_0.mp4")
    steps = record["games"][0]["agent_steps"]
    assert frames.shape == (steps, 420, 740, 3)
    assert steps <= 400 // 4 + 1
    # The saliency overlay colours the grey observation panel.
    right = frames[:, :, 320:].astype(int)
    assert (np.abs(right[..., 0] - right[..., 2]) > 30).mean() > 0.01
    sheet = np.asarray(Image.open(c.video_dir() / "contact_sheet.png").convert("RGB")).astype(int)
    assert sheet.shape == (HEADER + 2 * 420, 4 * 740, 3)
    # its header's colour bar runs from jet's dark blue (0) to its dark red (1)
    bar = sheet[28, 18:18 + 256]
    assert bar[0, 2] > 100 and bar[0, 0] < 20 and bar[-1, 0] > 100 and bar[-1, 2] < 20
    # each frame's halves are labelled (white text over the screen and over the input)
    for x0 in (0, 320):
        label = sheet[HEADER + 4:HEADER + 14, x0 + 6:x0 + 80]
        assert (label.min(axis=-1) > 200).any()


def test_post_hoc_maps_are_drawn_each_over_its_own_peak_and_a_bad_scale_is_refused(trained):
    from fls.video import map_scales
    maps = [np.full((84, 84), 2.0, np.float32), None, np.full((84, 84), 50.0, np.float32)]
    assert map_scales(maps, "clip") == [50.0] * 3 and map_scales(maps, "frame") == [2.0, 1.0, 50.0]
    c = cell(trained, "sparse_fls")
    before = sorted(p.name for p in c.path.rglob("*"))
    res = cli("src/evaluate.py", trained, "model=sparse_fls", "video=true", "eval.video.scale=peak")
    assert res.returncode == 2 and "eval.video.scale=peak: expected one of auto, clip, frame" in res.stderr
    assert sorted(p.name for p in c.path.rglob("*")) == before
    res = cli("src/evaluate.py", trained, "model=sparse_fls", "video=true", "eval.video.max_frames=200",
              "eval.video.map=jacobian")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((c.video_dir("breakout", "jacobian") / "video.json").read_text())["scale"] == "frame"


def test_nature_cnn_video_shows_the_game_alone(trained):
    c = cell(trained, "nature_cnn")
    res = cli("src/evaluate.py", trained, "model=nature_cnn", "video=true", "eval.video.max_frames=200")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "has no attention map" in res.stdout + res.stderr
    record = json.loads((c.video_dir() / "video.json").read_text())
    assert not record["has_saliency"] and record["games"][0]["map_at_ball"] is None
    frames = read_mp4(c.video_dir() / "game_0.mp4")
    right = frames[:, :, 320:].astype(int)
    assert (np.abs(right[..., 0] - right[..., 2]) > 30).mean() < 0.001  # grey: no overlay


def read_mp4(path: Path) -> np.ndarray:
    """Decode every frame with imageio's ffmpeg reader (the writer's own backend)."""
    with imageio.get_reader(path) as reader:
        return np.stack([frame for frame in reader])  # list() trips on its infinite len()
