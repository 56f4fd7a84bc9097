"""Every config composes, and the config groups mirror the code one to one."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from fls.grid import cell_overrides
from omegaconf import OmegaConf

import fls.rundir  # noqa: F401  (registers ${cell_dir:...})
from fls.games import trained_games
from fls.training_cell import check_train_config
from fls.errors import ConfigError

from conftest import REPO

CONF = REPO / "conf"
SPEC_GAMES = {
    "beamrider": ("BeamRiderNoFrameskip-v4", 9),
    "breakout": ("BreakoutNoFrameskip-v4", 4),
    "mspacman": ("MsPacmanNoFrameskip-v4", 9),
    "spaceinvaders": ("SpaceInvadersNoFrameskip-v4", 6),
    "enduro": ("EnduroNoFrameskip-v4", 9),
    "seaquest": ("SeaquestNoFrameskip-v4", 18),
    "breakout_infinite": ("BreakoutNoFrameskip-v4", 4),
}
SPEC_MODELS = [
    "nature_cnn", "daqn", "rs_ppo", "rs_ppo_nopad", "sparse_fls", "sparse_fls_pool",
    "sparse_fls_norm", "sparse_fls_1x1", "sparse_fls_sp2", "sparse_fls_norelu",
    "sparse_fls_norelu_pool", "sparse_fls_first_conv", "sparse_fls_each_conv", "dense_fls",
    "dense_fls_norelu",
]


def names(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def train_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def test_groups_hold_the_spec_names():
    assert names("game") == set(SPEC_GAMES)
    assert names("model") == set(SPEC_MODELS)
    assert names("ppo") == {"baselines"}
    assert names("logger") == {"wandb", "wandb_online", "none"}
    assert names("speed") == {"eager", "fast"}
    assert names("eval") == {"paper"}
    assert {"demo", "smoke", "paper"} <= names("experiment")


def test_model_configs_are_the_registry():
    from fls.models import MODELS

    assert set(MODELS) == names("model")


@pytest.mark.parametrize("game", sorted(SPEC_GAMES))
def test_every_game_composes(game):
    cfg = train_cfg(f"game={game}")
    env_id, actions = SPEC_GAMES[game]
    assert (cfg.game.name, cfg.game.env_id, cfg.game.num_actions) == (game, env_id, actions)
    assert cfg.game.infinite == (game == "breakout_infinite")
    check_train_config(cfg)


@pytest.mark.parametrize("model", SPEC_MODELS)
def test_every_model_composes(model):
    cfg = train_cfg(f"model={model}")
    assert cfg.model.name == model
    check_train_config(cfg)


GAME_LIMITS = {  # (training cap, evaluation cap) in frames, docs/protocol.md
    "breakout": (400_000, 120_000), "breakout_infinite": (400_000, 120_000),
    "spaceinvaders": (300_000, 300_000), "beamrider": (400_000, 400_000), "mspacman": (400_000, 400_000),
    "enduro": (400_000, 400_000), "seaquest": (400_000, 400_000),
}


@pytest.mark.parametrize("name", sorted(GAME_LIMITS))
def test_every_game_states_its_limits_in_frames_with_their_source(name):
    path = REPO / "conf" / "game" / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    assert (cfg.max_frames, cfg.eval_max_frames) == GAME_LIMITS[name]
    text = path.read_text()
    for key in ("max_frames", "eval_max_frames"):
        comment = text.split(f"\n{key}:")[0].rsplit("\n", 3)[-3:]
        assert any("gym" in line or "max-eplen" in line for line in comment), (key, comment)
    # each game file describes its own game
    assert cfg.env_id.split("NoFrameskip")[0] in text.splitlines()[0] or name == "breakout_infinite"


def test_defaults_are_the_paper_protocol():
    cfg = train_cfg()
    assert cfg.total_timesteps == 50_000_000 and cfg.num_envs == 8 and cfg.device == "auto"
    ppo = cfg.ppo
    assert (ppo.num_steps, ppo.update_epochs, ppo.num_minibatches) == (128, 4, 4)
    assert (ppo.learning_rate, ppo.adam_eps, ppo.clip_coef, ppo.ent_coef, ppo.vf_coef) == (2.5e-4, 1e-5, 0.1, 0.01, 0.5)
    assert (ppo.max_grad_norm, ppo.gamma, ppo.gae_lambda) == (0.5, 0.99, 0.95)
    assert ppo.anneal_lr and ppo.clip_vloss and ppo.norm_adv
    env = cfg.env
    assert (env.noop_max, env.frame_skip, env.frame_stack) == (30, 4, 4)
    assert env.episodic_life and env.fire_reset
    # Baselines' semantics (FIRE after a lost life) are the default; native is a speed mode
    assert env.backend == "gymnasium"
    # game-length caps in frames (the authors' gym NoFrameskip-v4 registration, --max-eplen)
    assert (cfg.game.name, cfg.game.max_frames, cfg.game.eval_max_frames) == ("breakout", 400_000, 120_000)
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"
    # the trainer runs fp32 eager by default: nothing that changes its numbers
    assert not (cfg.speed.bf16 or cfg.speed.compile) and cfg.speed.env_groups == 1
    assert cfg.eval.games == 8192 and cfg.eval.num_envs == 16 and cfg.eval.sample
    assert cfg.study == "default" and cfg.run_root == "runs"


def test_loggers():
    assert train_cfg("logger=wandb_online").logger.mode == "online"
    assert train_cfg("logger=none").logger.name == "none"


def test_experiments_name_their_study_and_grid():
    demo = train_cfg("experiment=demo", hydra=True)
    assert demo.study == "demo" and demo.game.name == "breakout"
    assert dict(demo.hydra.sweeper.params) == {"model": "nature_cnn,sparse_fls", "seed": "1,9"}
    smoke = train_cfg("experiment=smoke")
    assert smoke.study == "smoke" and smoke.total_timesteps <= 1024
    check_train_config(smoke)
    paper = train_cfg("experiment=paper", hydra=True)
    params = paper.hydra.sweeper.params
    assert paper.total_timesteps == 50_000_000
    assert params.seed == "1,9,17,25,33"
    # the grid the sweeper launches: every model, the six trained games, five seeds
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    cells = cell_overrides([f"{k}={v}" for k, v in params.items()], ["seed"], loader)
    assert len(cells) == 15 * 6 * 5
    chosen = {key: {o.split("=", 1)[1] for c in cells for o in c if o.startswith(f"{key}=")} for key in ("game", "model")}
    assert chosen["model"] == set(SPEC_MODELS)
    assert chosen["game"] == set(SPEC_GAMES) - {"breakout_infinite"} == set(trained_games())  # conf/game: evaluation_only


def test_hydra_dirs_are_the_cell_directory():
    cfg = train_cfg("game=seaquest", "model=daqn", "seed=9", "study=s", "run_root=/tmp/r", hydra=True)
    expected = "/tmp/r/s/seaquest/daqn/seed_9"
    assert cfg.hydra.run.dir == expected
    assert cfg.hydra.sweep.subdir == expected
    assert cfg.hydra.sweep.dir == "/tmp/r/s"
    assert cfg.hydra.output_subdir is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("total_timesteps=0", "total_timesteps=0"),
        ("total_timesteps=100", "less than one rollout"),
        ("num_envs=0", "num_envs=0"),
        ("seed=0-4", "is a range"),
        ("seed=abc", "seed=abc"),
        ("device=tpu", "device=tpu"),
        ("ppo.num_minibatches=3", "ppo.num_minibatches=3"),
        ("env.backend=native game=breakout_infinite", "env.backend=native"),
    ],
)
def test_bad_values_are_refused_with_the_key(override, message):
    cfg = train_cfg(*override.split())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_train_config(cfg)


def test_every_yaml_key_is_commented():
    """Like CleanRL's Args docstrings: each entry config and group file explains its keys."""
    for path in [CONF / "train.yaml", CONF / "ppo" / "baselines.yaml", CONF / "env" / "atari.yaml",
                 CONF / "speed" / "eager.yaml", CONF / "speed" / "fast.yaml", CONF / "eval" / "paper.yaml",
                 CONF / "saliency.yaml", CONF / "saliency" / "default.yaml"]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith((" ", "#", "-")) and ":" in line and line.split(":")[0] not in ("defaults", "hydra"):
                assert i and lines[i - 1].startswith("#"), f"{path.name}: no comment above {line!r}"


@pytest.mark.parametrize("entry", ["train", "evaluate", "saliency"])
@pytest.mark.parametrize("experiment", sorted(names("experiment")))
def test_every_experiment_composes_with_every_entry_config(entry, experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(entry, overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.study and cfg.game.name in names("game") and cfg.model.name in names("model")
    # the sweep the experiment names: every game and model it lists exists
    params = cfg.hydra.sweeper.params or {}
    for group in ("game", "model"):
        if group in params:
            listed = str(params[group])
            chosen = names(group) if listed.startswith("glob(") else set(listed.split(","))
            assert chosen <= names(group), (experiment, group, chosen - names(group))
    if entry == "saliency":
        assert cfg.saliency.preset == "spec"
