"""P5: frames per second of every saliency map (fls.saliency.posthoc) at 84 x 84, and each
method's per-frame cost relative to the model's own map, measured in the same run.

    python bench/bench_saliency.py [--models nature_cnn,sparse_fls] [--frames 32] [--quick]

Frames are random uint8 stacks (a map's cost does not depend on what the frame shows),
drawn in batches as the Atari-HEAD scoring draws them. nature_cnn has no map of its own:
its reference is Sparse FLS's own map, the cheapest map in the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from fls.models import build_model
from fls.saliency import posthoc


def fps(model, method: str, frames: torch.Tensor, batch: int, repeats: int) -> float:
    posthoc.draw(model, frames[:batch], method)  # warm-up (and Captum's import)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(frames), batch):
            posthoc.draw(model, frames[i:i + batch], method)
        if frames.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def run(models: list[str], n_frames: int, batch: int, repeats: int, device: str) -> list[dict]:
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (n_frames, 4, 84, 84), dtype=torch.uint8, device=device)
    rows, reference = [], None
    for name in models:
        model = build_model(name, 6).to(device).eval()
        for method in posthoc.MAPS:
            if posthoc.needs(method, model):
                continue
            # the perturbation is hundreds of forwards per frame: fewer frames measure it
            n = max(batch, n_frames // 8) if method in posthoc.PERTURBATION_METHODS else n_frames
            rate = fps(model, method, frames[:n], batch, repeats)
            if method == "model" and reference is None:
                reference = (name, rate)
            rows.append({"model": name, "method": method, "fps": rate})
            print(f"P5: {name} {method}: {rate:,.1f} frames/s", file=sys.stderr, flush=True)
    ref_model, ref_fps = reference if reference else (None, None)
    for r in rows:
        own = next((x["fps"] for x in rows if x["model"] == r["model"] and x["method"] == "model"), None)
        r["reference"] = f"{r['model']} model" if own else f"{ref_model} model"
        base = own or ref_fps
        r["cost_vs_own_map"] = base / r["fps"] if base else None
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="nature_cnn,sparse_fls")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = run(a.models.split(","), 16 if a.quick else a.frames, a.batch, 1 if a.quick else 2, device)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
