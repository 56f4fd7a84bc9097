"""P2: packed seeds (pack=seeds, fls.seed_pack) against the same seeds trained one after another.

For each model and k in (1, 2, 5), all measured in this run, Breakout, 8 envs per cell:
- packed: `src/train.py pack=seeds pack.seeds=[1..k]`, aggregate agent steps per second of
  the k cells (steady state: updates after the first), with pack.batching=auto (vmap on a
  GPU, loop on a CPU); at k = 5 also the other batching, for reference;
- sequential: k lone runs of the same seeds one after another, their aggregate (total steps
  over total time);
- the env-only ceiling of one vector env of k x 8 envs (random actions);
- where a packed update's time goes: the envs (k x 8 x 128 steps at the env-only rate), the
  rollout's forward passes (one call per step running all k models, timed alone), the PPO update
  (4 epochs x 4 minibatches of forward + backward + clip + Adam for all k, timed alone), and
  the rest (bookkeeping, GAE, copies), what the trainer took beyond the three.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time

import torch
import torch.optim as optim

from bench import throughput
from fls.facts import REPO, script
from fls.rundir import RunLayout
from fls.seed_pack import SeedPack, resolve_batching

NUM_ENVS, NUM_STEPS, EPOCHS, MINIBATCHES = 8, 128, 4, 4


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _rows(root: str, model: str, seed: int) -> list[dict]:
    with RunLayout(root).cell("bench", "breakout", model, seed).metrics.open() as f:
        return list(csv.DictReader(f))


def _steady(rows: list[dict]) -> tuple[int, float]:
    """(agent steps, seconds) of the updates after the first (start-up not counted)."""
    first, last = rows[0], rows[-1]
    return int(last["global_step"]) - int(first["global_step"]), float(last["global/seconds"]) - float(first["global/seconds"])


def train(model: str, seeds: list[int], updates: int, backend: str, batching: str = "auto") -> list[list[dict]]:
    """Run src/train.py on `seeds` (packed when several) and return each cell's metric rows."""
    with tempfile.TemporaryDirectory() as root:
        cmd = [sys.executable, str(script("train")), f"run_root={root}", "study=bench", f"seed={seeds[0]}", "logger=none",
               "game=breakout", f"model={model}", f"num_envs={NUM_ENVS}",
               f"total_timesteps={NUM_ENVS * NUM_STEPS * (updates + 1)}", "checkpoint_every=1000",
               f"env.backend={backend}"]
        if len(seeds) > 1:
            cmd += ["pack=seeds", f"pack.seeds=[{','.join(map(str, seeds))}]", f"pack.batching={batching}"]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        return [_rows(root, model, s) for s in seeds]


def _sync(device: str) -> None:
    """Wait for the GPU's queued kernels: without it a CUDA timer measures only their launch."""
    if device == "cuda":
        torch.cuda.synchronize()


def forward_seconds(model: str, k: int, device: str, batching: str) -> float:
    """One rollout's forward passes: NUM_STEPS calls for k x NUM_ENVS observations."""
    pack = SeedPack.build(model, 4, list(range(1, k + 1)), torch.device(device), batching=batching)
    obs = torch.randint(0, 256, (k, NUM_ENVS, 4, 84, 84), dtype=torch.uint8, device=device)
    with torch.no_grad():
        pack.get_action_and_value(obs)
        _sync(device)
        start = time.perf_counter()
        for _ in range(NUM_STEPS):
            pack.get_action_and_value(obs)
        _sync(device)
    return time.perf_counter() - start


def update_seconds(model: str, k: int, device: str, batching: str) -> float:
    """One PPO update's arithmetic: EPOCHS x MINIBATCHES forward + backward + clip + Adam step."""
    pack = SeedPack.build(model, 4, list(range(1, k + 1)), torch.device(device), batching=batching)
    optimizer = optim.Adam(pack.parameters(), lr=2.5e-4, eps=1e-5)
    minibatch = NUM_ENVS * NUM_STEPS // MINIBATCHES
    obs = torch.randint(0, 256, (k, minibatch, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.randint(0, 4, (k, minibatch), device=device)

    def step() -> None:
        _, logprob, entropy, value = pack.get_action_and_value(obs, actions)
        loss = (-logprob.mean(1) - 0.01 * entropy.mean(1) + 0.5 * (value ** 2).mean(1)).sum()
        optimizer.zero_grad()
        loss.backward()
        pack.clip_grad_norm_(0.5)
        optimizer.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(EPOCHS * MINIBATCHES):
        step()
    _sync(device)
    return time.perf_counter() - start


def run(models: list[str], ks: list[int], updates: int, backend: str = "gymnasium", env_steps: int = 100) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = resolve_batching("auto", torch.device(device))
    other = "loop" if auto == "vmap" else "vmap"
    results = []
    for model in models:
        log(f"P2: {model}, {max(ks)} lone runs one after another")
        lone = [_steady(train(model, [s], updates, backend)[0]) for s in range(1, max(ks) + 1)]
        for k in ks:
            env = throughput.env_sps(backend, k * NUM_ENVS, env_steps)
            for batching in [auto] + ([other] if k == max(ks) > 1 else []):
                log(f"P2: {model}, k={k} packed ({batching})")
                cells = train(model, list(range(1, k + 1)), updates, backend, batching)
                steps, seconds = _steady(cells[0])
                packed = k * steps / seconds
                sequential = sum(s for s, _ in lone[:k]) / sum(t for _, t in lone[:k])
                per_update = seconds / (steps / (NUM_ENVS * NUM_STEPS))
                parts = {"env": k * NUM_ENVS * NUM_STEPS / env,
                         "rollout_forward": forward_seconds(model, k, device, batching),
                         "update": update_seconds(model, k, device, batching)}
                parts["rest"] = max(0.0, per_update - sum(parts.values()))
                results.append({"id": "P2", "model": model, "k": k, "batching": batching if k > 1 else "-",
                                "backend": backend, "device": device, "default": batching == auto,
                                "packed_sps": packed, "sequential_sps": sequential, "env_only_sps": env,
                                "packed_over_sequential": packed / sequential, "packed_over_env_only": packed / env,
                                "packed_over_one_cell": packed / (lone[0][0] / lone[0][1]),
                                "update_seconds": per_update, "parts_seconds": parts})
    return results


def paper_grid_hours(rows: list[dict]) -> dict | None:
    """The paper's grid (6 games x 15 models x 5 seeds x 5e7 agent steps) at the measured
    packed k = 5 rate of each model, averaged over the models measured: GPU-hours (on a GPU
    machine) of training alone, one packed job per (game, model) on one device."""
    k5 = [r for r in rows if r["k"] == 5 and r["default"]]
    if not k5:
        return None
    rate = sum(r["packed_sps"] for r in k5) / len(k5)
    steps = 6 * 15 * 5 * 5e7
    return {"agent_steps": steps, "k5_aggregate_sps": rate, "device_hours": steps / rate / 3600,
            "device_hours_lone": steps / (sum(r["packed_sps"] / r["packed_over_one_cell"] for r in k5) / len(k5)) / 3600}
