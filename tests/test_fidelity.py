"""fls.saliency.fidelity: deletion and insertion curves on a real trained agent (zoo/) and real
Breakout frames, made blind to the left half of the screen so the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fls.saliency import fidelity, posthoc
from fls.saliency.fidelity import FidelitySettings
from fls.saliency.metrics import center_bias

from zoo_frames import breakout_stacks, zoo_model

ENTRY = "breakout_sparse_fls"
HALF = 42
SETTINGS = FidelitySettings(steps=10)


class LeftBlind(nn.Module):
    """The trained agent, with the left half of every frame blacked out before it looks."""

    def __init__(self, agent):
        super().__init__()
        self.agent = agent

    def forward_frames(self, frames: torch.Tensor):
        return self.agent.forward_frames(frames * (torch.arange(84) >= HALF).to(frames))


@pytest.fixture(scope="module")
def blind() -> LeftBlind:
    return LeftBlind(zoo_model(ENTRY))


@pytest.fixture(scope="module")
def obs() -> torch.Tensor:
    return breakout_stacks(ENTRY)


def left_first(n: int, seed: int = 0) -> np.ndarray:
    """Every left-half pixel above every right-half pixel, a random order inside each half."""
    maps = np.random.default_rng(seed).random((n, 84, 84))
    maps[..., :HALF] += 1
    return maps


def test_deleting_the_half_the_model_ignores_moves_nothing(blind, obs):
    c = fidelity.deletion(blind, obs, left_first(len(obs)), SETTINGS)
    half = c.fractions <= 0.5
    assert c.kl.shape == c.prob.shape == (len(obs), 11) and half.sum() == 6
    # (float noise only: the stacks of one curve may go through the model in different batches)
    assert np.abs(c.kl[:, half]).max() < 1e-9
    assert np.abs(c.prob[:, half] - c.prob[:, :1]).max() < 1e-6
    # then the half it reads goes, and the policy changes (measured: KL up to 0.75 at 100%)
    assert (c.kl[:, ~half].max(axis=1) > 1e-3).all()
    # insertion in the same order: nothing returns until the right half starts to
    i = fidelity.insertion(blind, obs, left_first(len(obs)), SETTINGS)
    assert np.abs(i.kl[:, half] - i.kl[:, :1]).max() < 1e-9 and (i.kl[:, 0] > 1e-3).all()
    assert np.abs(i.kl[:, -1]).max() < 1e-9  # everything restored: the unperturbed stack


def test_the_random_order_sits_between_the_right_order_and_the_reverse(blind, obs):
    good, bad = 1 - left_first(len(obs)), left_first(len(obs))
    rand = fidelity.baseline_map("random", len(obs), seed=0)
    areas = {mode: [fidelity.curves(blind, obs, m, mode, SETTINGS).kl_auc.mean() for m in (good, rand, bad)]
             for mode in fidelity.MODES}
    # deletion: the right order changes the policy soonest (measured 0.27 > 0.16 > 0.08)
    assert areas["deletion"][0] > areas["deletion"][1] > areas["deletion"][2]
    # insertion: the right order gives the policy back soonest (measured 0.11 < 0.18 < 0.31)
    assert areas["insertion"][0] < areas["insertion"][1] < areas["insertion"][2]


def test_the_curves_start_and_end_where_they_must(obs):
    model = zoo_model(ENTRY)
    maps = posthoc.draw(model, obs, "jacobian")
    d = fidelity.deletion(model, obs, maps, SETTINGS)
    i = fidelity.insertion(model, obs, maps, SETTINGS)
    with torch.no_grad():
        logits = model(obs)[0].double()
    assert np.array_equal(d.actions, logits.argmax(-1).numpy())
    chosen = torch.softmax(logits, -1).gather(1, logits.argmax(-1, keepdim=True)).squeeze(1).numpy()
    assert np.allclose(d.prob[:, 0], chosen, atol=1e-6) and np.allclose(d.kl[:, 0], 0, atol=1e-9)
    assert np.allclose(i.prob[:, -1], chosen, atol=1e-6) and np.allclose(i.kl[:, -1], 0, atol=1e-9)
    # both ends are the fully blurred stack
    assert np.allclose(d.kl[:, -1], i.kl[:, 0], atol=1e-6) and np.allclose(d.prob[:, -1], i.prob[:, 0], atol=1e-6)
    assert np.allclose(d.kl_auc, ((d.kl[:, 1:] + d.kl[:, :-1]) / 2 * np.diff(d.fractions)).sum(axis=1))
    # the batch changes the speed, not the numbers
    small = fidelity.deletion(model, obs, maps, FidelitySettings(steps=10, batch=7))
    assert np.allclose(small.kl, d.kl, atol=1e-6) and np.allclose(small.prob, d.prob, atol=1e-6)


def test_the_baselines_are_seeded_and_the_centre_is_the_gaze_scorings(blind, obs):
    a = fidelity.deletion(blind, obs, fidelity.baseline_map("random", len(obs), seed=3), SETTINGS)
    b = fidelity.deletion(blind, obs, fidelity.baseline_map("random", len(obs), seed=3), SETTINGS)
    c = fidelity.deletion(blind, obs, fidelity.baseline_map("random", len(obs), seed=4), SETTINGS)
    assert np.array_equal(a.kl, b.kl) and np.array_equal(a.prob, b.prob)
    assert not np.array_equal(a.kl, c.kl)
    centre = fidelity.baseline_map("center", 2, center_sigma=0.25)
    assert np.array_equal(centre[1], center_bias((84, 84), 0.25))
    # ties of the symmetric centre map follow the seed too
    t1, t2 = (fidelity.deletion(blind, obs[:2], centre, FidelitySettings(steps=10, seed=s)) for s in (0, 1))
    assert not np.array_equal(t1.kl, t2.kl)
    with pytest.raises(ValueError, match="baseline"):
        fidelity.baseline_map("uniform", 2)


def test_bad_input_is_refused_with_what_is_accepted(obs):
    model = zoo_model(ENTRY)
    maps = np.zeros((len(obs), 84, 84))
    with pytest.raises(ValueError, match="one per stack"):
        fidelity.deletion(model, obs, maps[:1])
    with pytest.raises(ValueError, match="uint8"):
        fidelity.deletion(model, obs.float(), maps)
    with pytest.raises(ValueError, match="mode"):
        fidelity.curves(model, obs, maps, "erase")
    with pytest.raises(ValueError, match="steps"):
        FidelitySettings(steps=0)
    with pytest.raises(ValueError, match="blur_sigma"):
        FidelitySettings(blur_sigma=0)
