"""PPO on Atari with any model of the registry: Baselines ppo2 semantics, CleanRL's shape.

    python src/train.py                                        one cell from the defaults
    python src/train.py -m game=breakout,seaquest model=sparse_fls seed=0-4   a sweep

One cell = (study, game, model, seed); with pack=seeds one job trains the cells of several
seeds together, each as it would train alone (fls.seed_pack). This file is the algorithm; the cells' life cycle
(skip when done, resume, checkpoints, signals, status, the metric sinks) is
fls.training_cell.TrainingRun. Settings: conf/train.yaml and its groups (conf/ppo/baselines.yaml
is docs/protocol.md#ppo).
"""

import random
import time
from functools import partial

import hydra
import numpy as np
import torch
import torch.optim as optim
from omegaconf import DictConfig

from fls.cli import app, check_command_line
from fls.config import cell_configs, pack_batching, use_device
from fls.envs import make_vec_env
from fls.models import autocast_context
from fls.rundir import X_AXIS
from fls.seed_pack import PackLayout, SeedPack
from fls.training_cell import TrainingRun, check_train_config


def train(cfg: DictConfig) -> dict | None:
    """Train the cell `cfg` names, or under pack=seeds the cells of pack.seeds together."""
    with TrainingRun.open(cfg) as runs:
        results = {}
        for run in runs:  # cells that resume at the same update; usually one run
            with run:
                ppo(cfg, run)
            results.update(run.results)
    if len(cell_configs(cfg)) == 1:
        return next(iter(results.values()), None)  # None: done already
    return results


def ppo(cfg: DictConfig, run: TrainingRun) -> None:
    """PPO for the k cells of `run`: k = 1, or the seeds of a packed job, each with its own
    envs, model, random stream, minibatches, advantage normalisation, clip and Adam state."""
    ppo = cfg.ppo
    k, num_envs, num_steps = len(run.cells), int(cfg.num_envs), int(ppo.num_steps)
    batch_size = run.schedule.batch_size  # per cell: num_envs x num_steps
    minibatch_size = batch_size // int(ppo.num_minibatches)
    device = use_device(cfg)  # and torch's CPU threads (torch_threads)

    # Seeding: the envs by seed + i, the rest by each cell's torch generator (fls.seed_pack)
    random.seed(run.seeds[0])
    np.random.seed(run.seeds[0])

    # Envs and agents (conf/speed/ changes how they run, not what they compute). One vector
    # env holds every cell's envs; `layout` says which cell and env each of its slots is.
    speed = cfg.speed
    envs = run.closing(make_vec_env(cfg.game, cfg.env, k * num_envs, groups=int(speed.env_groups), cells=k))
    layout = PackLayout(k, num_envs, envs.groups)
    agents = SeedPack.build(cfg.model.name, envs.num_actions, run.seeds, device, batching=pack_batching(cfg),
                            channels_last=speed.channels_last, compile=speed.compile)
    autocast = partial(autocast_context, device, bool(speed.bf16))
    fused = bool(speed.fused_adam) and device.type == "cuda"
    optimizer = optim.Adam(agents.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps, fused=fused or None)
    run.resume(agents, optimizer, device, model_name=cfg.model.name, game=cfg.game.name, num_actions=envs.num_actions)

    # Storage, preallocated on the device, env slots in the vector env's order; uint8 frames
    n = k * num_envs
    obs = torch.zeros((num_steps, n, *envs.observation_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((num_steps, n), dtype=torch.long, device=device)
    logprobs = torch.zeros((num_steps, n), device=device)
    rewards = torch.zeros((num_steps, n), device=device)
    dones = torch.zeros((num_steps, n), device=device)
    values = torch.zeros((num_steps, n), device=device)
    # batch index b = t * num_envs + i of each cell (a lone cell's order) -> slot in the flat storage
    b_slots = layout.batch_slots(num_steps, device)

    # Start the games: each cell's env i on its own seed + i, as when it trains alone
    next_obs = torch.from_numpy(envs.reset(seed=layout.reset_seeds([c.env_seed for c in run.cells]))).to(device)
    next_done = torch.zeros(n, device=device)
    global_step, start_time, start_step = run.global_step, time.perf_counter(), run.global_step

    def record(step: int, group: slice, frames: np.ndarray, result) -> None:
        """The envs' answer to the actions of `step`: reward, next observation, game ends."""
        # Rewards clipped to their sign for learning; game scores stay unclipped
        rewards[step, group] = torch.from_numpy(np.sign(result.reward)).to(device)
        next_obs[group] = torch.from_numpy(frames).to(device)
        next_done[group] = torch.from_numpy(result.done.astype(np.float32)).to(device)
        for j in np.flatnonzero(result.game_over):
            run.cells[layout.cell_of(group.start + j)].games.add(result.game_score[j:j + 1], result.game_frames[j:j + 1])

    for update in run.updates():
        # Learning rate annealed linearly to 0 over the whole run
        if ppo.anneal_lr:
            optimizer.param_groups[0]["lr"] = run.schedule.lr(update)

        # Rollout (envs.pipeline: the policy acts for one env group while the others play);
        # a group holds the same envs of every cell, cell by cell: k x its share
        for step, group in envs.pipeline(num_steps, record):
            obs[step, group] = next_obs[group]
            dones[step, group] = next_done[group]
            with torch.no_grad(), autocast():
                action, logprob, _, value = agents.get_action_and_value(layout.by_cell(next_obs[group]))
            values[step, group] = value.flatten()
            actions[step, group] = action.flatten()
            logprobs[step, group] = logprob.flatten()
            envs.send(group, action.flatten().cpu().numpy())
        global_step += batch_size

        # Generalised advantage estimation; a lost life ends the bootstrapped episode
        with torch.no_grad(), autocast():
            next_value = torch.cat([agents.get_value(layout.by_cell(next_obs[g])).flatten() for g in envs.groups])
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(num_steps)):
                if t == num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + ppo.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + ppo.gamma * ppo.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        # Flatten the batch (slots in storage order; b_slots picks each cell's batch)
        b_obs = obs.reshape((-1, *envs.observation_shape))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimise policy and value: epochs of shuffled minibatches, each cell its own
        clipfracs = []
        for epoch in range(ppo.update_epochs):
            b_inds = agents.randperm(batch_size, device)  # k x batch_size
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_slots.gather(1, b_inds[:, start : start + minibatch_size])  # k x minibatch
                with autocast():
                    _, newlogprob, entropy, newvalue = agents.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean(1)
                    approx_kl = ((ratio - 1) - logratio).mean(1)
                    clipfracs.append(((ratio - 1.0).abs() > ppo.clip_coef).float().mean(1))

                mb_advantages = b_advantages[mb_inds]
                if ppo.norm_adv:  # population std, as numpy's in Baselines; per cell
                    mb_advantages = (mb_advantages - mb_advantages.mean(1, keepdim=True)) / (
                        mb_advantages.std(1, unbiased=False, keepdim=True) + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - ppo.clip_coef, 1 + ppo.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean(1)

                # Value loss, clipped around the old values with the same range
                if ppo.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -ppo.clip_coef, ppo.clip_coef)
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean(1)
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean(1)

                entropy_loss = entropy.mean(1)
                # Summed over cells, so each cell's gradient is its own loss's
                loss = (pg_loss - ppo.ent_coef * entropy_loss + v_loss * ppo.vf_coef).sum()

                optimizer.zero_grad()
                loss.backward()
                agents.clip_grad_norm_(ppo.max_grad_norm)
                optimizer.step()

        # Record the update, one row per cell (one copy from the device)
        losses = torch.stack([v_loss, pg_loss, entropy_loss, old_approx_kl, approx_kl,
                              torch.stack(clipfracs).mean(0)]).detach().cpu().numpy()
        all_slots = b_slots.cpu().numpy()
        y_pred, y_true = b_values.cpu().numpy()[all_slots], b_returns.cpu().numpy()[all_slots]
        elapsed = time.perf_counter() - start_time
        rows = []
        for i, c in enumerate(run.cells):
            var_y = np.var(y_true[i])
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true[i] - y_pred[i]) / var_y
            rows.append({
                "update": update,
                "global_step": global_step,
                X_AXIS: global_step * int(cfg.env.frame_skip),
                "global/seconds": elapsed,
                "charts/eprewmean": c.games.mean_score,
                "charts/eplenmean": c.games.mean_frames,
                "charts/games": c.games.count,
                "charts/SPS": (global_step - start_step) / elapsed,  # this cell's agent steps per second
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/value_loss": float(losses[0, i]),
                "losses/policy_loss": float(losses[1, i]),
                "losses/entropy": float(losses[2, i]),
                "losses/old_approx_kl": float(losses[3, i]),
                "losses/approx_kl": float(losses[4, i]),
                "losses/clipfrac": float(losses[5, i]),
                "losses/explained_variance": float(explained_var),
            })
        run.end_update(update, rows)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@app  # a refusal is one line (fls.cli); in a sweep, this cell alone fails
def main(cfg: DictConfig) -> dict | None:
    return train(cfg)


if __name__ == "__main__":
    check_command_line("train", check_train_config)
    main()
