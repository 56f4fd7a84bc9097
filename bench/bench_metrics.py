"""Saliency-metric throughput: fls.saliency.metrics against a direct implementation in the style of
the authors' metrics.py (per-pixel Python loop and one roc_auc_score call per draw for
shuffled AUC; np.average for NSS; cv2.GaussianBlur + scipy.stats.entropy for KL).

Frames are the real Atari-HEAD sample's processed frames (fixations of docs/protocol.md#saliency-metrics,
from the excerpt the repository ships in data/atari_head_sample); saliency maps are
smooth random 84 x 84 maps upscaled to 210 x 160, as the metric pipeline does. Both
implementations must give the same values (checked), then frames/s are compared.

    python bench/bench_metrics.py [--quick]       # prints a Markdown table
    run(quick=True) -> dict                       # for `make bench`
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from fls.facts import REPO
from fls.saliency.atari_head import AtariHead
from fls.saliency.gaze import play_trial
from fls.saliency.metrics import kl_divergence, nss, pick_other_frames, shuffled_auc, upscale_saliency

SAMPLE = REPO / "data" / "atari_head_sample"
SIGMA = 5.0
SEED = 42
TARGET_RATIO = 50.0


# ---------------------------------------------------------------------------------------
# The direct implementation (what the authors' metrics.py does, written out again)
# ---------------------------------------------------------------------------------------


def direct_nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    std = np.std(saliency)
    if np.isclose(std, 0):
        return float("nan")
    return float(np.average((saliency - np.mean(saliency)) / std, weights=fixations))


def direct_kl(saliency: np.ndarray, fixations: np.ndarray, sigma: float) -> float:
    if np.allclose(saliency, 0):
        return float("nan")
    blurred = cv2.GaussianBlur(fixations.astype(np.float64), (0, 0), sigmaX=sigma, sigmaY=sigma)
    if np.isclose(saliency[blurred > 0], 0).any():
        return float("nan")
    return float(scipy.stats.entropy(blurred.ravel(), saliency.ravel()))


def direct_shuffled_auc(
    saliency: np.ndarray, fixations: np.ndarray, other: np.ndarray, n_splits: int, seed: int
) -> float:
    s, f, o = saliency.ravel(), fixations.ravel(), other.ravel()
    lo, hi = s.min(), s.max()
    if np.isclose(lo, hi):
        return float("nan")
    s = (s - lo) / (hi - lo)
    positives = []
    for value, count in zip(s, f):
        positives.extend([value] * count)
    n = len(positives)
    drawn = np.random.RandomState(seed).choice(np.arange(s.size), size=(n_splits, n), p=o / o.sum())
    labels = np.zeros(2 * n, dtype=np.uint8)
    labels[n:] = 1
    aucs = [roc_auc_score(labels, np.concatenate([s[drawn[k]], positives])) for k in range(n_splits)]
    return float(np.mean(aucs))


def direct(saliency, fixations, other) -> tuple[float, float, float]:
    if fixations.sum() == 0 or not np.isfinite(saliency).all():
        return float("nan"), float("nan"), float("nan")
    return (
        direct_nss(saliency, fixations),
        direct_kl(saliency, fixations, SIGMA),
        direct_shuffled_auc(saliency, fixations, other, 100, SEED),
    )


def fast(saliency, fixations, other) -> tuple[float, float, float]:
    return (
        nss(saliency, fixations),
        kl_divergence(saliency, fixations, SIGMA),
        shuffled_auc(saliency, fixations, other, n_splits=100, seed=SEED),
    )


# ---------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------


def _fixation_maps() -> tuple[list[np.ndarray], str]:
    trial = AtariHead(SAMPLE).load(593)
    return [p.fixations for p in play_trial(trial)], "Atari-HEAD sample, trial 593 (real gaze)"


def _saliency_maps(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    maps = []
    for _ in range(n):
        small = cv2.GaussianBlur(rng.random((84, 84)), (0, 0), 3.0) + 0.05
        maps.append(upscale_saliency(small))
    return maps


def _timed(fn, cases) -> tuple[list[tuple[float, float, float]], float]:
    start = time.perf_counter()
    values = [fn(*case) for case in cases]
    return values, time.perf_counter() - start


def _per_metric(fn_by_metric, cases) -> float:
    start = time.perf_counter()
    for case in cases:
        fn_by_metric(*case)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    """Throughput of fls.saliency.metrics and of the direct implementation, in frames/s, and their ratio."""
    fixations, data = _fixation_maps()
    n = len(fixations)
    saliency = _saliency_maps(n)
    others = pick_other_frames(n)
    cases = [(saliency[i], fixations[i], np.sum([fixations[j] for j in others[i]], axis=0)) for i in range(n)]
    cases = [c for c in cases if c[1].sum() > 0 and c[2].sum() > 0]
    n_direct = 4 if quick else 20
    direct_cases = cases[:: max(1, len(cases) // n_direct)][:n_direct]

    fast(*direct_cases[0])  # warm caches and imports
    fast_values, fast_seconds = _timed(fast, cases)
    direct_values, direct_seconds = _timed(direct, direct_cases)
    checked = [fast(*case) for case in direct_cases]
    np.testing.assert_allclose(np.array(checked), np.array(direct_values), rtol=1e-9, atol=1e-12)

    rows = {"all three": (len(cases) / fast_seconds, len(direct_cases) / direct_seconds)}
    metrics = {
        "nss": (lambda s, f, o: nss(s, f), lambda s, f, o: direct_nss(s, f)),
        "kl": (lambda s, f, o: kl_divergence(s, f, SIGMA), lambda s, f, o: direct_kl(s, f, SIGMA)),
        "shuffled_auc": (
            lambda s, f, o: shuffled_auc(s, f, o, 100, SEED),
            lambda s, f, o: direct_shuffled_auc(s, f, o, 100, SEED),
        ),
    }
    for name, (ours, theirs) in metrics.items():
        ours_fps = len(cases) / _per_metric(ours, cases)
        rows[name] = (ours_fps, len(direct_cases) / _per_metric(theirs, direct_cases))
    result = {
        "data": data,
        "frames": len(cases),
        "direct_frames": len(direct_cases),
        "mean_fixations": float(np.mean([c[1].sum() for c in cases])),
        "metrics": {
            name: {"fls_fps": ours, "direct_fps": theirs, "ratio": ours / theirs}
            for name, (ours, theirs) in rows.items()
        },
    }
    result["ratio"] = result["metrics"]["all three"]["ratio"]
    result["target_ratio"] = TARGET_RATIO
    result["meets_target"] = result["ratio"] >= TARGET_RATIO
    result["markdown"] = markdown(result)
    return result


def markdown(result: dict) -> str:
    lines = [
        f"Saliency metrics, {result['frames']} frames of 210 x 160 ({result['data']}; "
        f"{result['mean_fixations']:.0f} fixations a frame; direct timed on {result['direct_frames']})",
        "",
        "| metric | fls.saliency.metrics (frames/s) | direct (frames/s) | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, m in result["metrics"].items():
        lines.append(f"| {name} | {m['fls_fps']:,.1f} | {m['direct_fps']:,.1f} | {m['ratio']:,.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the direct version on 4 frames, not 20")
    result = run(parser.parse_args().quick)
    print(result["markdown"])
    if not result["meets_target"]:
        print(f"\nbelow the target ratio of {TARGET_RATIO:g}")


if __name__ == "__main__":
    main()
