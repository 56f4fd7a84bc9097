"""PPO on Atari with any model of the registry: Baselines ppo2 semantics, CleanRL's shape.

    python src/train.py                                        one cell from the defaults
    python src/train.py -m game=breakout,seaquest model=sparse_fls seed=0-4   a sweep

One cell = (study, game, model, seed); its directory comes from fls.rundir. A finished
cell is skipped, an unfinished one resumes from its checkpoint, SIGUSR2/SIGTERM/SIGINT
checkpoint after the current update (SLURM requeues the job; it resumes here).
Settings: conf/train.yaml and its groups (ppo/baselines.yaml is SPEC.md §4).
"""

import logging
import random
import time
from collections import deque
from functools import partial

import hydra
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from omegaconf import DictConfig, OmegaConf
from torch.distributions.categorical import Categorical

from fls import checkpoint
from fls.cell_lifecycle import job_info, now, open_training_cell, refuse
from fls.config import ConfigError, resolve_device
from fls.envs import make_vec_env
from fls.models import apply_speed_options, autocast_context, build_model
from fls.preemption import Preemption
from fls.rundir import DONE, FAILED, INTERRUPTED, RUNNING
from fls.train_log import X_AXIS, MetricsCSV, Progress, WandbRun

log = logging.getLogger("train")


class Agent(nn.Module):
    """Policy and value from one registry model (uint8 frames in, scaled inside)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model(obs)[1]

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        logits, value = self.model(obs)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), value


def env_seed(seed: int, update: int) -> int:
    # Emulator state is not checkpointed: a resumed run starts new games, on seeds of its own.
    return (seed + 1_000_003 * update) % 2**31


def train(cfg: DictConfig) -> dict | None:
    cell = open_training_cell(cfg)
    if cell is None:
        return None
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    ppo = cfg.ppo
    batch_size = int(cfg.num_envs * ppo.num_steps)
    minibatch_size = batch_size // int(ppo.num_minibatches)
    num_updates = int(cfg.total_timesteps) // batch_size

    # Seeding
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # Env and agent (conf/speed/ changes how they run, not what they compute)
    speed = cfg.speed
    envs = make_vec_env(cfg.game, cfg.env, int(cfg.num_envs), groups=int(speed.env_groups))
    agent = Agent(build_model(cfg.model.name, envs.num_actions)).to(device)
    apply_speed_options(agent.model, channels_last=speed.channels_last, compile=speed.compile)
    autocast = partial(autocast_context, device, bool(speed.bf16))
    fused = bool(speed.fused_adam) and device.type == "cuda"
    optimizer = optim.Adam(agent.parameters(), lr=ppo.learning_rate, eps=ppo.adam_eps, fused=fused or None)

    # Resume: model, optimizer, counters, episode window, RNG states
    start_update, global_step, games = 0, 0, 0
    game_scores, game_frames = deque(maxlen=100), deque(maxlen=100)
    metrics = MetricsCSV(cell.metrics)
    wandb_id = cell.status().get("wandb_run_id")
    if cell.has_checkpoint():
        try:
            state = checkpoint.load(cell.checkpoint, map_location=device)
        except checkpoint.CheckpointError as e:
            cell.write_status(state=FAILED, failed_at=now(), error=str(e))
            raise
        agent.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_update, global_step, games = state["update"], state["global_step"], state["games"]
        game_scores.extend(state["game_scores"])
        game_frames.extend(state["game_frames"])
        checkpoint.set_rng_states(state["rng"])
        log.info("%s: resuming at update %d/%d (agent step %d)", cell.cell.key, start_update, num_updates, global_step)
    metrics.truncate_after(start_update)
    wandb = WandbRun(cfg.logger, cell, OmegaConf.to_container(cfg, resolve=True), wandb_id) if cfg.logger.name == "wandb" else None
    reset_seed = env_seed(cfg.seed, start_update)
    cell.write_status(
        # env i of a (re)start plays on reset_seed + i; evaluation keeps clear of these
        env_reset_seeds=[*cell.status().get("env_reset_seeds", []), reset_seed],
        num_envs=int(cfg.num_envs),
        state=RUNNING, started_at=now(), update=start_update, num_updates=num_updates,
        global_step=global_step, total_timesteps=int(cfg.total_timesteps),
        wandb_run_id=wandb.id if wandb else None, error=None, **job_info(),
    )

    # Storage, preallocated on the device; observations stay uint8 until the model
    obs = torch.zeros((ppo.num_steps, cfg.num_envs, *envs.observation_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((ppo.num_steps, cfg.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((ppo.num_steps, cfg.num_envs), device=device)
    rewards = torch.zeros((ppo.num_steps, cfg.num_envs), device=device)
    dones = torch.zeros((ppo.num_steps, cfg.num_envs), device=device)
    values = torch.zeros((ppo.num_steps, cfg.num_envs), device=device)

    # Start the games
    next_obs = torch.from_numpy(envs.reset(seed=reset_seed)).to(device)
    next_done = torch.zeros(cfg.num_envs, device=device)

    def receive(group: slice, step: int) -> None:
        """The envs' answer to the actions of `step`: reward, next observation, game ends."""
        nonlocal games
        frames, result = envs.recv(group)
        # Rewards clipped to their sign for learning; scores stay unclipped
        rewards[step, group] = torch.from_numpy(np.sign(result.reward)).to(device)
        next_obs[group] = torch.from_numpy(frames).to(device)
        next_done[group] = torch.from_numpy(result.done.astype(np.float32)).to(device)
        if result.game_over.any():
            ended = np.flatnonzero(result.game_over)
            game_scores.extend(result.game_score[ended].tolist())
            game_frames.extend(result.game_frames[ended].tolist())
            games += len(ended)

    progress = Progress(num_updates * batch_size, global_step, cfg.log_every_s, cell.cell.key)
    start_time, start_step = time.perf_counter(), global_step

    closed = []

    def close(exit_code: int) -> None:
        if closed:
            return
        closed.append(True)
        progress.close()
        envs.close()
        metrics.close()
        if wandb:
            wandb.finish(exit_code=exit_code)

    def save_checkpoint(update: int) -> None:
        checkpoint.save(
            cell.checkpoint, model=agent.model.state_dict(), optimizer=optimizer.state_dict(),
            update=update, global_step=global_step, games=games,
            game_scores=list(game_scores), game_frames=list(game_frames),
            model_name=cfg.model.name, game=cfg.game.name, num_actions=envs.num_actions,
        )
        cell.write_status(update=update, global_step=global_step, checkpoint_update=update, updated_at=now())

    try:
        with Preemption() as preemption:
            for update in range(start_update + 1, num_updates + 1):
                # Learning rate annealed linearly to 0 over the whole run
                if ppo.anneal_lr:
                    frac = 1.0 - (update - 1.0) / num_updates
                    optimizer.param_groups[0]["lr"] = frac * ppo.learning_rate

                # Rollout. The envs step in groups (speed.env_groups): while one group's
                # games run in the emulator threads, the policy acts for the next group.
                for step in range(ppo.num_steps):
                    global_step += cfg.num_envs
                    for group in envs.groups:
                        if step > 0:
                            receive(group, step - 1)
                        obs[step, group] = next_obs[group]
                        dones[step, group] = next_done[group]
                        with torch.no_grad(), autocast():
                            action, logprob, _, value = agent.get_action_and_value(next_obs[group])
                        values[step, group] = value
                        actions[step, group] = action
                        logprobs[step, group] = logprob
                        envs.send(group, action.cpu().numpy())
                for group in envs.groups:
                    receive(group, ppo.num_steps - 1)

                # Generalised advantage estimation; a lost life ends the bootstrapped episode
                with torch.no_grad(), autocast():
                    next_value = agent.get_value(next_obs)
                    advantages = torch.zeros_like(rewards)
                    lastgaelam = 0
                    for t in reversed(range(ppo.num_steps)):
                        if t == ppo.num_steps - 1:
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
                row = {
                    "update": update,
                    "global_step": global_step,
                    X_AXIS: global_step * int(cfg.env.frame_skip),
                    "global/seconds": elapsed,
                    "charts/eprewmean": float(np.mean(game_scores)) if game_scores else float("nan"),
                    "charts/eplenmean": float(np.mean(game_frames)) if game_frames else float("nan"),
                    "charts/games": games,
                    "charts/SPS": (global_step - start_step) / elapsed,
                    "charts/learning_rate": optimizer.param_groups[0]["lr"],
                    "losses/value_loss": v_loss.item(),
                    "losses/policy_loss": pg_loss.item(),
                    "losses/entropy": entropy_loss.item(),
                    "losses/old_approx_kl": old_approx_kl.item(),
                    "losses/approx_kl": approx_kl.item(),
                    "losses/clipfrac": torch.stack(clipfracs).mean().item(),
                    "losses/explained_variance": float(explained_var),
                }
                metrics.write(row)
                if wandb:
                    wandb.log(row)
                progress.update(global_step, row)

                if update % cfg.checkpoint_every == 0 or update == num_updates or preemption.requested:
                    save_checkpoint(update)
                if preemption.requested:
                    cell.write_status(state=INTERRUPTED, interrupted_at=now(), signal=preemption.signum)
                    log.warning("%s: checkpointed at update %d; exiting for requeue", cell.cell.key, update)
                    close(exit_code=1)
                    preemption.exit()
    except BaseException as e:
        if not isinstance(e, SystemExit):
            # Ctrl-C, or submitit refusing the requeue after our checkpoint (max_num_timeout
            # reached): the cell is resumable, not broken.
            interrupted = isinstance(e, KeyboardInterrupt) or cell.state == INTERRUPTED
            cell.write_status(state=INTERRUPTED if interrupted else FAILED, ended_at=now(), error=f"{type(e).__name__}: {e}")
        close(exit_code=1)
        raise
    close(exit_code=0)

    eprewmean = float(np.mean(game_scores)) if game_scores else float("nan")
    cell.write_status(state=DONE, finished_at=now(), global_step=global_step, eprewmean=eprewmean)
    log.info("%s: done, %d agent steps, eprewmean %.2f", cell.cell.key, global_step, eprewmean)
    return {"eprewmean": eprewmean, "global_step": global_step}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    try:
        return train(cfg)
    except (ConfigError, checkpoint.CheckpointError) as e:
        refuse(cfg, e)  # one line; in a sweep, this cell alone fails


if __name__ == "__main__":
    main()
