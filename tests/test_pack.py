"""Packed seeds (pack=seeds): the cells of one (game, model) train and evaluate in one process,
each as it would alone, each with everything a lone cell has."""

from __future__ import annotations

import os
import signal
import subprocess

import pandas as pd
import pytest
import torch

from fls.models import build_model
from fls.rundir import RunLayout
from fls.seed_pack import PackLayout, SeedPack, restore_generator

from conftest import PYTHON, REPO
from wandb_offline import find_runs, read_run
from test_train import STEPS_PER_UPDATE, cell, metric_rows, run, train_cmd, wait_for_rows

LOSSES = ["losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
          "losses/approx_kl", "losses/clipfrac", "losses/explained_variance"]


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_packed_cell_learns_what_it_learns_alone(tmp_path, batching):
    """Same first update (losses, approx_kl, clipfrac) and the same weights after it: the
    same actions were sampled and the same minibatches drawn, from the seed's own stream."""
    alone, packed = tmp_path / "alone", tmp_path / "packed"
    res = run(alone, "seed=2", f"total_timesteps={STEPS_PER_UPDATE}")
    assert res.returncode == 0, res.stderr[-2000:]
    res = run(packed, "seed=7", "pack=seeds", "pack.seeds=[7,2]", f"pack.batching={batching}", f"total_timesteps={STEPS_PER_UPDATE}")
    assert res.returncode == 0, res.stderr[-2000:]

    [one] = metric_rows(cell(alone, 2).metrics)
    [two] = metric_rows(cell(packed, 2).metrics)
    for key in LOSSES:
        assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-4, abs=1e-7), key
    a, b = weights(cell(alone, 2).checkpoint), weights(cell(packed, 2).checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)
    # its partner learnt something else from its own seed
    [other] = metric_rows(cell(packed, 7).metrics)
    assert float(other["losses/value_loss"]) != pytest.approx(float(one["losses/value_loss"]), rel=1e-3)
    assert "packed job: breakout/nature_cnn/seed_7, breakout/nature_cnn/seed_2" in cell(packed, 2).train_log.read_text()
    assert cell(packed, 2).status()["packed_with"] == ["breakout/nature_cnn/seed_7"]


def seed_grads(pack: SeedPack, s: int) -> list[torch.Tensor]:
    if pack.batching == "loop":
        return [p.grad for p in pack.models[s].parameters() if p.grad is not None]
    return [p.grad[s] for p in pack.parameters() if p.grad is not None]


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_pack_forward_sampling_and_clip_are_each_seeds_own(batching):
    """The pack's forward = each model alone; per-seed generators = each seed's lone draws;
    the gradient-norm clip is one norm per seed."""
    torch.manual_seed(0)
    obs = torch.randint(0, 256, (2, 6, 4, 84, 84), dtype=torch.uint8)
    for name in ("sparse_fls", "rs_ppo"):
        pack = SeedPack.build(name, 4, [3, 8], torch.device("cpu"), batching=batching)
        assert pack.batching == batching
        alone = [SeedPack.build(name, 4, [s], torch.device("cpu")) for s in (3, 8)]
        actions, _, _, values = pack.get_action_and_value(obs)
        for s in range(2):
            a, _, _, v = alone[s].get_action_and_value(obs[s:s + 1])
            assert torch.equal(actions[s], a[0])
            torch.testing.assert_close(values[s], v[0], rtol=1e-5, atol=1e-6)

        # Seed 0's loss 1000x seed 1's: a norm across the pack would clip seed 1 as well.
        logits, values = pack(obs)
        (1000 * values[0].sum() + values[1].sum()).backward()
        raw = [torch.cat([g.flatten() for g in seed_grads(pack, s)]).norm() for s in range(2)]
        norms = pack.clip_grad_norm_(0.5)
        torch.testing.assert_close(norms, torch.stack(raw), rtol=1e-4, atol=0)
        for s in range(2):
            after = torch.cat([g.flatten() for g in seed_grads(pack, s)]).norm()
            assert float(after) == pytest.approx(min(0.5, float(raw[s])), rel=1e-4)


def test_a_seeds_checkpoint_is_the_same_under_either_batching():
    """Seed i's model and Adam state, saved by a loop pack after a step, load into a vmap pack
    (and back) unchanged, in the lone run's format: a job may switch batching on resume."""
    obs = torch.randint(0, 256, (3, 4, 4, 84, 84), dtype=torch.uint8)
    loop = SeedPack.build("nature_cnn", 4, [1, 2, 3], torch.device("cpu"), batching="loop")
    opt = torch.optim.Adam(loop.parameters(), lr=1e-3, eps=1e-5)
    loop(obs)[1].sum().backward()
    opt.step()
    models = [loop.state_dict(i) for i in range(3)]
    states = [loop.optimizer_state_dict(opt, i) for i in range(3)]
    lone = torch.optim.Adam(build_model("nature_cnn", 4).parameters()).state_dict()
    assert states[1]["param_groups"][0]["params"] == lone["param_groups"][0]["params"]

    vmap = SeedPack.build("nature_cnn", 4, [7, 8, 9], torch.device("cpu"), batching="vmap")
    vopt = torch.optim.Adam(vmap.parameters(), lr=1e-3, eps=1e-5)
    for i in range(3):
        vmap.load_state_dict(i, models[i])
    vmap.load_optimizer_state_dicts(vopt, states)
    again = SeedPack.build("nature_cnn", 4, [4, 5, 6], torch.device("cpu"), batching="loop")
    aopt = torch.optim.Adam(again.parameters(), lr=1e-3, eps=1e-5)
    again.load_optimizer_state_dicts(aopt, [vmap.optimizer_state_dict(vopt, i) for i in range(3)])
    for i in range(3):
        for name, t in vmap.state_dict(i).items():
            assert torch.equal(t, models[i][name]), name
        back = again.optimizer_state_dict(aopt, i)
        assert back["state"].keys() == states[i]["state"].keys()
        for pid, per_param in states[i]["state"].items():
            for key, value in per_param.items():
                assert torch.equal(back["state"][pid][key], value), (pid, key)
    with pytest.raises(ValueError, match="not at the same update"):
        opt.step()  # seed 0 one step ahead of the others
        again.load_optimizer_state_dicts(aopt, [loop.optimizer_state_dict(opt, 0), *states[1:]])


def test_a_sampling_stream_from_another_kind_of_device_restarts_from_a_seed():
    """A CPU run resumed on CUDA (or back) cannot carry its generator state over: the stream
    restarts from the given seed instead of failing the cell."""
    saved = torch.Generator().manual_seed(5)
    torch.rand(7, generator=saved)  # not at its seed any more
    g = torch.Generator()
    assert restore_generator(g, saved.get_state(), 99)
    assert torch.equal(torch.randint(0, 1000, (8,), generator=g), torch.randint(0, 1000, (8,), generator=saved))
    cuda_state = torch.zeros(16, dtype=torch.uint8)  # a CUDA (Philox) generator's state: seed and offset
    assert not restore_generator(g, cuda_state, 99)
    assert torch.equal(torch.randint(0, 1000, (8,), generator=g),
                       torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(99)))


def test_pack_layout_keeps_each_cells_envs_and_seeds():
    # 3 cells of 4 envs in 2 groups: each group holds 2 envs of every cell, cell after cell
    layout = PackLayout(3, 4, [slice(0, 6), slice(6, 12)])
    assert layout.slots.tolist() == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]]
    assert [layout.cell_of(j) for j in range(12)] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    assert layout.reset_seeds([100, 200, 300]).tolist() == [100, 101, 200, 201, 300, 301, 102, 103, 202, 203, 302, 303]
    # a cell's batch index t * 4 + i is (step t, its env i)
    slots = layout.batch_slots(2, torch.device("cpu"))
    assert slots[1].tolist() == [2, 3, 8, 9, 14, 15, 20, 21]
    with pytest.raises(ValueError, match="equal shares"):
        PackLayout(3, 4, [slice(0, 5), slice(5, 12)])


def test_packed_job_resumes_each_cell_where_it_is(tmp_path):
    """One cell done, two interrupted at the same update, one new: the done one is skipped,
    the two resume together, the new one trains after them; every cell's rows once."""
    total = f"total_timesteps={4 * STEPS_PER_UPDATE}"
    res = run(tmp_path, "seed=1", total)
    assert res.returncode == 0, res.stderr[-2000:]
    done_rows = cell(tmp_path, 1).metrics.read_text()

    proc = subprocess.Popen(train_cmd(tmp_path, "seed=2", "pack=seeds", "pack.seeds=[2,3]", total), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(cell(tmp_path, 3).metrics, 1, proc)
    proc.send_signal(signal.SIGUSR2)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR2
    stopped = {s: cell(tmp_path, s).status() for s in (2, 3)}
    assert {st["state"] for st in stopped.values()} == {"interrupted"}
    assert stopped[2]["checkpoint_update"] == stopped[3]["checkpoint_update"] < 4
    at = stopped[2]["checkpoint_update"]

    res = run(tmp_path, "pack=seeds", "pack.seeds=[1,2,3,4]", total)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "breakout/nature_cnn/seed_1 is done" in res.stdout + res.stderr
    assert cell(tmp_path, 1).metrics.read_text() == done_rows
    for s in (2, 3, 4):
        c = cell(tmp_path, s)
        assert [int(r["update"]) for r in metric_rows(c.metrics)] == [1, 2, 3, 4]
        assert (c.status()["state"], c.status()["global_step"]) == ("done", 4 * STEPS_PER_UPDATE)
    for s in (2, 3):
        assert f"resuming at update {at}/4" in cell(tmp_path, s).train_log.read_text()
        assert len(cell(tmp_path, s).status()["env_reset_seeds"]) == 2  # a start and a resume
    assert "resuming" not in cell(tmp_path, 4).train_log.read_text()


def test_pack_sweep_is_one_job_per_game_model_and_a_refused_cell_fails_alone(tmp_path):
    layout = RunLayout(tmp_path)
    broken = layout.cell("smoke", "breakout", "daqn", 1)
    broken.write_status(state="interrupted")  # results without config.yaml: refused
    res = subprocess.run([PYTHON, "src/train.py", "-m", "experiment=smoke", f"run_root={tmp_path}", "seed=0-2",
                          "model=nature_cnn,daqn", "pack=seeds", f"total_timesteps={STEPS_PER_UPDATE}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "#0 : " in out and "#1 : " in out and "#2 : " not in out  # 2 jobs for 6 cells
    assert "pack.seeds=[0,1,2]" in out
    assert res.stderr.strip().splitlines()[-1].startswith("error: 1 of 6 cells failed (the others finished)")
    assert "breakout/daqn/seed_1" in out and "no config.yaml" in out
    states = {(c.cell.model, c.cell.seed): c.status().get("state") for c in layout.cells("smoke")}
    assert states == {("nature_cnn", 0): "done", ("nature_cnn", 1): "done", ("nature_cnn", 2): "done",
                      ("daqn", 0): "done", ("daqn", 1): "interrupted", ("daqn", 2): "done"}


def test_packed_evaluation_plays_each_cells_own_games(tmp_path):
    res = run(tmp_path, "pack=seeds", "pack.seeds=[1,2]", f"total_timesteps={STEPS_PER_UPDATE}")
    assert res.returncode == 0, res.stderr[-2000:]
    settings = ["eval.games=3", "eval.num_envs=2", "eval.max_frames=1500"]
    packed = subprocess.run([PYTHON, "src/evaluate.py", "-m", "experiment=smoke", f"run_root={tmp_path}", "seed=1,2",
                             "pack=seeds", *settings], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert packed.returncode == 0, packed.stderr[-2000:]
    assert "pack.seeds=[1,2]" in packed.stdout + packed.stderr
    games = {s: pd.read_parquet(cell(tmp_path, s).eval_games("breakout")) for s in (1, 2)}
    assert [len(g) for g in games.values()] == [3, 3]

    # seed 2 evaluated alone, from a copy of its cell: the same games
    alone_root = tmp_path / "alone"
    src, dst = cell(tmp_path, 2), RunLayout(alone_root).cell("smoke", "breakout", "nature_cnn", 2)
    dst.path.mkdir(parents=True)
    for name in ("config.yaml", "status.json", "checkpoint.pt"):
        (dst.path / name).write_bytes((src.path / name).read_bytes())
    alone = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", f"run_root={alone_root}", "seed=2", *settings],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-2000:]
    columns = ["env", "game", "score", "frames", "agent_steps", "truncated"]
    pd.testing.assert_frame_equal(pd.read_parquet(dst.eval_games("breakout"))[columns], games[2][columns])


def test_a_refused_cell_of_a_packed_evaluation_fails_alone(tmp_path):
    res = run(tmp_path, "pack=seeds", "pack.seeds=[1,2]", f"total_timesteps={STEPS_PER_UPDATE}")
    assert res.returncode == 0, res.stderr[-2000:]
    damaged = cell(tmp_path, 1).checkpoint
    damaged.write_bytes(damaged.read_bytes()[:1000])
    res = subprocess.run([PYTHON, "src/evaluate.py", "experiment=smoke", f"run_root={tmp_path}", "pack=seeds",
                          "pack.seeds=[1,2]", "eval.games=2", "eval.num_envs=2", "eval.max_frames=1000"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 cells of this packed job were refused (the others ran)"), last
    assert "breakout/nature_cnn/seed_1" in last and "checkpoint" in last
    assert len(pd.read_parquet(cell(tmp_path, 2).eval_games("breakout"))) == 2
    assert not cell(tmp_path, 1).eval_games("breakout").exists()


def test_bad_pack_input_is_one_line(tmp_path):
    for overrides, message in [
        (["pack.seeds=[1,2]"], "pack.seeds=[1, 2]: a job trains several seeds only with pack=seeds"),
        (["pack=seeds", "pack.seeds=[1,1]"], "a seed appears twice"),
        (["pack=seeds", "pack.seeds=3"], "pack.seeds=3: expected a list of seeds"),
        (["pack=seeds", "pack.seeds=[1,2]", "pack.batching=grouped"], "pack.batching=grouped: expected one of auto, vmap, loop"),
        (["pack=seeds", "pack.seeds=[7,2]"], "seed=1: a packed job's seed must be one of pack.seeds=[7, 2]"),
    ]:
        res = run(tmp_path, *overrides)
        assert res.returncode == 2
        assert res.stderr.strip().splitlines()[-1].startswith("error: ") and message in res.stderr, res.stderr
    assert not any(tmp_path.iterdir())


def test_every_model_packs():
    obs = torch.randint(0, 256, (2, 3, 4, 84, 84), dtype=torch.uint8)
    from fls.models.registry import MODELS
    for name in MODELS:
        pack = SeedPack.build(name, 6, [0, 1], torch.device("cpu"), batching="vmap")
        logits, values = pack(obs)
        torch.manual_seed(1)
        lone = build_model(name, 6)  # seed 1's model as its lone run builds it: the pack's second
        for key, value in lone.state_dict().items():
            assert torch.equal(pack.state_dict(1)[key], value), (name, key)
        ref_logits, ref_values = lone(obs[1])
        torch.testing.assert_close(logits[1], ref_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(values[1], ref_values, rtol=1e-4, atol=1e-5)


def test_each_packed_cell_has_its_own_wandb_run(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline")
    res = subprocess.run(train_cmd(tmp_path, "pack=seeds", "pack.seeds=[1,2]", f"total_timesteps={2 * STEPS_PER_UPDATE}",
                                   "logger=wandb"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = {}
    for s in (1, 2):
        [log] = find_runs(cell(tmp_path, s).wandb_dir)
        runs[s] = read_run(log)
        assert runs[s].id == cell(tmp_path, s).status()["wandb_run_id"]
        assert runs[s].name == f"breakout/nature_cnn/seed_{s}"
        losses = [row["losses/value_loss"] for row in runs[s].history if "losses/value_loss" in row]
        assert losses == pytest.approx([float(r["losses/value_loss"]) for r in metric_rows(cell(tmp_path, s).metrics)],
                                       rel=1e-5)
    assert runs[1].id != runs[2].id
