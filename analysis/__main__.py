"""python -m analysis <artefact> --study <name> [--run-root runs]

    python -m analysis table2                      parameter counts, printed only
    python -m analysis table3 --study demo         evaluation scores of runs/demo
    python -m analysis table4 --study paper --resolution 84x84
    python -m analysis fig3 --study paper --source wandb:my-team/fls-sweeps
    python -m analysis fig4 --study paper --games breakout,seaquest --models dense_fls,sparse_fls
    python -m analysis fig5 --study paper --maps model,greydanus   Atari-HEAD frames with maps
    python -m analysis scatter --study paper       fig8-fig14: every evaluated game, one figure per game
    python -m analysis stats --study paper         interval estimates: aggregate, poi, profiles, efficiency
    python -m analysis poi --study demo --pairs sparse_fls:dense_fls   is FLS free? P(X > Nature CNN)
    python -m analysis checks --study zoo          saliency checks: table, randomisation grids, deletion/insertion
    python -m analysis over_training --study demo --maps model,jacobian   maps and scores per snapshot
    python -m analysis all --study paper           table2-5, stats, fig3-fig14, checks (not over_training)

Tables 3-5 carry 95% bootstrap intervals beside the paper's mean ± std (docs/statistics.md);
--reps and --bootstrap-seed make them reproducible.

Tables print as Markdown and are written as <artefact>.md, .csv (tidy numbers, one row per
cell) and .tex; figures are written as <artefact>.png and .svg (plus .csv, the plotted
curves) and their paths printed. Everything goes to runs/<study>/analysis/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import checks, fig3, fig4, fig5, over_training, scatter, stats, table2, table3, table4, table5
from analysis.grid import Grid
from analysis.intervals import DEFAULT_REPS, DEFAULT_SEED, Bootstrap
from analysis.load import SourceError
from analysis.sources import open_source
from analysis.paper import DEFAULT_DIR, PaperValues
from analysis.render import Artefact, Skipped, markdown, write_figure, write_table
from fls.cli import command
from fls.errors import ConfigError
from fls.rundir import RunLayout
from fls.saliency import posthoc

TABLES = ["table2", "table3", "table4", "table5"]
FIGURES = list(fig3.FIGURES)
SCATTERS = list(scatter.FIGURES)
STATS = list(stats.ARTEFACTS)
ARTEFACTS = [*TABLES, *STATS, *FIGURES, "fig4", "fig5", *SCATTERS, "checks", "over_training"]


def seed_list(text: str) -> list[int]:
    try:
        return sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artefact", choices=[*ARTEFACTS, "scatter", "stats", "all"],
                        help="the paper's artefact to build (scatter: fig8-fig14, one per game; stats: "
                             f"{', '.join(STATS)})")
    parser.add_argument("--study", help="the sweep's name (runs/<study>/); optional for table2 only")
    parser.add_argument("--run-root", default="runs", help="where run directories are (default: runs)")
    parser.add_argument("--source", default="files",
                        help="'files' (default) or wandb:<entity>/<project> for the training curves of online runs")
    parser.add_argument("--paper-values", type=Path, default=DEFAULT_DIR,
                        help=f"folder of the paper's table4.csv and table5.csv (default: {DEFAULT_DIR})")
    parser.add_argument("--seeds", type=seed_list,
                        help="expected seeds, e.g. 1,9,17,25,33, and only those are used (default: every seed in the study)")
    parser.add_argument("--resolution", default="210x160", choices=["210x160", "84x84"], help="Table 4's map resolution")
    parser.add_argument("--alignment", default=None, choices=["spec", "paper"],
                        help="Table 4's frame alignment: the protocol's, or the authors' off-by-one (default: the preset's)")
    parser.add_argument("--preset", default="spec",
                        help="Table 4's metric settings: spec (docs/protocol.md) or paper (saliency=paper)")
    parser.add_argument("--games", default=None,
                        help="Figure 4's games, comma-separated (default: breakout,seaquest)")
    parser.add_argument("--models", default=None,
                        help="Figure 4's models, comma-separated (default: dense_fls,sparse_fls)")
    parser.add_argument("--replay-steps", type=int, default=fig4.REPLAY_STEPS,
                        help=f"Figure 4's replay length in agent steps (default {fig4.REPLAY_STEPS})")
    parser.add_argument("--maps", default="model",
                        help="Figures 4 and 5's maps, comma-separated: model (each model's own) and any post-hoc method "
                             "(jacobian, integrated_gradients, gradcam, greydanus, greydanus_value)")
    parser.add_argument("--atari-head", type=Path, default=None,
                        help="Figure 5's and over_training's Atari-HEAD folder (default: $ATARI_HEAD_ROOT, else the "
                             "bundled sample)")
    parser.add_argument("--probe-frames", type=int, default=over_training.PROBE_FRAMES,
                        help=f"over_training: probe frames per source (default {over_training.PROBE_FRAMES})")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"bootstrap resamples of every interval (default {DEFAULT_REPS})")
    parser.add_argument("--bootstrap-seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the bootstrap: the same study, reps and seed give the same intervals (default {DEFAULT_SEED})")
    parser.add_argument("--pairs", default=None,
                        help="poi: more comparisons, x:y pairs of the study's models, comma-separated "
                             f"(every model is compared with {stats.BASELINE} anyway)")
    return parser.parse_args(argv)


def build_table(name: str, source, grid: Grid, args: argparse.Namespace, bootstrap: Bootstrap):
    paper = PaperValues(args.paper_values)
    if name == "table3":
        return table3.build(source, grid, bootstrap)
    if name == "table4":
        return table4.build(source, grid, paper, args.resolution, args.alignment, args.preset, bootstrap)
    return table5.build(source, grid, paper, bootstrap)


def build_figure(name: str, source, grid: Grid, metrics, args: argparse.Namespace, maps: list[str]):
    """(the figure or None, the line that says why it is skipped, or None to say nothing)."""
    study = repr(args.study)
    if name == "fig4":
        return (fig4.build(args.run_root, args.study, grid, args.games and args.games.split(","),
                           args.models and args.models.split(","), maps, args.replay_steps),
                f"fig4: no trained cell of its games ({args.games or ','.join(fig4.DEFAULT_GAMES)}) x models "
                f"({args.models or ','.join(fig4.DEFAULT_MODELS)}) in study {study}; skipped")
    if name == "fig5":
        return (fig5.build(args.run_root, args.study, grid, maps, args.atari_head),
                f"fig5: no trained model of study {study} on a game of Atari-HEAD "
                f"({', '.join(sorted(fig5.GAMES))}) draws a map; skipped")
    if name in SCATTERS:
        # asked for by name: say so; `all` and `scatter` list only what they draw
        return (scatter.build(source, grid, name),
                f"{name}: no evaluated {scatter.FIGURES[name]} game in study {study}; skipped"
                if args.artefact == name else None)
    return (fig3.build(source, grid, name, metrics),
            f"{name}: none of its models ({', '.join(sorted(fig3.own_models(name)))}) has a reward "
            f"curve in study {study}; skipped")


def show(name: str, built, out_dir: Path) -> None:
    """Print a table (and write it), a figure's paths, or why an artefact is skipped."""
    if isinstance(built, Skipped):
        print(f"{built.name or name}: {built.reason}; skipped\n")
    elif isinstance(built, Artefact):
        print(markdown(built))
        print("\n".join(f"wrote {p}" for p in write_table(built, out_dir)) + "\n")
    else:
        paths = write_figure(built.figure, built.name, out_dir, built.data)
        print(f"## {built.title}\n")
        print("\n".join([*(f"wrote {p}" for p in paths), *(f"- {n}" for n in built.notes)]) + "\n")


@command  # a refusal: one line and exit status 2 (fls.cli)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay_steps < 3:
        raise ConfigError(f"--replay-steps {args.replay_steps}: expected at least 3 agent steps")
    if args.probe_frames < 2:
        raise ConfigError(f"--probe-frames {args.probe_frames}: expected at least 2 frames")
    maps = args.maps.split(",")
    bad = [m for m in maps if m not in posthoc.MAPS]
    if bad:  # before any artefact is written
        raise ConfigError(f"--maps {','.join(bad)}: expected some of {', '.join(posthoc.MAPS)}")
    try:
        bootstrap = Bootstrap(args.reps, args.bootstrap_seed)
        pairs = stats.parse_pairs(args.pairs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # over_training draws every snapshot's maps (minutes for a real study): asked for by name only
    every = [a for a in ARTEFACTS if a != "over_training"]
    wanted = {"all": every, "scatter": SCATTERS, "stats": STATS}.get(args.artefact, [args.artefact])
    if args.study is None and wanted != ["table2"]:
        raise ConfigError(f"{args.artefact} needs --study <name> (the sweep under {args.run_root}/)")
    out_dir = RunLayout(args.run_root).analysis_dir(args.study) if args.study else None

    if "table2" in wanted:  # from the registry alone: needs no study
        artefact = table2.build()
        print(markdown(artefact))
        if out_dir:
            print("\n".join(f"wrote {p}" for p in write_table(artefact, out_dir)) + "\n")
    rest = [a for a in wanted if a != "table2"]
    if not rest:
        return 0

    try:
        source = open_source(args.source, args.run_root, args.study)
        cells = source.cells()
        if cells.empty:
            raise SourceError(f"no cells of study {args.study!r} in {source.description}")
        grid = Grid.of(cells, args.seeds)
        stats.check_pairs(pairs, grid.models)
        metrics = source.metrics() if set(rest) & {*FIGURES, "efficiency"} else None  # once for all figures
    except (ValueError, SourceError) as e:
        raise ConfigError(str(e)) from None

    for name in rest:
        if name == "checks":
            results = checks.collect(args.run_root, args.study, grid, args.preset)  # once: the table and figures
            built = checks.build_table(args.run_root, args.study, grid, bootstrap, args.preset, results=results)
            if isinstance(built, Skipped) and args.artefact != name:
                continue  # `all`: a study without checks says nothing of them
            show(name, built, out_dir)
            if not isinstance(built, Skipped):
                for figure in checks.build_randomization(results, grid) + checks.build_fidelity(results, grid):
                    show(figure.name, figure, out_dir)
            continue
        if name == "over_training":
            figures = over_training.build(args.run_root, args.study, grid, maps, args.atari_head or fig5.default_root(),
                                          args.probe_frames)
            if not figures:  # asked for by name: `all` leaves it out
                print(f"over_training: no cell of study {args.study!r} kept snapshots (src/train.py ... snapshots=<n>); "
                      "skipped\n")
            for figure in figures:
                show(figure.name, figure, out_dir)
            continue
        if name in STATS:
            for built in stats.build(name, source, grid, bootstrap, pairs, metrics):
                show(name, built, out_dir)
            continue
        if name not in TABLES:
            try:
                built, skipped = build_figure(name, source, grid, metrics, args, maps)
            except ValueError as e:  # fig5's Atari-HEAD folder
                raise ConfigError(str(e)) from None
            if built is None:
                if skipped:
                    print(skipped + "\n")
                continue
            show(name, built, out_dir)
            continue
        show(name, build_table(name, source, grid, args, bootstrap), out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
