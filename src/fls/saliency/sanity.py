"""Do the maps depend on the weights? The model parameter randomisation test of Adebayo et al.
2018, "Sanity Checks for Saliency Maps" (NeurIPS), for every map fls.saliency.posthoc draws.

A map that stays the same when the weights it claims to explain are replaced by random ones
explains the input, not the agent. For each stage below the weights of some layers are
re-initialised, the map is drawn again, and each frame's new map is compared with the
trained model's:

- the cascade: from the top of the network down to its first layer, cumulatively: first the
  policy and value heads (together: both read the same hidden layer, neither is above the
  other), then the fc layer, then the encoder's layers in the reverse of the order the
  forward pass runs them, so the last stage re-initialises every weight (their Figure 2);
- `attention`: the attention module alone (the FLS module, DAQN's and RS-PPO's `attend`),
  the rest trained (their independent randomisation, for the one module that matters here);
- `random`: a whole freshly initialised model, an independent draw of the same scheme.

The layer order is read from the model, not listed per model: `layer_order` runs a forward
pass with hooks on every module that holds parameters and records the order they run in;
layers that read the same tensor (the two heads) form one stage. Re-initialised weights
are the model's own initialisation (Baselines' orthogonal init of fls.models.layers, the
gains of each layer), taken from a model of the same registry name built under the seed,
so stage k of the cascade keeps stage k-1's random layers and adds one.

Similarity, per frame, as Adebayo et al. measure it where they say:
- `spearman`: Spearman's rank correlation of the two maps' pixels (scipy.stats.spearmanr);
  NaN where either map is constant (no ranks). Every map here is >= 0 (|gradient|, ReLU'd
  Grad-CAM, squared differences, attention), so their "absolute value" variant is this one;
- `ssim`: scikit-image's structural_similarity of the two maps each scaled to [0, 1] by its
  minimum and maximum (their normalize_image; a constant map becomes all zeros), with their
  Gaussian weights (gaussian_weights=True: sigma 1.5, as Wang et al. 2004); data_range=1, the
  range of the scaled maps (their skimage release inferred 2 from the float dtype);
- `top_k`: the fraction of the first map's top k% pixels that are also among the second's
  (not theirs: the question "is the same region highlighted"; k = 10% by default). Ties are
  broken by one seeded permutation of the pixels, the same for both maps, so equal maps
  overlap fully.

The maps explain what each model does: a post-hoc map of a randomised model explains that
model's own greedy action, as Adebayo et al. explain the randomised network's top class.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from scipy import stats
from skimage.metrics import structural_similarity

from fls.models import MODELS, ActorCritic
from fls.saliency import posthoc
from fls.saliency.posthoc import INPUT, PostHocSettings

MapFunction = Callable[[ActorCritic, torch.Tensor], torch.Tensor]
"""(model, uint8 stacks N x 4 x 84 x 84) -> maps N x 84 x 84"""

ATTENTION = "attention"
RANDOM = "random"
HEADS = "policy+value"
SIMILARITIES = ("spearman", "ssim", "top_k")


@dataclass(frozen=True)
class SanitySettings:
    """What the randomisation test's numbers depend on besides the model, the frames and the map."""

    top_k: float = 0.1
    """fraction of the pixels that count as a map's top (top-k overlap)"""
    seed: int = 0
    """seeds the re-initialised weights (the `random` model: seed + 1) and the ties of top-k"""

    def __post_init__(self):
        if not 0 < self.top_k <= 1:
            raise ValueError(f"top_k={self.top_k}: expected a fraction of the pixels in (0, 1]")

    def key(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Stage:
    name: str
    """column label: the layer the cascade reached (`policy+value`, `fc`, `encoder.block.0`,
    ...), or `attention`, or `random`"""
    layers: tuple[str, ...]
    """qualified names of the modules re-initialised at this stage (all of them for `random`)"""
    cascade: bool
    """part of the top-down cascade (cumulative), else an independent stage"""


@dataclass
class SanityResult:
    """Similarity of each stage's map to the trained model's map, per frame (stages x frames)."""

    stages: list[Stage]
    spearman: np.ndarray
    ssim: np.ndarray
    top_k: np.ndarray
    original: np.ndarray | None = None
    """the trained model's maps, N x 84 x 84 (keep_maps=True)"""
    maps: np.ndarray | None = field(default=None, repr=False)
    """each stage's maps, stages x N x 84 x 84 (keep_maps=True)"""

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def similarity(self, measure: str) -> np.ndarray:
        if measure not in SIMILARITIES:
            raise ValueError(f"{measure}: expected one of {', '.join(SIMILARITIES)}")
        return getattr(self, measure)


# ---------------------------------------------------------------------------------------
# The model's layers, from its structure
# ---------------------------------------------------------------------------------------


def _parametrised(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


def layer_groups(model: ActorCritic) -> list[tuple[str, ...]]:
    """The model's parametrised layers in the order one forward pass runs them, input first;
    layers that read the same tensor (policy and value) share a group."""
    layers = _parametrised(model)
    runs: list[tuple[str, torch.Tensor]] = []  # the input tensors are kept, so no id is reused
    hooks = [m.register_forward_pre_hook(lambda _, args, name=name: runs.append((name, args[0])))
             for name, m in layers.items()]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 4, INPUT, INPUT, dtype=torch.uint8, device=device))
    finally:
        for h in hooks:
            h.remove()
    order = list(dict.fromkeys(name for name, _ in runs))
    missing = set(layers) - set(order)
    if missing:
        raise ValueError(f"{model.name}: layers {sorted(missing)} hold parameters but take no part in the forward pass")
    groups: list[list[str]] = []
    inputs: list[torch.Tensor] = []
    first_input = {}
    for name, x in runs:
        first_input.setdefault(name, x)
    for name in order:
        x = first_input[name]
        same = next((i for i, seen in enumerate(inputs) if seen is x), None)
        if same is None:
            groups.append([name])
            inputs.append(x)
        else:
            groups[same].append(name)
    return [tuple(g) for g in groups]


def attention_layers(model: ActorCritic) -> tuple[str, ...]:
    """The encoder's parametrised layers outside its conv trunk: the children of the encoder
    that do not hold the trunk's last conv (Encoder.last_conv), i.e. the FLS module(s) or
    DAQN's / RS-PPO's `attend`; none for nature_cnn."""
    last = model.encoder.last_conv()
    names = []
    for child_name, child in model.encoder.named_children():
        if any(m is last for m in child.modules()):
            continue
        names += [f"encoder.{child_name}.{n}" if n else f"encoder.{child_name}" for n, _ in _parametrised(child).items()]
    return tuple(names)


def stages(model: ActorCritic) -> list[Stage]:
    """The cascade top-down (each stage adds one group of layers), then `attention` where the
    model has one, then `random` (docstring of this module)."""
    groups = layer_groups(model)
    out, done = [], ()
    for group in reversed(groups):
        done = done + group
        out.append(Stage("+".join(group), done, True))
    attention = attention_layers(model)
    if attention:
        out.append(Stage(ATTENTION, attention, False))
    out.append(Stage(RANDOM, tuple(n for g in groups for n in g), False))
    return out


def fresh_model(model: ActorCritic, seed: int) -> ActorCritic:
    """A model of the same registry name and action count, initialised by its own scheme under
    `seed` (torch's global RNG is left as it was)."""
    if model.name not in MODELS:
        raise ValueError(f"{model.name}: not a registry model, so there is no initialisation to draw from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = MODELS[model.name].build(model.num_actions)
    p = next(model.parameters())
    return fresh.to(device=p.device, dtype=p.dtype).train(model.training)


def randomized(model: ActorCritic, layers: tuple[str, ...], source: ActorCritic) -> ActorCritic:
    """A copy of `model` whose `layers` hold `source`'s parameters (a fresh_model)."""
    out = copy.deepcopy(model)
    mine, theirs = _parametrised(out), _parametrised(source)
    with torch.no_grad():
        for name in layers:
            for (pname, p), (qname, q) in zip(mine[name].named_parameters(recurse=False),
                                              theirs[name].named_parameters(recurse=False)):
                assert pname == qname and p.shape == q.shape, (name, pname, qname)
                p.copy_(q)
    return out


def stage_models(model: ActorCritic, seed: int = 0, only: list[str] | None = None):
    """(Stage, randomised model) of each stage, lazily (one model in memory at a time)."""
    source, other = fresh_model(model, seed), None
    for stage in stages(model):
        if only is not None and stage.name not in only:
            continue
        if stage.name == RANDOM:
            other = other or fresh_model(model, seed + 1)
            yield stage, other
        else:
            yield stage, randomized(model, stage.layers, source)


# ---------------------------------------------------------------------------------------
# Similarity of two maps, per frame
# ---------------------------------------------------------------------------------------


def _check_maps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape}: expected two N x H x W arrays of one shape")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("maps hold NaN or infinite values")
    return a, b


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] by its minimum and maximum; a constant map to zeros."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (N); NaN where either is constant."""
    a, b = _check_maps(a, b)
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = stats.spearmanr(x, y).statistic
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of maps, each scaled to [0, 1] (N; 1 for equal maps)."""
    a, b = _check_maps(a, b)
    a, b = _unit(a), _unit(b)
    return np.array([structural_similarity(x, y, gaussian_weights=True, data_range=1.0) for x, y in zip(a, b)])


def ranking(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each map's pixels (flat indices, N x H*W), most salient first; ties in the order of one
    seeded permutation of the pixels, the same for every map."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    perm = np.random.default_rng(seed).permutation(flat.shape[1])
    return perm[np.argsort(-flat[:, perm], axis=1, kind="stable")]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: float = 0.1, seed: int = 0) -> np.ndarray:
    """Fraction of the top `k` of each map of `a` that is also in the top `k` of its pair in `b` (N)."""
    a, b = _check_maps(a, b)
    if not 0 < k <= 1:
        raise ValueError(f"k={k}: expected a fraction of the pixels in (0, 1]")
    count = max(1, int(round(k * a[0].size)))
    top_a, top_b = ranking(a, seed)[:, :count], ranking(b, seed)[:, :count]
    return np.array([len(np.intersect1d(x, y, assume_unique=True)) / count for x, y in zip(top_a, top_b)])


def similarities(a: np.ndarray, b: np.ndarray, settings: SanitySettings = SanitySettings()) -> dict[str, np.ndarray]:
    return {"spearman": spearman(a, b), "ssim": ssim(a, b), "top_k": top_k_overlap(a, b, settings.top_k, settings.seed)}


# ---------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------


def map_function(method: str, settings: PostHocSettings = PostHocSettings()) -> MapFunction:
    """The map `method` of fls.saliency.posthoc (model, or a post-hoc method) as a MapFunction."""
    if method not in posthoc.MAPS:
        raise ValueError(f"{method} is not a saliency map; expected one of {', '.join(posthoc.MAPS)}")
    return lambda model, obs: posthoc.draw(model, obs, method, settings)


def randomization(model: ActorCritic, obs: torch.Tensor, method: str | MapFunction,
                  settings: SanitySettings = SanitySettings(), posthoc_settings: PostHocSettings = PostHocSettings(),
                  only: list[str] | None = None, keep_maps: bool = False,
                  staged: list[tuple[Stage, ActorCritic]] | None = None) -> SanityResult:
    """The randomisation test of one map on the stacks `obs` (uint8 N x 4 x 84 x 84): each
    stage's similarity to the trained model's map, per frame. `method`: a name of
    posthoc.MAPS or any MapFunction; `only`: the stage names to run (default: all, in order);
    `staged`: the stage models, `list(stage_models(model, settings.seed))`, when several maps
    are tested on one model (built once, they are a few copies of the model)."""
    if isinstance(method, str):
        why = posthoc.needs(method, model)
        if why:
            raise ValueError(why)
        method = map_function(method, posthoc_settings)
    if only is not None:
        unknown = set(only) - {s.name for s in stages(model)}
        if unknown:
            raise ValueError(f"stages {sorted(unknown)}: {model.name} has {', '.join(s.name for s in stages(model))}")
    original = method(model, obs).detach().cpu().double().numpy()
    done, scores, kept = [], {m: [] for m in SIMILARITIES}, []
    pairs = stage_models(model, settings.seed, only) if staged is None else \
        [(stage, m) for stage, m in staged if only is None or stage.name in only]
    for stage, randomised in pairs:
        maps = method(randomised, obs).detach().cpu().double().numpy()
        for name, values in similarities(original, maps, settings).items():
            scores[name].append(values)
        done.append(stage)
        if keep_maps:
            kept.append(maps.astype(np.float32))
    return SanityResult(done, *(np.stack(scores[m]) for m in SIMILARITIES),
                        original=original.astype(np.float32) if keep_maps else None,
                        maps=np.stack(kept) if keep_maps else None)
