"""Saliency metrics against direct implementations written here from docs/protocol.md#saliency-metrics's definitions
(plain loops), hand-made cases with known answers, and the undefined cases."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fls.saliency.metrics import (
    center_bias,
    kl_divergence,
    nss,
    pick_other_frames,
    shuffled_auc,
    uniform,
    upscale_saliency,
)

NAN = float("nan")


def random_case(seed: int, shape=(12, 10), n_fix=15, n_other=40):
    rng = np.random.default_rng(seed)
    saliency = rng.random(shape) + 0.01
    fixations = np.zeros(shape, np.int64)
    other = np.zeros(shape, np.int64)
    for _ in range(n_fix):
        fixations[rng.integers(shape[0]), rng.integers(shape[1])] += 1
    for _ in range(n_other):
        other[rng.integers(shape[0]), rng.integers(shape[1])] += 1
    return saliency, fixations, other


# ---------------------------------------------------------------------------------------
# Direct implementations, one pixel at a time
# ---------------------------------------------------------------------------------------


def pixels(shape):
    return [(r, c) for r in range(shape[0]) for c in range(shape[1])]


def direct_nss(s, f):
    n = s.size
    mean = sum(s[p] for p in pixels(s.shape)) / n
    std = math.sqrt(sum((s[p] - mean) ** 2 for p in pixels(s.shape)) / n)
    total = sum(f[p] for p in pixels(s.shape))
    return sum(f[p] * (s[p] - mean) / std for p in pixels(s.shape)) / total


def mirror(i, n):
    """Reflect about the edge pixels without repeating them: -1 -> 1, n -> n - 2."""
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def direct_blur(f, sigma):
    radius = int(4 * sigma + 0.5)
    weights = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)]
    weights = [w / sum(weights) for w in weights]
    h, w = f.shape
    out = np.zeros((h, w))
    for r, c in pixels(f.shape):
        out[r, c] = sum(
            weights[dr + radius] * weights[dc + radius] * f[mirror(r + dr, h), mirror(c + dc, w)]
            for dr in range(-radius, radius + 1)
            for dc in range(-radius, radius + 1)
        )
    return out


def direct_kl(s, f, sigma):
    p = direct_blur(f, sigma)
    p_total, s_total = p.sum(), s.sum()
    return sum(
        p[q] / p_total * math.log((p[q] / p_total) / (s[q] / s_total))
        for q in pixels(s.shape)
        if p[q] > 0
    )


def direct_auc(positives, negatives):
    wins = 0.0
    for a in positives:
        for b in negatives:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(positives) * len(negatives))


def direct_shuffled_auc(s, f, other, n_splits, seed):
    lo, hi = s.min(), s.max()
    norm = (s - lo) / (hi - lo)
    positives = [norm[p] for p in pixels(s.shape) for _ in range(f[p])]
    weights = other.ravel() / other.sum()
    drawn = np.random.RandomState(seed).choice(s.size, size=(n_splits, len(positives)), p=weights)
    flat = norm.ravel()
    return sum(direct_auc(positives, [flat[i] for i in split]) for split in drawn) / n_splits


# ---------------------------------------------------------------------------------------
# Against the direct implementations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_nss_random(seed):
    s, f, _ = random_case(seed)
    assert nss(s, f) == pytest.approx(direct_nss(s, f), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_kl_random(seed, sigma):
    s, f, _ = random_case(seed)
    assert kl_divergence(s, f, sigma) == pytest.approx(direct_kl(s, f, sigma), rel=1e-10)


def test_kl_blur_is_cv2_gaussian_blur_at_full_size():
    # The authors blurred with cv2.GaussianBlur(sigma, automatic size, default border).
    s, f, _ = random_case(7, shape=(210, 160), n_fix=300)
    for sigma in (5.0, 2.0):
        blurred = cv2.GaussianBlur(f.astype(np.float64), (0, 0), sigmaX=sigma, sigmaY=sigma)
        p, q = blurred / blurred.sum(), s / s.sum()
        keep = p > 0
        expected = float((p[keep] * np.log(p[keep] / q[keep])).sum())
        assert kl_divergence(s, f, sigma) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_auc_random(seed):
    s, f, other = random_case(seed)
    s = np.round(s * 8)  # ties between positives and negatives
    assert shuffled_auc(s, f, other, n_splits=7, seed=seed) == pytest.approx(
        direct_shuffled_auc(s, f, other, 7, seed), rel=1e-12
    )


def test_shuffled_auc_is_sklearn_roc_auc():
    s, f, other = random_case(3, shape=(30, 20), n_fix=60, n_other=100)
    norm = ((s - s.min()) / (s.max() - s.min())).ravel()
    positives = np.repeat(norm, f.ravel())
    drawn = np.random.RandomState(42).choice(s.size, size=(5, len(positives)), p=other.ravel() / other.sum())
    labels = np.r_[np.zeros(len(positives)), np.ones(len(positives))]
    expected = np.mean([roc_auc_score(labels, np.r_[norm[d], positives]) for d in drawn])
    assert shuffled_auc(s, f, other, n_splits=5, seed=42) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------


def test_nss_of_the_fixation_map_itself():
    f = np.zeros((7, 9), np.int64)
    f[3, 4] = 1
    # One fixated pixel of n: mean 1/n, std sqrt(1/n - 1/n^2), so NSS = sqrt(n - 1).
    assert nss(f.astype(float), f) == pytest.approx(math.sqrt(f.size - 1), rel=1e-12)
    f[0, 0] = 2
    s = f.astype(float)
    expected = ((s - s.mean()) / s.std() * f).sum() / f.sum()
    assert nss(s, f) == pytest.approx(expected) and nss(s, f) > 0
    assert nss(-s, f) == pytest.approx(-expected)


def test_kl_of_identical_maps_is_zero():
    from scipy.ndimage import gaussian_filter

    f = np.zeros((210, 160), np.int64)
    f[100, 80], f[5, 3], f[200, 150] = 3, 1, 2
    s = gaussian_filter(f.astype(float), 5.0, mode="mirror") * 1000
    assert kl_divergence(s, f) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(s * 7, f) == pytest.approx(0.0, abs=1e-12)  # scale-free once defined
    # "~0" is absolute (the authors' np.isclose): the blur's tail, ~7e-10 at its edge, is
    # "~0" where the saliency map is the blurred map itself.
    assert math.isnan(kl_divergence(s / 1000, f))
    assert kl_divergence(uniform((210, 160)), f) > 0.5


def test_auc_of_a_perfect_map_is_one():
    f = np.zeros((20, 16), np.int64)
    f[5, 5], f[6, 7] = 2, 1
    other = np.zeros_like(f)
    other[10:, :] = 1  # others looked elsewhere
    perfect = (f > 0).astype(float)
    assert shuffled_auc(perfect, f, other) == 1.0
    assert shuffled_auc(1 - perfect, f, other) == 0.0
    # Others looking where this viewer looked: every negative ties with a positive.
    assert shuffled_auc(perfect, f, f) == 0.5


def test_constant_maps():
    s, f, other = random_case(0)
    constant = np.full(s.shape, 0.3)
    assert math.isnan(nss(constant, f))
    assert math.isnan(shuffled_auc(constant, f, other))
    assert math.isfinite(kl_divergence(constant, f, 1.0))  # a flat prediction has a KL
    assert math.isnan(nss(constant + 1e-10 * np.random.default_rng(0).random(s.shape), f))  # std ~0


def test_undefined_cases():
    s, f, other = random_case(1)
    empty = np.zeros_like(f)
    for bad in (np.nan, np.inf):
        broken = s.copy()
        broken[0, 0] = bad
        assert math.isnan(nss(broken, f))
        assert math.isnan(kl_divergence(broken, f, 1.0))
        assert math.isnan(shuffled_auc(broken, f, other))
    assert math.isnan(nss(s, empty))
    assert math.isnan(kl_divergence(s, empty, 1.0))
    assert math.isnan(shuffled_auc(s, empty, other))
    assert math.isnan(shuffled_auc(s, f, empty))  # nobody else looked anywhere
    # KL: saliency ~0 everywhere, or ~0 where the blurred fixations are positive.
    assert math.isnan(kl_divergence(np.full(s.shape, 1e-9), f, 1.0))
    f_one = np.zeros_like(f)
    f_one[5, 5] = 1
    holed = s.copy()
    holed[5, 9] = 0.0  # within 4 sigma of the fixation
    assert math.isnan(kl_divergence(holed, f_one, 1.0))
    far = s.copy()
    far[0, 0] = 0.0  # outside the blur's support: still defined
    assert math.isfinite(kl_divergence(far, f_one, 1.0))


def test_invalid_inputs_raise():
    s, f, other = random_case(2)
    with pytest.raises(ValueError, match="one 2-D shape"):
        nss(s[:-1], f)
    with pytest.raises(ValueError, match="integer counts"):
        nss(s, f.astype(float))
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(s - 0.5, f, 1.0)
    with pytest.raises(ValueError, match="other_fixations"):
        shuffled_auc(s, f, other[:-1])


def test_shuffled_auc_repeatable_and_other_maps_as_a_list():
    s, f, _ = random_case(5, shape=(40, 30), n_fix=50)
    rng = np.random.default_rng(9)
    others = [np.bincount(rng.integers(0, s.size, 30), minlength=s.size).reshape(s.shape) for _ in range(10)]
    summed = np.sum(others, axis=0)
    first = shuffled_auc(s, f, summed)
    assert shuffled_auc(s, f, summed) == first
    assert shuffled_auc(s, f, others) == first
    assert shuffled_auc(s, f, np.stack(others)) == first
    assert shuffled_auc(s, f, summed, seed=43) != first


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def test_pick_other_frames_is_the_authors_draw():
    n = 57
    frames = [0, 3, 4, 10, 56]
    rng = np.random.RandomState(42)
    expected = []
    for i in frames:  # benchmark_atari_head.auc_shuffled_many, one frame at a time
        picks = rng.randint(n - 1, size=(10,))
        picks[picks >= i] += 1
        expected.append(picks)
    got = pick_other_frames(n, frames)
    assert np.array_equal(got, np.array(expected))
    everyone = pick_other_frames(n)
    assert everyone.shape == (n, 10)
    assert not (everyone == np.arange(n)[:, None]).any()
    assert everyone.min() >= 0 and everyone.max() <= n - 1
    assert np.array_equal(pick_other_frames(n), everyone)
    with pytest.raises(ValueError):
        pick_other_frames(1)


def test_upscale_is_bilinear_half_pixel():
    rng = np.random.default_rng(0)
    small = rng.random((84, 84))
    big = upscale_saliency(small)
    assert big.shape == (210, 160) and big.dtype == np.float64
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], size=(210, 160), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(big, reference, atol=1e-12)
    # align_corners=True would put the corners' values on the corner pixels and move the rest.
    assert big[0, 0] == pytest.approx(small[0, 0])
    assert np.allclose(upscale_saliency(np.full((84, 84), 2.5)), 2.5)


def test_baseline_maps():
    bias = center_bias((210, 160))
    assert bias.shape == (210, 160)
    assert bias.argmax() in {np.ravel_multi_index(p, bias.shape) for p in [(104, 79), (104, 80), (105, 79), (105, 80)]}
    np.testing.assert_allclose(bias, bias[::-1, ::-1])
    assert bias.min() > 0
    flat = uniform((84, 84))
    assert flat.shape == (84, 84) and flat.sum() == pytest.approx(1.0) and np.ptp(flat) == 0
    # A centre fixation: the centre-bias map beats chance.
    f = np.zeros((210, 160), np.int64)
    f[100:110, 75:85] = 1
    assert nss(bias, f) > 1.0


def test_blur_is_scipy_gaussian_filter_bit_for_bit():
    from scipy.ndimage import gaussian_filter

    from fls.saliency.metrics import blur_fixations

    rng = np.random.default_rng(4)
    for spread in (2.0, 15.0, 80.0):
        f = np.zeros((210, 160), np.int64)
        pts = np.rint(rng.normal([105, 80], spread, size=(300, 2))).astype(int)
        keep = (pts >= 0).all(1) & (pts[:, 0] < 210) & (pts[:, 1] < 160)
        np.add.at(f, (pts[keep, 0], pts[keep, 1]), 1)
        f[0, 0] = f[209, 159] = 1  # corners: the mirrored border
        for sigma in (5.0, 2.0):
            expected = gaussian_filter(f.astype(float), sigma, mode="mirror", truncate=4.0)
            assert np.array_equal(blur_fixations(f, sigma), expected)
    assert not blur_fixations(np.zeros((84, 84), np.int64), 2.0).any()


def test_shuffled_auc_at_full_size_is_the_authors_procedure():
    # 210 x 160, a few hundred fixations, sparse other maps: choice + roc_auc_score per draw.
    rng = np.random.default_rng(8)
    s = rng.random((210, 160))
    f = np.bincount(rng.integers(0, s.size, 400), minlength=s.size).reshape(s.shape)
    other = np.zeros(s.size, np.int64)
    other[rng.integers(0, s.size, 300)] = rng.integers(1, 4, 300)
    other = other.reshape(s.shape)
    norm = ((s - s.min()) / (s.max() - s.min())).ravel()
    positives = np.repeat(norm, f.ravel())
    n = len(positives)
    drawn = np.random.RandomState(42).choice(np.arange(s.size), size=(6, n), p=other.ravel() / other.sum())
    labels = np.r_[np.zeros(n), np.ones(n)]
    expected = np.mean([roc_auc_score(labels, np.r_[norm[d], positives]) for d in drawn])
    assert shuffled_auc(s, f, other, n_splits=6, seed=42) == pytest.approx(expected, rel=1e-12)


def test_reflect_upscale_is_the_authors_resize_and_differs_from_edge_only_at_the_border():
    """skimage.transform.resize(order=1, mode="reflect"): pixel centres at half-integers, the
    map mirrored about its outer pixel centres (numpy.pad's 'reflect'). Written out here."""
    from fls.saliency.metrics import upscale_saliency

    rng = np.random.default_rng(0)
    small = rng.random((84, 84))

    def axis_weights(n_out: int, n_in: int) -> np.ndarray:
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            u = (i + 0.5) * n_in / n_out - 0.5
            u = -u if u < 0 else (2 * (n_in - 1) - u if u > n_in - 1 else u)
            lo = min(int(np.floor(u)), n_in - 2)
            w[i, lo], w[i, lo + 1] = 1 - (u - lo), u - lo
        return w

    expected = axis_weights(210, 84) @ small @ axis_weights(160, 84).T
    reflect = upscale_saliency(small, (210, 160), mode="reflect")
    np.testing.assert_allclose(reflect, expected, rtol=1e-12, atol=1e-12)
    edge = upscale_saliency(small, (210, 160), mode="edge")
    differs = ~np.isclose(reflect, edge, rtol=1e-6, atol=1e-9)
    assert differs[[0, 1, -2, -1]].any() and differs[:, [0, 1, -2, -1]].any()
    assert not differs[2:-2, 2:-2].any()  # interior: the same bilinear weights
