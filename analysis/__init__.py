"""The paper's tables and figures from a study's run directories.

    python -m analysis table3 --study demo            Table 3 of runs/demo, printed and written
    python -m analysis all --study paper              every artefact below

One module per paper artefact, named after it: `table2` (parameter counts, from the model
registry), `table3` (evaluation scores), `table4` (saliency metrics on Atari-HEAD, beside
the paper's values), `table5` (Breakout vs BreakoutInfinite), `fig3` (reward curves; also
Figures 6 and 7, the same plot for the ablation models). Interval estimates (docs/statistics.md):
`intervals` (rliable's bootstrap, seeded), `scores` (seed scores, human-normalised scores),
`stats` (aggregates, probability of improvement, performance profiles), `efficiency`
(sample-efficiency curves); Tables 3-5 carry their intervals themselves. Outputs go to
`RunLayout(run_root).analysis_dir(study)` as `<artefact>.md/.csv/.tex` (tables) or
`<artefact>.png/.svg` (figures).

Data comes from a source: `load.FileSource` reads the files that training, evaluation and
the saliency metrics write; `wandb_source.WandbSource` reads the same training curves from
W&B's public API. Both return the same DataFrames, so the artefacts never know which.
"""
