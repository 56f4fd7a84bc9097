"""P7: frames per second of the saliency checks (issue 33) for each map kind, as ratios to the
model's forward pass on the same frames, measured in the same run.

    python bench/bench_checks.py [--models nature_cnn,sparse_fls] [--frames 8] [--quick]

- randomization: fls.saliency.sanity.randomization, every stage (the map drawn once for the
  trained model and once per stage, and the three similarities per frame);
- deletion / insertion: fls.saliency.fidelity's curve of `steps` + 1 points, the map it orders
  by drawn first (so a row is what one check of that map costs); the `random` rows order by the
  seeded random baseline, which costs no map: the curve alone.

Frames are random uint8 stacks (a check's cost does not depend on what the frame shows). The
perturbation maps (Greydanus) are hundreds of forward passes per frame and per stage, so they
are timed on fewer frames; rates are per frame either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch

from fls.models import build_model
from fls.saliency import fidelity, posthoc, sanity

# the curves first: they draw the map once, which warms up what the randomization then
# draws a dozen times (Captum's import, the perturbation masks)
CHECKS = ("deletion", "insertion", "randomization")


def rate(work: Callable[[torch.Tensor], object], frames: torch.Tensor, batch: int, repeats: int,
         warm_up: bool = True, min_seconds: float = 0.0) -> float:
    """Frames per second of `work` over `frames` in batches (best of `repeats`, after a
    warm-up); each timing passes over the frames again until `min_seconds` have gone by."""
    if warm_up:
        work(frames[:batch])
    best = 0.0
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while True:
            for i in range(0, len(frames), batch):
                work(frames[i:i + batch])
            if frames.device.type == "cuda":
                torch.cuda.synchronize()
            done += len(frames)
            seconds = time.perf_counter() - start
            if seconds >= min_seconds:
                break
        best = max(best, done / seconds)
    return best


def run(models: list[str], n_frames: int, batch: int, repeats: int, device: str, steps: int = 20) -> list[dict]:
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (n_frames, 4, 84, 84), dtype=torch.uint8, device=device)
    settings = fidelity.FidelitySettings(steps=steps)
    rows = []
    for name in models:
        model = build_model(name, 6).to(device).eval()

        def forward(obs):
            with torch.no_grad():
                return model(obs)

        # the reference takes a millisecond: timed over half a second, best of several, so a
        # busy machine's hiccup does not make every ratio
        rate(forward, frames, batch, 1)
        reference = rate(forward, frames, batch, max(5, repeats), min_seconds=0.5)
        rows.append({"model": name, "map": "-", "check": "forward", "fps": reference, "ratio": 1.0})
        for method in (*(m for m in posthoc.MAPS if not posthoc.needs(m, model)), "random"):
            # a Greydanus map is (84 / stride)^2 forwards per frame: fewer frames measure it
            n = max(1, n_frames // 8) if method in posthoc.PERTURBATION_METHODS else n_frames
            for check in CHECKS:
                if method == "random":
                    if check == "randomization":
                        continue
                    work = lambda obs, check=check: fidelity.curves(  # noqa: E731
                        model, obs, fidelity.baseline_map("random", len(obs)), check, settings)
                elif check == "randomization":
                    work = lambda obs, method=method: sanity.randomization(model, obs, method)  # noqa: E731
                else:
                    work = lambda obs, method=method, check=check: fidelity.curves(  # noqa: E731
                        model, obs, posthoc.draw(model, obs, method), check, settings)
                # a randomization or a Greydanus map takes seconds: one timing is stable enough
                once = check == "randomization" or method in posthoc.PERTURBATION_METHODS
                fps = rate(work, frames[:n], min(batch, n), 1 if once else repeats, warm_up=check != "randomization")
                rows.append({"model": name, "map": method, "check": check, "fps": fps, "ratio": fps / reference,
                             "frames": n, "steps": steps if check != "randomization" else None})
                print(f"P7: {name} {method} {check}: {fps:,.2f} frames/s ({fps / reference:.2e} of the forward pass)",
                      file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """The rows of `make bench`'s table (bench/__main__.py)."""
    lines = []
    for r in rows:
        if r["check"] == "forward":
            continue
        forward = next(x["fps"] for x in rows if x["model"] == r["model"] and x["check"] == "forward")
        what = "curve alone, random order" if r["map"] == "random" else f"map `{r['map']}`"
        lines.append(f"| P7 {r['model']} {r['check']}, {what}, frames/s | {r['fps']:,.2f} | "
                     f"forward pass {forward:,.0f} | {r['ratio']:.2e} | |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="nature_cnn,sparse_fls")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = run(a.models.split(","), 4 if a.quick else a.frames, a.batch, 1 if a.quick else 2, device, a.steps)
    print("\n".join(markdown(rows)))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
