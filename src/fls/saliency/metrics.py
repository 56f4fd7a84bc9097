"""Saliency metrics against human gaze (docs/protocol.md#saliency-metrics, the paper's Table 4), and their baselines.

Maps are 2-D numpy arrays of one shape; `fixations` are integer counts per pixel
(`fls.saliency.gaze.fixation_map`). Every metric returns a float, or NaN where docs/protocol.md#saliency-metrics leaves it
undefined: no fixation, a saliency map with a non-finite value, and the metric's own cases
below. "~0" is numpy.isclose's default, |v| <= 1e-8, the tolerance the authors' code used
through np.isclose / np.allclose (for sAUC's constant-map test also 1e-5 of the maximum).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

ATOL = 1e-8  # "~0" (numpy.isclose's default absolute tolerance)
RTOL = 1e-5  # numpy.isclose's default relative tolerance (sAUC's min == max test)
BLUR_MODE = "mirror"  # cv2.GaussianBlur's default border (BORDER_REFLECT_101), as the authors
BLUR_TRUNCATE = 4.0  # kernel radius 4 sigma: 20 px at sigma 5, cv2's automatic size too


def _pair(saliency: np.ndarray, fixations: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated float saliency and integer fixations, or None when no metric is defined."""
    saliency = np.asarray(saliency, dtype=np.float64)
    fixations = np.asarray(fixations)
    if saliency.ndim != 2 or saliency.shape != fixations.shape:
        raise ValueError(f"saliency {saliency.shape} and fixations {fixations.shape}: expected one 2-D shape")
    if fixations.dtype.kind not in "iub":
        raise ValueError(f"fixations must be integer counts, got {fixations.dtype}")
    if (fixations < 0).any():
        raise ValueError("fixations must be non-negative counts")
    if fixations.sum() == 0 or not np.isfinite(saliency).all():
        return None
    return saliency, fixations


def nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Normalised scanpath saliency: the fixation-count-weighted mean of the standardised map.

    Standardised with the population std (ddof=0); NaN if that std is ~0.
    """
    pair = _pair(saliency, fixations)
    if pair is None:
        return float("nan")
    s, f = pair
    std = s.std()
    if std <= ATOL:
        return float("nan")
    return float(((s - s.mean()) / std * f).sum() / f.sum())


def kl_divergence(saliency: np.ndarray, fixations: np.ndarray, sigma: float = 5.0) -> float:
    """KL(blurred fixations || saliency) in nats, both normalised to sum 1.

    The fixation map is blurred as scipy.ndimage.gaussian_filter(sigma, mode="mirror",
    truncate=4) does (`blur_fixations`): the kernel and border (reflect without repeating
    the edge pixel) of the cv2.GaussianBlur the authors used, to 1e-15.
    docs/protocol.md#saliency-metrics: sigma 5 at 210 x 160, 2 at 84 x 84.
    NaN if the saliency map is ~0 everywhere or ~0 anywhere the blurred fixations are > 0
    (within 4 sigma of a fixation). "~0" is absolute, as in the authors' code, so it depends
    on the map's scale: values below 1e-8 there make the frame undefined.
    Saliency maps must be non-negative (ours are clamped at 0, docs/protocol.md#saliency-map-of-a-frame).
    """
    pair = _pair(saliency, fixations)
    if pair is None:
        return float("nan")
    s, f = pair
    if (s < 0).any():
        raise ValueError("saliency maps must be non-negative for the KL divergence")
    if (s <= ATOL).all():
        return float("nan")
    p = blur_fixations(f, sigma)
    support = p > 0
    if (s[support] <= ATOL).any():
        return float("nan")
    p = p[support] / p.sum()
    q = s[support] / s.sum()
    return float((p * np.log(p / q)).sum())


def blur_fixations(fixations: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(fixations, sigma, mode="mirror", truncate=4), bit for bit.

    The separable passes (axis 0, then axis 1, scipy's order) run only on the columns that
    hold a fixation, then on the rows the first pass reached: the rest stays exactly 0, and
    gaze is clustered, so this is several times faster than filtering the whole frame.
    """
    f = np.asarray(fixations, dtype=np.float64)
    out = np.zeros_like(f)
    cols = np.flatnonzero(f.any(axis=0))
    if not len(cols):
        return out
    first = gaussian_filter1d(f[:, cols], sigma, axis=0, mode=BLUR_MODE, truncate=BLUR_TRUNCATE)
    rows = np.flatnonzero(first.any(axis=1))
    partial = np.zeros((len(rows), f.shape[1]))
    partial[:, cols] = first[rows]
    out[rows] = gaussian_filter1d(partial, sigma, axis=1, mode=BLUR_MODE, truncate=BLUR_TRUNCATE)
    return out


def shuffled_auc(
    saliency: np.ndarray,
    fixations: np.ndarray,
    other_fixations: np.ndarray | Sequence[np.ndarray],
    n_splits: int = 100,
    seed: int | None = 42,
) -> float:
    """Shuffled AUC: fixated pixels against pixels other frames' viewers fixated.

    `other_fixations`: the summed fixation maps of other frames of the trial (the protocol: 10,
    see `pick_other_frames`), as one map or as a sequence / 3-D stack of maps, summed here.
    The map is min-max normalised (NaN if constant: max - min ~0 or within 1e-5 of max).
    Positives are its values at the fixated pixels, repeated by count; each of `n_splits`
    draws takes as many negatives, pixels drawn with probability proportional to
    `other_fixations` from np.random.RandomState(seed)'s uniforms exactly as its
    .choice(p=...) would draw them (the authors' draws: the same seed, the same pixels).
    The result is the mean ROC AUC over the draws (ties count 1/2, as sklearn's
    roc_auc_score), computed as one rank statistic. NaN if `other_fixations` is empty.
    """
    pair = _pair(saliency, fixations)
    other = np.asarray(other_fixations)
    if other.ndim == 3:
        other = other.sum(axis=0)
    if other.shape != np.shape(saliency):
        raise ValueError(f"other_fixations {other.shape}: expected the saliency map's {np.shape(saliency)}")
    if (other < 0).any():
        raise ValueError("other_fixations must be non-negative counts")
    if pair is None or other.sum() <= 0:
        return float("nan")
    s, f = pair
    lo, hi = s.min(), s.max()
    if abs(hi - lo) <= ATOL + RTOL * abs(hi):
        return float("nan")
    s = ((s - lo) / (hi - lo)).ravel()
    positives = np.sort(np.repeat(s, f.ravel()))
    n = len(positives)
    # RandomState.choice(size, p=...) draws pixel k for a uniform u with cdf[k-1] <= u <
    # cdf[k]. Pixels of weight 0 have empty steps and are never drawn, so the CDF of the
    # others alone (the same partial sums: adding 0.0 is exact) gives choice's pixels from
    # the same uniforms. Every draw has n negatives, so the mean of the per-draw AUCs is the
    # pooled AUC of all draws: only how often each pixel is drawn matters, which sorted
    # uniforms count in one pass.
    weights = other.ravel().astype(np.float64)
    candidates = np.flatnonzero(weights)
    cdf = np.cumsum(weights[candidates] / weights.sum())
    cdf /= cdf[-1]
    uniform = np.sort(np.random.RandomState(seed).random_sample(n_splits * n))
    hits = np.diff(np.searchsorted(uniform, cdf, side="left"), prepend=0)
    # Each candidate's worth as a negative: positives above it, plus half of those equal.
    values = s[candidates]
    below = np.searchsorted(positives, values, side="left")
    not_above = np.searchsorted(positives, values, side="right")
    worth = (n - not_above) + 0.5 * (not_above - below)
    return float((worth * hits).sum() / (n_splits * n * n))


def pick_other_frames(
    n_frames: int, frames: Iterable[int] | None = None, k: int = 10, seed: int | None = 42
) -> np.ndarray:
    """For each of `frames` (default: all, in order), k other frames of the trial.

    Returns an int array (len(frames), k) of processed-frame positions 0..n_frames - 1, none
    equal to its own row's frame, drawn uniformly with replacement from the n_frames - 1
    others, from one np.random.RandomState(seed) in row order. The authors drew exactly
    this way, but only for the frames whose metric is defined (fixations present, saliency
    finite): pass those as `frames` to draw their sequence.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames={n_frames}: a trial needs 2 frames to have others")
    frames = np.arange(n_frames) if frames is None else np.asarray(list(frames), dtype=np.int64)
    if ((frames < 0) | (frames >= n_frames)).any():
        raise ValueError(f"frames must lie in 0..{n_frames - 1}")
    picks = np.random.RandomState(seed).randint(n_frames - 1, size=(len(frames), k))
    return picks + (picks >= frames[:, None])


UPSCALE_MODES = ("edge", "reflect")


def upscale_saliency(saliency: np.ndarray, shape: tuple[int, int] = (210, 160), mode: str = "edge") -> np.ndarray:
    """Bilinear resize of a saliency map (84 x 84) to `shape` (210 x 160 raw frames).

    Pixel centres at half-integers (torch's interpolate(mode="bilinear", align_corners=False)
    and skimage.transform.resize(order=1) share the convention). Outside the outer pixel
    centres, `edge` repeats the border pixel (cv2.resize INTER_LINEAR, the default), and
    `reflect` mirrors the map about its edge, as the authors' skimage.transform.resize(order=1,
    mode="reflect") does; scipy's ndimage.zoom(order=1, mode="mirror", grid_mode=True) is that
    same computation. Only the border rows and columns differ between the two.
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if mode == "edge":
        return cv2.resize(saliency, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    if mode == "reflect":
        from scipy import ndimage

        zoom = (shape[0] / saliency.shape[0], shape[1] / saliency.shape[1])
        return ndimage.zoom(saliency, zoom, order=1, mode="mirror", grid_mode=True)
    raise ValueError(f"mode={mode!r}: expected one of {UPSCALE_MODES}")


def center_bias(shape: tuple[int, int] = (210, 160), sigma: float = 0.25) -> np.ndarray:
    """A Gaussian centred on the frame, std `sigma` times its height / width: the baseline
    'people look at the middle' map."""
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2) / (sigma * h)
    x = (np.arange(w) - (w - 1) / 2) / (sigma * w)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def uniform(shape: tuple[int, int] = (210, 160)) -> np.ndarray:
    """A constant map (sums to 1): NSS and shuffled AUC are undefined on it (NaN); its KL is
    defined, the divergence of the fixations from a flat guess."""
    return np.full(shape, 1.0 / (shape[0] * shape[1]))
