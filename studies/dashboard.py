"""The study's W&B report and workspace (wandb-workspaces), made by the study's analysis job.

    python -m studies.dashboard --study paper [--run-root runs] [--logger wandb] [--mode offline]
                                [--project fls-sweeps] [--entity my-team]

- Report "<study>: fls-sweeps study": per game, the reward curves of the study's runs as
  seed bands per game x model (the runs' W&B group; mean and standard error over seeds,
  against game frames), then Tables 3, 4 and 5 as the analysis wrote them
  (<study>/analysis/table*.md).
- Workspace "<study>": the study's runs (config `study`), grouped by game/model, with the
  reward and speed curves and the evaluation and saliency numbers each cell's run carries
  (fls.wandb_results).

Online (`--mode online`, the logger=wandb_online runs, and a W&B login) both are saved and
their URLs printed. Offline, the default, nothing leaves the machine: the specs are written
to <study>/analysis/wandb_report.json and wandb_workspace.json, and one line says what would
be created and how to publish it (README: `wandb sync` the runs from a machine with
internet, then this command with --mode online).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fls.cli import command
from fls.durable import atomic_write_text
from fls.errors import ConfigError, ServiceError
from fls.rundir import EPREWMEAN, SPS, X_AXIS, RunLayout
from fls.wandb_results import eval_key
from studies.stages import INFINITE, played_by

TABLES = (("Table 3: evaluation scores", "table3"), ("Table 4: saliency metrics on Atari-HEAD", "table4"),
          ("Table 5: Breakout vs BreakoutInfinite", "table5"))
OFFLINE_ENTITY = "<your W&B entity>"


def games_of(layout: RunLayout, study: str) -> list[str]:
    return sorted({c.cell.game for c in layout.cells(study)})


def build(study: str, games: list[str], tables: dict[str, str], entity: str, project: str) -> tuple[Any, Any]:
    """The report and the workspace (not saved)."""
    import wandb_workspaces.expr as expr
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    in_study = f"Config('study') = '{study}'"
    blocks: list[Any] = [wr.P(f"Study {study}: the runs whose config has study={study}, written by fls-sweeps "
                              "(src/train.py, then src/evaluate.py and src/saliency.py in the same runs).")]
    blocks.append(wr.H1("Reward curves: seed bands per game x model"))
    for game in games:
        blocks.append(wr.H2(game))
        blocks.append(wr.PanelGrid(
            runsets=[wr.Runset(name=f"{study} {game}", filters=f"{in_study} and Config('game.name') = '{game}'",
                               groupby=["group"])],
            panels=[wr.LinePlot(title=f"{game}: mean episodic return (training)", x=X_AXIS, y=[EPREWMEAN],
                                groupby_aggfunc="mean", groupby_rangefunc="stderr")],
        ))
    for title, name in TABLES:
        if name in tables:
            blocks += [wr.H1(title), wr.MarkdownBlock(text=tables[name])]
    report = wr.Report(entity=entity, project=project, title=f"{study}: fls-sweeps study",
                       description=f"Reward curves by game x model and Tables 3-5 of study {study}", blocks=blocks)

    workspace = ws.Workspace(
        entity=entity, project=project, name=study,
        sections=[
            ws.Section(name="Training", is_open=True, panels=[
                wr.LinePlot(title="mean episodic return", x=X_AXIS, y=[EPREWMEAN]),
                wr.LinePlot(title="agent steps per second", x=X_AXIS, y=[SPS]),
            ]),
            ws.Section(name="Evaluation (Tables 3, 5)", is_open=True, panels=[
                wr.BarPlot(title=f"{game}: evaluation mean", metrics=[eval_key(game, "mean")]) for game in games
            ] + ([wr.BarPlot(title=f"{INFINITE}: evaluation mean", metrics=[eval_key(INFINITE, "mean")])]
                 if played_by(INFINITE) in games else [])),
        ],
        runset_settings=ws.RunsetSettings(filters=in_study, groupby=[expr.Metric("Group")]),
    )
    return report, workspace


def _spec(obj: Any) -> dict[str, Any]:
    return obj._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True)
    p.add_argument("--run-root", default="runs")
    p.add_argument("--logger", default="wandb", help="the study's logger (conf/logger/): none makes no dashboard")
    p.add_argument("--mode", default=None, help="online or offline (default: WANDB_MODE, else offline)")
    p.add_argument("--project", default="fls-sweeps")
    p.add_argument("--entity", default=None)
    args = p.parse_args(argv)
    say = lambda text: print(f"[dashboard {args.study}] {text}", flush=True)  # noqa: E731
    if args.logger == "none":
        say("the study ran with logger=none: its runs are not in W&B, so there is no dashboard to make")
        return 0
    mode = args.mode or os.environ.get("WANDB_MODE") or "offline"
    layout = RunLayout(args.run_root)
    tables = {name: layout.artefact(args.study, name, "md").read_text() for _, name in TABLES
              if layout.artefact(args.study, name, "md").is_file()}
    games = games_of(layout, args.study)
    if not games:
        raise ConfigError(f"no cells of study {args.study!r} under {args.run_root}/")

    online = mode == "online"
    entity = args.entity
    if online and entity is None:
        try:
            import wandb

            entity = wandb.Api(timeout=30).default_entity
        except Exception as e:  # noqa: BLE001 - wandb's auth and network errors have no common type
            raise ServiceError(f"W&B does not answer ({type(e).__name__}: {e}); `wandb login`, or --mode offline") from None
    report, workspace = build(args.study, games, tables, entity or OFFLINE_ENTITY, args.project)
    specs = layout.artefact(args.study, "wandb_report", "json"), layout.artefact(args.study, "wandb_workspace", "json")
    specs[0].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(specs[0], json.dumps(_spec(report), indent=1) + "\n")
    atomic_write_text(specs[1], json.dumps(_spec(workspace), indent=1) + "\n")
    what = (f"report '{report.title}' ({len(games)} game panel(s), {len(tables)} table(s)) and workspace "
            f"'{workspace.name}' in {entity or OFFLINE_ENTITY}/{args.project}")
    if not online:
        say(f"offline: would create {what}; specs in {specs[0]} and {specs[1]}. "
            "To publish: `wandb sync` the runs (README), then python -m studies.dashboard "
            f"--study {args.study} --run-root {args.run_root} --mode online")
        return 0
    try:
        for runset in (r for block in report.blocks if hasattr(block, "runsets") for r in block.runsets):
            runset.entity, runset.project = entity, args.project
        report.save()
        workspace.save()
    except Exception as e:  # noqa: BLE001 - as above
        raise ServiceError(f"W&B did not take the {what} ({type(e).__name__}: {e}); the specs are in {specs[0].parent}") from None
    say(f"created report {report.url} and workspace {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
