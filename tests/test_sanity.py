"""fls.saliency.sanity: the cascading randomisation of Adebayo et al. on real trained agents
(zoo/) and real Breakout frames, where the answer is known: a gradient map falls when every
layer is random, a map fixed by construction stays at 1, and the FLS map cannot see the
heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fls.models import MODELS, build_model
from fls.models.fls import FLS
from fls.saliency import sanity
from fls.saliency.sanity import SanitySettings

from zoo_frames import breakout_stacks, zoo_model

ENTRY = "breakout_sparse_fls"


def parametrised(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if list(m.parameters(recurse=False))}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_stages_come_from_the_structure_of_every_registry_model(name: str):
    model = build_model(name, 4)
    stages = sanity.stages(model)
    cascade = [s for s in stages if s.cascade]
    # top-down: the two heads together, then fc, ..., and last the layer that reads the frames
    assert cascade[0].layers == ("policy", "value") and cascade[0].name == sanity.HEADS
    assert cascade[1].layers == ("policy", "value", "fc")
    first = dict(model.named_modules())[cascade[-1].name]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 4
    for before, after in zip(cascade, cascade[1:]):
        assert after.layers[:len(before.layers)] == before.layers and len(after.layers) > len(before.layers)
    assert set(cascade[-1].layers) == parametrised(model) and len(cascade[-1].layers) == len(parametrised(model))
    assert stages[-1].name == sanity.RANDOM and set(stages[-1].layers) == parametrised(model)
    # the attention stage is the attention module(s) alone; nature_cnn has none
    attention = [s for s in stages if s.name == sanity.ATTENTION]
    modules = dict(model.named_modules())
    if name == "nature_cnn":
        assert not attention
    else:
        (stage,) = attention
        expected = {n for n in parametrised(model)
                    if any(isinstance(modules[p], FLS) or p == "encoder.attend" for p in _parents(n))}
        assert set(stage.layers) == expected and expected


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_re_initialised_layers_take_the_models_own_initialisation_under_the_seed():
    model = zoo_model(ENTRY)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    fresh = sanity.fresh_model(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expected = build_model(model.name, model.num_actions)
    cascade = [s for s in sanity.stages(model) if s.cascade]
    randomised = sanity.randomized(model, cascade[1].layers, fresh)  # heads and fc
    for name, p in randomised.named_parameters():
        if name.split(".")[0] in ("policy", "value", "fc"):
            assert torch.equal(p, dict(expected.named_parameters())[name]), name
        else:
            assert torch.equal(p, dict(model.named_parameters())[name]), name
    # the policy layer's init scheme (orthogonal, gain 0.01): every row has norm 0.01
    assert torch.allclose(randomised.policy.weight.norm(dim=1), torch.full((model.num_actions,), 0.01), atol=1e-6)
    assert not torch.equal(sanity.fresh_model(model, seed=4).policy.weight, fresh.policy.weight)
    # the trained model itself is never touched
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_a_gradient_map_falls_when_every_layer_is_random_and_a_fixed_map_stays_at_one():
    model, obs = zoo_model(ENTRY), breakout_stacks(ENTRY)
    jacobian = sanity.randomization(model, obs, "jacobian")
    names = jacobian.names
    everything = names.index("encoder.block.0")  # the cascade's end: every weight random
    for measure in sanity.SIMILARITIES:
        values = jacobian.similarity(measure)
        assert values.shape == (len(names), len(obs)) and np.isfinite(values).all()
        # measured on these frames: spearman 0.94 -> -0.37, SSIM 0.62 -> 0.07, top-10% 0.60 -> 0.05
        assert values[everything].mean() < 0.2 and values[names.index(sanity.RANDOM)].mean() < 0.2, measure
        assert values[0].mean() - values[everything].mean() > 0.4, measure
    # a map that does not read the model (the newest frame, Adebayo et al.'s edge-detector
    # argument) is the same map at every stage
    fixed = sanity.randomization(model, obs, lambda m, o: o[:, -1].float(), keep_maps=True)
    assert all(np.array_equal(maps, fixed.original) for maps in fixed.maps)
    for measure in sanity.SIMILARITIES:
        assert np.allclose(fixed.similarity(measure), 1, rtol=0, atol=1e-12), measure


def test_the_fls_map_cannot_see_the_heads_but_follows_its_own_module():
    model, obs = zoo_model(ENTRY), breakout_stacks(ENTRY)
    own = sanity.randomization(model, obs, "model", only=[sanity.HEADS, "fc", sanity.ATTENTION], keep_maps=True)
    assert own.names == [sanity.HEADS, "fc", sanity.ATTENTION]
    # by construction the map is drawn before the fc layer: exactly the trained model's map
    for measure in sanity.SIMILARITIES:
        assert np.allclose(own.similarity(measure)[:2], 1, rtol=0, atol=1e-12), measure
    assert np.array_equal(own.maps[0], own.original) and np.array_equal(own.maps[1], own.original)
    assert own.maps.shape == (3, len(obs), 84, 84)
    # a random FLS module draws another map
    assert own.spearman[2].mean() < 0.8 and own.ssim[2].mean() < 0.8


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others():
    model, obs = zoo_model(ENTRY), breakout_stacks(ENTRY)[:2]
    only = ["encoder.block.2", sanity.RANDOM]
    a = sanity.randomization(model, obs, "jacobian", SanitySettings(seed=5), only=only)
    b = sanity.randomization(model, obs, "jacobian", SanitySettings(seed=5), only=only)
    c = sanity.randomization(model, obs, "jacobian", SanitySettings(seed=6), only=only)
    for measure in sanity.SIMILARITIES:
        assert np.array_equal(a.similarity(measure), b.similarity(measure)), measure
    assert not np.array_equal(a.spearman, c.spearman)


def test_the_similarity_measures_on_maps_whose_answer_is_known():
    rng = np.random.default_rng(0)
    a = rng.random((3, 84, 84))
    assert np.allclose(sanity.spearman(a, a ** 3 + 2), 1)  # ranks only
    assert np.allclose(sanity.spearman(a, -a), -1)
    assert np.allclose(sanity.ssim(a, 5 * a), 1)  # each map scaled to [0, 1]
    assert (sanity.ssim(a, rng.random((3, 84, 84))) < 0.1).all()
    assert np.array_equal(sanity.top_k_overlap(a, a), np.ones(3))
    assert np.array_equal(sanity.top_k_overlap(a, -a, k=0.1), np.zeros(3))
    assert np.allclose(sanity.top_k_overlap(a, -a, k=0.6), (0.6 - 0.4) / 0.6, atol=1e-3)
    # a constant map has no ranks: NaN, not a number that looks like an answer
    flat = np.ones((3, 84, 84))
    assert np.isnan(sanity.spearman(a, flat)).all()
    with pytest.raises(ValueError, match="one shape"):
        sanity.spearman(a, a[:2])
    with pytest.raises(ValueError, match="fraction"):
        SanitySettings(top_k=0)


def test_a_map_the_model_does_not_have_is_refused():
    with pytest.raises(ValueError, match="no attention map"):
        sanity.randomization(build_model("nature_cnn", 4), breakout_stacks(ENTRY)[:1], "model")
    with pytest.raises(ValueError, match="stages"):
        sanity.randomization(zoo_model(ENTRY), breakout_stacks(ENTRY)[:1], "jacobian", only=["encoder.nope"])
