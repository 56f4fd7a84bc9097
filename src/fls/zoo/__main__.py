"""The zoo's command line.

    python -m fls.zoo pack <cell dir> <entry> [--commit SHA] [--command "..."]   make an entry
    python -m fls.zoo list                                                       the entries
    python -m fls.zoo table                                  the table of zoo/README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from fls.cli import command
from fls.evaluation import eval_seed
from fls.facts import load_group
from fls.games import eval_frame_limit
from fls.rundir import CellDir, ZooEntry
from fls.zoo.entry import entries, read_entry
from fls.zoo.pack import pack, random_agent_scores, table


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fls.zoo", description="Trained agents shipped with the repository.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="make zoo/<entry>/ from a trained cell")
    p.add_argument("cell", type=Path)
    p.add_argument("entry")
    p.add_argument("--commit", help="the commit it was trained at (default: the one its status records, else HEAD)")
    p.add_argument("--command", help="the command that trains it again")
    p.add_argument("--random-games", type=int, default=32, help="games of the random agent to measure (0: none)")
    sub.add_parser("list", help="the entries")
    sub.add_parser("table", help="the markdown table of zoo/README.md")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table())
        return 0
    if args.command == "list":
        for name in entries():
            _, weights = read_entry(ZooEntry(name))
            print(f"{name}: {weights['model_name']} on {weights['game']}, {weights['global_step']} agent steps")
        return 0
    random_agent = None
    if args.random_games:
        config = OmegaConf.load(CellDir.at(args.cell).config)
        eval_cfg = load_group("eval", "paper")
        cfg = OmegaConf.create({"seed": int(config.seed), "eval": eval_cfg})
        random_agent = random_agent_scores(config.game, config.env, args.random_games, int(eval_cfg.num_envs),
                                           eval_seed(cfg), eval_frame_limit(config.game, eval_cfg))
    print(pack(args.cell, args.entry, commit=args.commit, command=args.command, random_agent=random_agent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
