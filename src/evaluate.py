"""Evaluate trained cells (docs/protocol.md#evaluation), or record their saliency videos.

    python src/evaluate.py -m experiment=demo                          every cell of the demo
    python src/evaluate.py -m game=breakout,seaquest model=sparse_fls seed=0-4
    python src/evaluate.py -m game=breakout model=sparse_fls seed=0-4 pack=seeds   one job, one env
    python src/evaluate.py -m study=paper game=breakout eval.game=breakout_infinite   Table 5
    python src/evaluate.py study=demo model=sparse_fls seed=1 video=true    MP4 + contact sheet

Each cell's checkpoint is found through fls.rundir; results land in the cell's
eval/<eval_game>/ (or video/<eval_game>/). Finished evaluations are not recomputed
unless eval.overwrite=true. Settings: conf/evaluate.yaml and conf/eval/paper.yaml.
"""

import logging

import hydra
from omegaconf import DictConfig

from fls.cli import app, check_command_line, partner
from fls.config import cell_configs
from fls.errors import Skipped
from fls.evaluation import evaluate_cells
from fls.rundir import cell_from_config
from fls.video import check_evaluate_config, record_cell_video
from fls.zoo.entry import select

log = logging.getLogger("evaluate")


def evaluate(cfg: DictConfig):
    """Evaluate (or film) the cell `cfg` names, or under pack=seeds the cells of pack.seeds
    together (one vector env, all models called at each step)."""
    check_evaluate_config(cfg)
    cfgs = cell_configs(cfg)
    cells = [select(one) or cell_from_config(one) for one in cfgs]
    if cfg.video:
        results = [partner(lambda: record_cell_video(one, cell), len(cells)) for one, cell in zip(cfgs, cells)]
    else:
        results = evaluate_cells(cfgs, cells)
    for cell, result in zip(cells, results):
        if isinstance(result, Skipped):  # nothing to evaluate: leave no empty directory behind
            cell.remove_if_empty()
    return results[0] if len(cells) == 1 else {cell.cell.key: r for cell, r in zip(cells, results)}


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@app  # a refusal is one line (fls.cli); in a sweep, this cell alone fails
def main(cfg: DictConfig):
    return evaluate(cfg)


if __name__ == "__main__":
    check_command_line("evaluate", check_evaluate_config)
    main()
