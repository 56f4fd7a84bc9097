"""PPO on Atari with any model of the registry: Baselines ppo2 semantics, CleanRL's shape.

    python src/train.py                                        one cell from the defaults
    python src/train.py -m game=breakout,seaquest model=sparse_fls seed=0-4   a sweep

One cell = (study, game, model, seed). This file is the algorithm; the cell's life cycle
(skip when done, resume, checkpoints, signals, status, the metric sinks) is
fls.training_run.TrainingRun. Settings: conf/train.yaml and its groups (conf/ppo/baselines.yaml
is docs/protocol.md#ppo).
"""

import random
import time
from functools import partial

import hydra
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from omegaconf import DictConfig

from fls import checkpoint
from fls.cell_lifecycle import refuse
from fls.cli import check_command_line
from fls.config import check_train_config, resolve_device
from fls.errors import ConfigError
from fls.envs import make_vec_env
from fls.models import apply_speed_options, autocast_context, build_model
from fls.rundir import CellBusy, CellDamaged
from fls.train_log import X_AXIS
from fls.training_run import TrainingRun


def train(cfg: DictConfig) -> dict | None:
    ppo = cfg.ppo
    num_envs, num_steps = int(cfg.num_envs), int(ppo.num_steps)
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // int(ppo.num_minibatches)
    num_updates = int(cfg.total_timesteps) // batch_size
    run = TrainingRun.open(cfg, num_updates, batch_size)
    if run is None:
        return None  # done already
    with run:
        device = resolve_device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(int(cfg.torch_threads))

        # Seeding
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # Env and agent (conf/speed/ changes how they run, not what they compute)
        speed = cfg.speed
        envs = run.closing(make_vec_env(cfg.game, cfg.env, num_envs, groups=int(speed.env_groups)))
        agent = build_model(cfg.model.name, envs.num_actions).to(device)
        apply_speed_options(agent, channels_last=speed.channels_last, compile=speed.compile)
        autocast = partial(autocast_context, device, bool(speed.bf16))
        fused = bool(speed.fused_adam) and device.type == "cuda"
        optimizer = optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps, fused=fused or None)
        run.resume(agent, optimizer, device, model_name=cfg.model.name, game=cfg.game.name, num_actions=envs.num_actions)

        # Storage, preallocated on the device; observations stay uint8 until the model
        obs = torch.zeros((num_steps, num_envs, *envs.observation_shape), dtype=torch.uint8, device=device)
        actions = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
        logprobs = torch.zeros((num_steps, num_envs), device=device)
        rewards = torch.zeros((num_steps, num_envs), device=device)
        dones = torch.zeros((num_steps, num_envs), device=device)
        values = torch.zeros((num_steps, num_envs), device=device)

        # Start the games
        next_obs = torch.from_numpy(envs.reset(seed=run.env_seed)).to(device)
        next_done = torch.zeros(num_envs, device=device)
        global_step, start_time, start_step = run.global_step, time.perf_counter(), run.global_step

        def record(step: int, group: slice, frames: np.ndarray, result) -> None:
            """The envs' answer to the actions of `step`: reward, next observation, game ends."""
            # Rewards clipped to their sign for learning; game scores stay unclipped
            rewards[step, group] = torch.from_numpy(np.sign(result.reward)).to(device)
            next_obs[group] = torch.from_numpy(frames).to(device)
            next_done[group] = torch.from_numpy(result.done.astype(np.float32)).to(device)
            ended = result.game_over
            run.games.add(result.game_score[ended], result.game_frames[ended])

        for update in run.updates():
            # Learning rate annealed linearly to 0 over the whole run
            if ppo.anneal_lr:
                frac = 1.0 - (update - 1.0) / num_updates
                optimizer.param_groups[0]["lr"] = frac * ppo.learning_rate

            # Rollout (envs.pipeline: the policy acts for one env group while the others play)
            for step, group in envs.pipeline(num_steps, record):
                obs[step, group] = next_obs[group]
                dones[step, group] = next_done[group]
                with torch.no_grad(), autocast():
                    action, logprob, _, value = agent.get_action_and_value(next_obs[group])
                values[step, group] = value
                actions[step, group] = action
                logprobs[step, group] = logprob
                envs.send(group, action.cpu().numpy())
            global_step += batch_size

            # Generalised advantage estimation; a lost life ends the bootstrapped episode
            with torch.no_grad(), autocast():
                next_value = agent.get_value(next_obs)
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

            # Flatten the batch
            b_obs = obs.reshape((-1, *envs.observation_shape))
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape(-1)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            # Optimise policy and value: epochs of shuffled minibatches
            clipfracs = []
            for epoch in range(ppo.update_epochs):
                b_inds = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = b_inds[start : start + minibatch_size]
                    with autocast():
                        _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > ppo.clip_coef).float().mean())

                    mb_advantages = b_advantages[mb_inds]
                    if ppo.norm_adv:  # population std, as numpy's in Baselines
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std(unbiased=False) + 1e-8)

                    # Policy loss
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - ppo.clip_coef, 1 + ppo.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    # Value loss, clipped around the old values with the same range
                    if ppo.clip_vloss:
                        v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                        v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -ppo.clip_coef, ppo.clip_coef)
                        v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - ppo.ent_coef * entropy_loss + v_loss * ppo.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), ppo.max_grad_norm)
                    optimizer.step()

            # Record the update
            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            elapsed = time.perf_counter() - start_time
            run.end_update(update, {
                "update": update,
                "global_step": global_step,
                X_AXIS: global_step * int(cfg.env.frame_skip),
                "global/seconds": elapsed,
                "charts/eprewmean": run.games.mean_score,
                "charts/eplenmean": run.games.mean_frames,
                "charts/games": run.games.count,
                "charts/SPS": (global_step - start_step) / elapsed,
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/value_loss": v_loss.item(),
                "losses/policy_loss": pg_loss.item(),
                "losses/entropy": entropy_loss.item(),
                "losses/old_approx_kl": old_approx_kl.item(),
                "losses/approx_kl": approx_kl.item(),
                "losses/clipfrac": torch.stack(clipfracs).mean().item(),
                "losses/explained_variance": float(explained_var),
            })
    return run.result


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    try:
        return train(cfg)
    except (ConfigError, checkpoint.CheckpointError, CellBusy, CellDamaged) as e:
        refuse(cfg, e)  # one line; in a sweep, this cell alone fails


if __name__ == "__main__":
    check_command_line("train", check_train_config)
    main()
