"""`make bench`: throughput as ratios to references measured in the same run.

    python -m bench [--quick] [--out bench/results/bench.json] [--skip p3,scaling]

P1   trainer SPS (sparse_fls, full PPO) / env-only SPS, native backend, 8 envs (Breakout)
P1b  the same on the gymnasium reference backend; and CleanRL's env path (SyncVectorEnv x 8)
P2   packed seeds: aggregate SPS of k = 1, 2, 5 seeds in one job (pack=seeds) / the same k
     seeds trained one after another, beside the env-only ceiling of k x 8 envs, where a packed
     update's time goes, and the paper grid's projected device-hours (Nature CNN, Sparse FLS)
P3   Dense FLS PPO update (minibatch forward+backward) with the best speed option / fp32 eager
P4   fls.saliency.metrics frames/s / a direct implementation with Python loops, same values
P5   frames/s of every saliency map (fls.saliency.posthoc) at 84 x 84, and its per-frame cost
     relative to the model's own map (Nature CNN, which has none: Sparse FLS's own map)
P6   `python -m analysis all` (tables, interval estimates, figures) on a 75-cell paper-sized
     synthetic study (bench/bench_analysis.py), seconds / the same with 100 bootstrap resamples
P7   frames/s of each saliency check (randomization, deletion, insertion) per map, as
     a ratio to the model's forward pass on the same frames (bench/bench_checks.py, issue 33)
P8   trainer SPS with torch_threads=1 / torch's default (one thread per core), alone and beside
     2 x cores busy processes (bench/bench_threads.py: the default of conf/train.yaml)
     scaling: trainer and env-only SPS at 8, 16, 32, 64 envs

The machine is noisy: only ratios within one run mean anything. Targets (issue 10) are for
the GPU machine: P1 >= 0.95, P3 <= 0.2, P4 >= 50; P2 (issue 20): k = 5 packed >= 1.0x the
sequential runs here, >= 4x one cell's SPS on a GPU. P6 (issue 32): under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from bench import (bench_analysis, bench_checks, bench_metrics, bench_models, bench_pack, bench_saliency, bench_threads,
                   throughput)

OUT = Path(__file__).resolve().parent / "results" / "bench.json"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure_p1(quick: bool) -> list[dict]:
    steps, updates = (200, 2) if quick else (600, 4)
    rows = []
    # P1 proper is sparse_fls; nature_cnn (no attention) shows what the FLS module costs.
    for backend, speed, model, env_steps in [("native", "eager", "sparse_fls", steps), ("native", "fast", "sparse_fls", steps),
                                             ("native", "eager", "nature_cnn", steps),
                                             ("gymnasium", "eager", "sparse_fls", steps // 2)]:
        log(f"P1: {backend} env-only and trainer ({model}, {speed})")
        env = throughput.env_sps(backend, 8, env_steps)
        trainer = throughput.trainer_sps(8, updates, f"env.backend={backend}", f"speed={speed}", model=model)
        rows.append({"id": "P1" if backend == "native" else "P1b", "backend": backend, "speed": speed, "model": model,
                     "trainer_sps": trainer, "env_sps": env, "ratio": trainer / env})
    log("P1b: CleanRL's env path")
    cleanrl = throughput.cleanrl_env_sps(8, steps // 2)
    native_env = rows[0]["env_sps"]
    gym_env = rows[-1]["env_sps"]
    rows.append({"id": "P1b", "backend": "cleanrl SyncVectorEnv", "speed": "-", "trainer_sps": None,
                 "env_sps": cleanrl, "ratio": None,
                 "native_over_cleanrl": native_env / cleanrl, "gymnasium_over_cleanrl": gym_env / cleanrl})
    return rows


def measure_p3(quick: bool) -> dict:
    # A PPO update is update_epochs x num_minibatches forward+backward passes of the
    # minibatch; Adam's step is negligible beside a dense model's convolutions at 84 x 84.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = 256 if device == "cuda" else (16 if quick else 64)
    options = ["eager", "channels_last", "compile", "bf16", "compile+bf16"]
    log(f"P3: dense_fls minibatch {batch} on {device}, options {options}")
    result = bench_models.run(models=["dense_fls"], options=options, devices=[device], batch_size=batch,
                              quick=True, out=None, verbose=False)
    times = {r["option"]: r["seconds"] for r in result["results"] if r["model"] == "dense_fls" and r["seconds"]}
    best = min((o for o in times if o != "eager"), key=times.get)
    exact = {o: t for o, t in times.items() if "bf16" not in o and o != "eager"}
    best_exact = min(exact, key=exact.get)
    return {"id": "P3", "device": device, "minibatch": batch, "seconds": times,
            "best": best, "ratio": times[best] / times["eager"],
            "best_exact": best_exact, "ratio_exact": times[best_exact] / times["eager"],
            "update_seconds_eager": 16 * times["eager"] * 256 / batch}


def measure_scaling(quick: bool) -> list[dict]:
    counts = [8, 16] if quick else [8, 16, 32, 64]
    rows = []
    for n in counts:
        log(f"scaling: {n} envs")
        env = throughput.env_sps("native", n, 150 if quick else 300)
        trainer = throughput.trainer_sps(n, 1 if quick else 2, "env.backend=native")
        rows.append({"num_envs": n, "env_sps": env, "trainer_sps": trainer, "ratio": trainer / env})
    return rows


def fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def markdown(result: dict) -> str:
    lines = [f"## make bench ({result['meta']['device']}, {result['meta']['date']})", "",
             "| measure | value | reference (same run) | ratio | target (GPU) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in result.get("p1", []):
        if r["trainer_sps"] is None:
            lines.append(f"| P1b CleanRL env path (SyncVectorEnv x 8), env-only SPS | {fmt(r['env_sps'])} | "
                         f"ours: native {r['native_over_cleanrl']:.1f}x, gymnasium {r['gymnasium_over_cleanrl']:.1f}x | | |")
        else:
            target = ">= 0.95" if r["id"] == "P1" and r.get("model", "sparse_fls") == "sparse_fls" else ""
            lines.append(f"| {r['id']} trainer SPS, {r.get('model', 'sparse_fls')}, {r['backend']}, speed={r['speed']} | "
                         f"{fmt(r['trainer_sps'])} | "
                         f"env-only {fmt(r['env_sps'])} | {r['ratio']:.3f} | {target} |")
    for r in result.get("p2", []):
        parts = ", ".join(f"{name} {sec:.1f} s" for name, sec in r["parts_seconds"].items())
        target = ">= 1.0 here, >= 4x one cell on a GPU" if r["k"] == 5 and r["default"] else ""
        lines.append(f"| P2 {r['model']} k={r['k']} packed (batching {r['batching']}), aggregate SPS ({r['backend']}, {r['device']}) | "
                     f"{fmt(r['packed_sps'])} | {r['k']} run{'s' if r['k'] > 1 else ''} in sequence {fmt(r['sequential_sps'])}; "
                     f"env-only {r['k'] * 8} envs {fmt(r['env_only_sps'])} | {r['packed_over_sequential']:.2f} "
                     f"({r['packed_over_one_cell']:.2f}x one cell; {r['packed_over_env_only']:.2f} of env-only) | {target} |")
        lines.append(f"| P2 {r['model']} k={r['k']}: one packed update {r['update_seconds']:.1f} s | {parts} | | | |")
    if result.get("p2_grid"):
        g = result["p2_grid"]
        lines.append(f"| P2 paper grid (6 x 15 x 5 cells x 5e7 steps) at the k=5 packed rate | "
                     f"{g['device_hours']:,.0f} device-hours | lone cells {g['device_hours_lone']:,.0f} h | "
                     f"{g['device_hours_lone'] / g['device_hours']:.2f} | |")
    if "p3" in result:
        p = result["p3"]
        lines.append(f"| P3 dense_fls update, best option ({p['best']}), {p['device']} minibatch {p['minibatch']} | "
                     f"{p['seconds'][p['best']]:.2f} s | eager {p['seconds']['eager']:.2f} s | {p['ratio']:.3f} | <= 0.2 |")
        lines.append(f"| P3 dense_fls update, best exact option ({p['best_exact']}) | {p['seconds'][p['best_exact']]:.2f} s | "
                     f"eager {p['seconds']['eager']:.2f} s | {p['ratio_exact']:.3f} | |")
    if "p4" in result:
        p = result["p4"]
        lines.append(f"| P4 fls.saliency.metrics frames/s (NSS+KL+sAUC) | {fmt(p['fast_fps'], 1)} | direct {fmt(p['direct_fps'], 1)} | "
                     f"{p['ratio']:.1f} | >= 50 |")
    for r in result.get("p5", []):
        lines.append(f"| P5 {r['model']} saliency map `{r['method']}`, frames/s at 84x84 | {fmt(r['fps'], 1)} | "
                     f"{r['reference']} | {r['cost_vs_own_map']:.1f}x cost | |")
    if "p6" in result:
        p = result["p6"]
        lines.append(f"| P6 `analysis all`, {p['cells']} paper-sized cells (tables, intervals, figures), seconds | "
                     f"{p['all_seconds']:.1f} | the same, 100 bootstrap resamples: {p['reference_seconds']:.1f} s | "
                     f"{p['ratio']:.2f} | < {p['target_seconds']:.0f} s (2 CPU cores) |")
    lines += bench_checks.markdown(result.get("p7", []))
    lines += bench_threads.markdown(result.get("p8", {}))
    for r in result.get("scaling", []):
        lines.append(f"| scaling: trainer SPS, {r['num_envs']} envs (native, eager) | {fmt(r['trainer_sps'])} | "
                     f"env-only {fmt(r['env_sps'])} | {r['ratio']:.3f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and sizes (a minute or two)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: p1, p2, p3, p4, p5, p6, p7, p8, scaling")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - {"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "scaling"}
    if unknown:
        parser.error(f"--skip {','.join(sorted(unknown))}: expected p1, p2, p3, p4, p5, p6, p7, p8, scaling")

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    result: dict = {"meta": {"device": device, "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick,
                             "torch": torch.__version__}}
    start = time.perf_counter()
    if "p1" not in skip:
        result["p1"] = measure_p1(args.quick)
    if "p2" not in skip:
        result["p2"] = bench_pack.run(["nature_cnn", "sparse_fls"], [1, 2, 5], 1 if args.quick else 2)
        result["p2_grid"] = bench_pack.paper_grid_hours(result["p2"])
    if "p3" not in skip:
        result["p3"] = measure_p3(args.quick)
    if "p4" not in skip:
        log("P4: metrics")
        p4 = bench_metrics.run(quick=args.quick)["metrics"]["all three"]
        result["p4"] = {"fast_fps": p4["fls_fps"], "direct_fps": p4["direct_fps"], "ratio": p4["ratio"]}
    if "p5" not in skip:
        log("P5: saliency maps")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        result["p5"] = bench_saliency.run(["nature_cnn", "sparse_fls"], 16 if args.quick else 64, 16,
                                          1 if args.quick else 2, device)
    if "p6" not in skip:
        log("P6: analysis of a 75-cell study")
        result["p6"] = bench_analysis.run()
    if "p7" not in skip:
        log("P7: saliency checks")
        # sparse_fls has every map kind, its own included
        result["p7"] = bench_checks.run(["sparse_fls"], 2 if args.quick else 4, 16, 1 if args.quick else 2,
                                            "cuda" if torch.cuda.is_available() else "cpu")
    if "p8" not in skip:
        result["p8"] = bench_threads.run(2 if args.quick else 3)
    if "scaling" not in skip:
        result["scaling"] = measure_scaling(args.quick)
    result["meta"]["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    print(f"\n{result['meta']['seconds']:.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
