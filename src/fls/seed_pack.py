"""k models of one architecture that act and learn as one: the seeds of a packed job.

A packed job (`pack=seeds`, conf/pack/seeds.yaml) trains or evaluates the cells of one
(game, model) that differ only in seed in one process. How its k models run is
`pack.batching`:

- `vmap`: their parameters stacked (`torch.func.stack_module_state`), one vmapped
  `functional_call` serves all k at once: one kernel per layer for every seed, what fills a
  GPU that one small network leaves idle;
- `loop`: the k models one after another, each as a plain module: on a CPU, whose cores one
  model's convolutions already keep busy, vmap's batched (grouped) convolutions are slower
  than k plain ones (bench P2);
- `auto` (the default): vmap on CUDA, loop elsewhere.

Either way everything that makes a seed's PPO its own stays per seed:

- its random stream: a `torch.Generator` per seed, started where that seed's lone run has
  torch's global RNG after building its model, so it samples the same actions and the same
  minibatch permutations as when it trains alone (under vmap, `randomness="different"`
  would draw every seed's noise from one generator, so a seed's actions would depend on k).
  Exactly the same under loop; under vmap the batched kernels round differently, so a draw
  that sits on a probability boundary can flip (tests/test_pack.py: the first update agrees);
- its gradient-norm clip: one norm per seed, not one across the pack;
- its Adam state. Adam is elementwise, so one Adam over every seed's parameters is k Adams
  as long as the k step together on one schedule (same step count and learning rate): a
  packed run only ever holds cells at the same update (fls.training_cell).
The PPO loss is the sum of the seeds' losses (a mean would scale each seed's gradient by 1/k,
and neither the clip threshold nor Adam's eps is scale-invariant).

With k = 1 the model is used as it is: the plain single-cell trainer, with every speed
option of conf/speed/ (in loop mode each model gets them).

Shapes: observations k x n x 4 x 84 x 84 (seed first), logits k x n x A, values k x n.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state

from fls.config import PACK_BATCHING
from fls.models import ActorCritic, apply_speed_options, build_model

log = logging.getLogger(__name__)


def seed_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator a seed's policy samples from: in the state torch's global RNG of the
    seed's lone run is in after torch.manual_seed(seed) and building its model on the CPU
    (call it right after building), on `device`."""
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:  # the model was built on the CPU: the device's RNG is still at manual_seed(seed)
        generator.manual_seed(seed)
    return generator


def resolve_batching(batching: str, device: torch.device) -> str:
    """`pack.batching` as run on `device`: auto is vmap on CUDA, loop elsewhere."""
    if batching not in PACK_BATCHING:
        raise ValueError(f"pack.batching={batching}: expected one of {', '.join(PACK_BATCHING)}")
    if batching == "auto":
        return "vmap" if device.type == "cuda" else "loop"
    return batching


def restore_generator(generator: torch.Generator, state: torch.Tensor, fallback_seed: int) -> bool:
    """Put a checkpoint's sampling stream back into `generator`. A stream saved on another
    kind of device (a CPU run resumed on CUDA, or back) cannot move: the generator is then
    seeded with `fallback_seed` instead and False returned."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return True
    generator.manual_seed(fallback_seed)
    return False


class SeedPack:
    """The models of k seeds, their generators, and the per-seed parts of PPO."""

    def __init__(self, models: Sequence[ActorCritic], generators: Sequence[torch.Generator], batching: str = "loop"):
        assert len(models) == len(generators) >= 1 and batching in ("vmap", "loop")
        self.k = len(models)
        self.generators = list(generators)
        self.name = models[0].name
        self.batching = "loop" if self.k == 1 else batching
        if self.batching == "loop":
            self.models: list[ActorCritic] = list(models)
            self._per_model = len(list(models[0].parameters()))
            return
        self.models = []
        self._template = models[0]  # its own tensors are not trained: stack_module_state copies
        self.params, self.buffers = stack_module_state(list(models))
        # A copy on the meta device carries the architecture; the stacked tensors its numbers.
        skeleton = copy.deepcopy(models[0]).to("meta")

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], obs: torch.Tensor):
            return functional_call(skeleton, (params, buffers), (obs,))

        self._forward = torch.vmap(one, in_dims=(0, 0, 0))

    @classmethod
    def build(cls, model_name: str, num_actions: int, seeds: Sequence[int], device: torch.device, *,
              batching: str = "auto", channels_last: bool = False, compile: bool = False) -> SeedPack:
        """Freshly initialised models, each exactly as `seed`'s lone run builds it."""
        batching = resolve_batching(batching, device)
        models, generators = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_model(model_name, num_actions)
            generators.append(seed_generator(seed, device))
            models.append(model.to(device))
        pack = cls(models, generators, batching)
        if pack.batching == "loop":
            for model in pack.models:
                apply_speed_options(model, channels_last=channels_last, compile=compile)
            return pack
        if channels_last:
            log.info("speed.channels_last: not applied to a packed job's stacked weights (vmap turns its convs "
                     "into grouped convs of its own layout)")
        if compile:
            pack._forward = torch.compile(pack._forward)
        return pack

    # Acting

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits k x n x A, values k x n) of uint8 observations k x n x 4 x 84 x 84."""
        if self.batching == "vmap":
            return self._forward(self.params, self.buffers, obs)
        if self.k == 1:
            logits, value = self.models[0](obs[0])
            return logits.unsqueeze(0), value.unsqueeze(0)
        outs = [model(o) for model, o in zip(self.models, obs)]
        return torch.stack([lg for lg, _ in outs]), torch.stack([v for _, v in outs])

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One action per env, each seed's from its own generator: k x n."""
        return torch.stack([ActorCritic.sample(ActorCritic.distribution(logits[s]), g)
                            for s, g in enumerate(self.generators)])

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """ActorCritic.get_action_and_value for k seeds: each output has the seed first."""
        logits, value = self(obs)
        probs = ActorCritic.distribution(logits)
        if action is None:
            action = self.sample(logits)
        return action, probs.log_prob(action), probs.entropy(), value

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)[1]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        """ActorCritic.act for k seeds: k x n actions."""
        logits, _ = self(obs)
        return logits.argmax(-1) if greedy else self.sample(logits)

    # Learning

    def parameters(self) -> list[torch.Tensor]:
        """Every seed's parameters: in loop mode seed after seed (seed i's are
        [i * P, (i + 1) * P) of the optimizer's), under vmap the stacked tensors."""
        if self.batching == "loop":
            return [p for model in self.models for p in model.parameters()]
        return list(self.params.values())

    def randperm(self, n: int, device: torch.device) -> torch.Tensor:
        """A permutation of range(n) per seed, from its generator: k x n."""
        return torch.stack([torch.randperm(n, device=device, generator=g) for g in self.generators])

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """nn.utils.clip_grad_norm_ of each seed's own gradient; returns the k norms."""
        if self.batching == "loop":
            return torch.stack([nn.utils.clip_grad_norm_(model.parameters(), max_norm) for model in self.models])
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # parameters x k
        total = norms.norm(dim=0)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
        return total

    # One seed's share: what its checkpoint holds (a lone run's model and Adam state dicts),
    # the same whichever batching saved it

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        if self.batching == "loop":
            return self.models[i].state_dict()
        return {name: t[i].detach().clone() for name, t in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, i: int, state: dict[str, torch.Tensor]) -> None:
        if self.batching == "loop":
            self.models[i].load_state_dict(state)
            return
        stacked = {**self.params, **self.buffers}
        missing, unexpected = sorted(set(stacked) - set(state)), sorted(set(state) - set(stacked))
        if missing or unexpected:
            raise RuntimeError(f"Error(s) in loading state_dict for {self.name}: missing keys {missing}, "
                               f"unexpected keys {unexpected}")
        with torch.no_grad():
            for name, t in stacked.items():
                t[i].copy_(state[name])

    def member(self, i: int) -> ActorCritic:
        """Seed i's model as a module of its own: what evaluation and videos use."""
        if self.batching == "loop":
            return self.models[i]
        model = copy.deepcopy(self._template)
        model.load_state_dict(self.state_dict(i))
        return model

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer, i: int) -> dict[str, Any]:
        """Seed i's part of the optimizer's state, as its lone run's optimizer.state_dict()."""
        state = optimizer.state_dict()
        if self.k == 1:
            return state
        groups = copy.deepcopy(state["param_groups"])
        if self.batching == "loop":
            first, per = i * self._per_model, self._per_model
            for g in groups:
                g["params"] = list(range(per))
            return {"state": {pid - first: copy.deepcopy(v) for pid, v in state["state"].items()
                              if first <= pid < first + per},
                    "param_groups": groups}
        return {
            "state": {pid: {key: value[i].clone() if _per_seed(key, value) else copy.deepcopy(value)
                            for key, value in per_param.items()}
                      for pid, per_param in state["state"].items()},
            "param_groups": groups,
        }

    def load_optimizer_state_dicts(self, optimizer: torch.optim.Optimizer, states: Sequence[dict[str, Any]]) -> None:
        """The seeds' saved optimizer states (their lone runs' format) into the one optimizer.
        Their shared entries (Adam's step count) must agree: the seeds step in lockstep."""
        if self.k == 1:
            optimizer.load_state_dict(states[0])
            return
        first = states[0]
        merged: dict[int, dict[str, Any]] = {}
        if self.batching == "loop":
            per = self._per_model
            for pid, per_param in first["state"].items():
                for key, value in per_param.items():
                    if not _per_seed(key, value):
                        _agree(key, [s["state"][pid][key] for s in states])
            for i, s in enumerate(states):
                merged.update({pid + i * per: v for pid, v in s["state"].items()})
            groups = copy.deepcopy(first["param_groups"])
            for g in groups:
                g["params"] = list(range(self.k * per))
            optimizer.load_state_dict({"state": merged, "param_groups": groups})
            return
        for pid, per_param in first["state"].items():
            merged[pid] = {}
            for key, value in per_param.items():
                values = [s["state"][pid][key] for s in states]
                if _per_seed(key, value):
                    merged[pid][key] = torch.stack(values)
                else:
                    _agree(key, values)
                    merged[pid][key] = value
        optimizer.load_state_dict({"state": merged, "param_groups": first["param_groups"]})


def _agree(key: str, values: Sequence[Any]) -> None:
    if any(not _same(v, values[0]) for v in values[1:]):
        raise ValueError(f"optimizer state {key!r} differs between the packed seeds: their cells are not at the same update")


def _per_seed(key: str, value: Any) -> bool:
    """An optimizer state entry of each seed's own (Adam's moments), not shared (its step)."""
    return torch.is_tensor(value) and key != "step"


def _same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    return a == b


class PackLayout:
    """Where each cell's envs sit in a packed job's one vector env.

    Every env group of the vector env (speed.env_groups; make_vec_env(cells=k)) holds the
    same share of each cell's envs, cell after cell, so one group's observations reshape to
    k x share for the pack's forward. With one cell and one group, slot = env index.
    """

    def __init__(self, k: int, num_envs: int, groups: Sequence[slice]):
        self.k, self.num_envs = k, num_envs
        self.slots = np.empty((k, num_envs), dtype=np.int64)  # [cell, env] -> slot of the vector env
        offset = 0
        for g in groups:
            size = g.stop - g.start
            if size % k:
                raise ValueError(f"env group {g} of {size} envs is not {k} equal shares (make_vec_env(cells={k}))")
            share = size // k
            for s in range(k):
                self.slots[s, offset:offset + share] = g.start + s * share + np.arange(share)
            offset += share
        if offset != num_envs:
            raise ValueError(f"the env groups hold {offset} envs per cell, not {num_envs}")
        self._cell = np.empty(k * num_envs, dtype=np.int64)
        self._cell[self.slots] = np.arange(k)[:, None]

    def cell_of(self, slot: int) -> int:
        return int(self._cell[slot])

    def by_cell(self, group_values: torch.Tensor) -> torch.Tensor:
        """One group's slots (k x share of them, cell after cell) as k x share x ..."""
        return group_values.reshape(self.k, -1, *group_values.shape[1:])

    def reset_seeds(self, cell_seeds: Sequence[int]) -> np.ndarray:
        """Each slot's reset seed: env i of a cell on that cell's seed + i."""
        seeds = np.empty(self.k * self.num_envs, dtype=np.int64)
        for s, seed in enumerate(cell_seeds):
            seeds[self.slots[s]] = int(seed) + np.arange(self.num_envs)
        return seeds

    def batch_slots(self, num_steps: int, device: torch.device) -> torch.Tensor:
        """k x (num_steps x num_envs): each cell's batch index b = t * num_envs + i (a lone
        cell's order) -> the index of (step t, its env i) in the flattened rollout storage."""
        t = np.arange(num_steps)[:, None, None]
        flat = t * (self.k * self.num_envs) + self.slots[None]  # steps x k x envs
        return torch.from_numpy(flat.transpose(1, 0, 2).reshape(self.k, -1).copy()).to(device)
