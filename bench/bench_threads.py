"""P8: torch's CPU threads on a shared machine: trainer SPS alone and beside busy neighbours.

torch starts one intra-op thread per core. Alone that is what a CPU run wants; on a shared
login node or CI box, where other processes already keep the cores busy, each of those
threads waits at every parallel region for its slowest sibling, so a descheduled thread stalls
the whole update. This measures the real trainer (src/train.py, Sparse FLS, Breakout, 8 envs)
with `torch_threads=1` and with torch's default, first alone, then beside `2 x cores` busy
processes (a load average of about twice the core count, as on a busy login node), all in one
run so the ratios compare like with like:

    python -m bench.bench_threads [--updates 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from contextlib import contextmanager

import torch

from bench import throughput


def _spin() -> None:
    while True:
        pass


@contextmanager
def neighbours(count: int):
    """`count` busy processes (pure Python loops, one core each) for the duration."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


def run(updates: int = 3, model: str = "sparse_fls") -> dict:
    cores = os.cpu_count() or 1
    default = torch.get_num_threads()
    settings = {"1": "torch_threads=1", f"default ({default})": "torch_threads=0"}
    result: dict = {"cores": cores, "default_threads": default, "neighbours": 2 * cores, "sps": {}}
    for load, busy in (("alone", 0), ("loaded", 2 * cores)):
        with neighbours(busy):
            for name, override in settings.items():
                print(f"P8: {model}, threads {name}, {load}", file=sys.stderr, flush=True)
                # the env's own threads stay at one, so only torch's count varies
                sps = throughput.trainer_sps(8, updates, override, "env.num_threads=1", model=model)
                result["sps"][f"{name}, {load}"] = sps
    sps = result["sps"]
    for name in settings:
        result[f"slowdown {name}"] = sps[f"{name}, alone"] / sps[f"{name}, loaded"]
    default_name = f"default ({default})"
    result["one_over_default_alone"] = sps["1, alone"] / sps[f"{default_name}, alone"]
    result["one_over_default_loaded"] = sps["1, loaded"] / sps[f"{default_name}, loaded"]
    return result


def markdown(r: dict) -> list[str]:
    if not r:
        return []
    d = f"default ({r['default_threads']})"
    return [
        f"| P8 trainer SPS, torch_threads=1 / torch's default ({r['default_threads']} threads), alone | "
        f"{r['sps']['1, alone']:,.0f} | {r['sps'][d + ', alone']:,.0f} | {r['one_over_default_alone']:.2f} | |",
        f"| P8 the same beside {r['neighbours']} busy processes | {r['sps']['1, loaded']:,.0f} | "
        f"{r['sps'][d + ', loaded']:,.0f} | {r['one_over_default_loaded']:.2f} | |",
        f"| P8 slowdown under load (alone / loaded): 1 thread {r['slowdown 1']:.1f}x, default "
        f"{r['slowdown ' + d]:.1f}x | | | | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3, help="timed PPO updates per measurement")
    args = parser.parse_args()
    print(json.dumps(run(args.updates), indent=2))


if __name__ == "__main__":
    main()
