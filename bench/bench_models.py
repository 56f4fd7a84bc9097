"""Forward+backward time of every model of the registry, as a ratio to Nature CNN.

One step = zero the gradients, forward a minibatch of uint8 frames (batch 256 = a PPO
minibatch of 1,024 samples / 4), a PPO-like loss, backward. Each model runs in fp32 eager
and with each speed option of fls.models.speed (channels_last, compile, bf16 autocast; or
combinations such as compile+bf16), on the CPU and, where there is one, on the GPU.
Warm-up steps (torch.compile's compilation included) are not timed; a cell is the median
step time, and its ratio is to nature_cnn fp32 eager on the same device in the same run.

    python bench/bench_models.py [--quick] [--models sparse_fls,dense_fls]
        [--options eager,compile] [--devices cpu] [--batch-size 256] [--out PATH]
    run(quick=True, models=[...]) -> dict          # for `make bench`

On a 2-core CPU a dense model's step at batch 256 takes about 30 s in fp32 eager (4 s with
compile+bf16), a sparse one's 0.1-0.7 s: the default run takes about 20 minutes there, the
sparse models alone (--models) about 4. Use --models, --options, --quick, --batch-size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F

from fls.facts import now
from fls.models import MODELS, SpeedOptions, apply_speed_options, autocast_context, build_model, count_parameters

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "models.json"
DEFAULT_OPTIONS = ("eager", "channels_last", "compile", "bf16")
REFERENCE = ("nature_cnn", "eager")
NUM_ACTIONS = 4  # Breakout, the action count of docs/protocol.md#names's parameter column


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ppo_like_loss(logits: torch.Tensor, value: torch.Tensor, actions, advantages, returns) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    pg = -(logp.gather(1, actions[:, None]).squeeze(1) * advantages).mean()
    entropy = -(logp.exp() * logp).sum(-1).mean()
    return pg + 0.5 * F.mse_loss(value, returns) - 0.01 * entropy


def time_steps(name: str, options: SpeedOptions, device: str, batch_size: int,
               warmup: int, min_steps: int, min_seconds: float) -> list[float]:
    """Seconds of each timed forward+backward step, after `warmup` untimed ones."""
    torch.manual_seed(0)
    if options.compile:
        # Every model shares one forward code object: without a reset, dynamo stops
        # recompiling after 8 models and the "compiled" timings would be eager ones.
        torch._dynamo.reset()
    model = apply_speed_options(build_model(name, NUM_ACTIONS).to(device),
                                channels_last=options.channels_last, compile=options.compile)
    obs = torch.randint(0, 256, (batch_size, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.randint(0, NUM_ACTIONS, (batch_size,), device=device)
    advantages, returns = torch.randn(batch_size, device=device), torch.randn(batch_size, device=device)

    def step() -> float:
        synchronize(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with autocast_context(device, options.bf16):
            logits, value = model(obs)
            loss = ppo_like_loss(logits, value, actions, advantages, returns)
        loss.backward()
        synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        step()
    times: list[float] = []
    while len(times) < min_steps or sum(times) < min_seconds:
        times.append(step())
    return times


def run(models: list[str] | None = None, options: list[str] | None = None, devices: list[str] | None = None,
        batch_size: int = 256, quick: bool = False, out: Path | str | None = DEFAULT_OUT,
        verbose: bool = True) -> dict:
    """Time every (device, model, option); returns (and writes to `out`) the results."""
    models = list(models or MODELS)
    options = [SpeedOptions.parse(o) for o in (options or DEFAULT_OPTIONS)]
    devices = list(devices or available_devices())
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; accepted names: {', '.join(MODELS)}")
    if set(devices) - set(available_devices()):
        raise ValueError(f"devices {devices}: this machine has {available_devices()}")
    # Timed steps: at least min_steps, and more while they add up to less than min_seconds.
    warmup, min_steps, min_seconds = (1, 2, 0.0) if quick else (1, 3, 3.0)

    # The reference is always measured, first, even when the filters leave it out.
    cells = [(REFERENCE[0], SpeedOptions())] + [
        (m, o) for m in models for o in options if (m, o.label) != REFERENCE
    ]
    rows = []
    for device in devices:
        reference = None
        for name, option in cells:
            row = {"device": device, "model": name, "option": option.label, "batch_size": batch_size}
            try:
                # compile's first steps build the forward and the backward graphs
                times = time_steps(name, option, device, batch_size,
                                   warmup + (1 if option.compile else 0), min_steps, min_seconds)
                row.update(seconds=statistics.median(times), steps=len(times))
            except (RuntimeError, torch.OutOfMemoryError) as error:  # one failing cell must not end the run
                row.update(seconds=None, steps=0, error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
                if device == "cuda":
                    torch.cuda.empty_cache()
            if (name, option.label) == REFERENCE:
                reference = row["seconds"]
            row["ratio"] = row["seconds"] / reference if row["seconds"] and reference else None
            rows.append(row)
            if verbose:
                shown = f"{row['seconds'] * 1e3:9.1f} ms  {row['ratio']:6.2f}x" if row["seconds"] else row["error"]
                print(f"  {device:4s} {name:24s} {option.label:28s} {shown}", flush=True)

    result = {
        "meta": {
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
            "batch_size": batch_size,
            "num_actions": NUM_ACTIONS,
            "quick": quick,
            "reference": "/".join(REFERENCE),
            "date": now(),
        },
        "params": {name: count_parameters(build_model(name, NUM_ACTIONS)) for name in dict.fromkeys(
            [REFERENCE[0], *models])},
        "results": rows,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict) -> str:
    """One row per model, one column per (device, option): time and ratio to the reference."""
    rows = result["results"]
    columns = list(dict.fromkeys((r["device"], r["option"]) for r in rows))
    cell = {(r["model"], r["device"], r["option"]): r for r in rows}
    lines = [
        f"Forward+backward step, batch {result['meta']['batch_size']}; ratio to "
        f"{result['meta']['reference']} on the same device (lower is faster).",
        "",
        "| model | params | " + " | ".join(f"{d} {o}" for d, o in columns) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        texts = []
        for device, option in columns:
            r = cell.get((model, device, option))
            if r is None:
                texts.append("")
            elif r["seconds"] is None:
                texts.append("error")
            else:
                texts.append(f"{r['seconds'] * 1e3:.1f} ms ({r['ratio']:.2f}x)" if r["ratio"] is not None
                             else f"{r['seconds'] * 1e3:.1f} ms")
        lines.append(f"| {model} | {result['params'][model]:,} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 timed steps per cell (default: at least 3 and 3 s), after 1 warm-up step")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--options", help=f"comma-separated, each 'eager' or '+'-joined speed options "
                                          f"(default {','.join(DEFAULT_OPTIONS)})")
    parser.add_argument("--devices", help="comma-separated subset of cpu,cuda (default: those present)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default %(default)s)")
    args = parser.parse_args()

    def split(text):
        return text.split(",") if text else None

    result = run(split(args.models), split(args.options), split(args.devices), args.batch_size, args.quick, args.out)
    print()
    print(markdown(result))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
