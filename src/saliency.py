"""Score trained cells' saliency maps against human gaze on Atari-HEAD (docs/protocol.md#saliency-metrics, Table 4),
and check whether the maps mean anything (docs/saliency_checks.md).

    python src/saliency.py study=demo game=mspacman model=sparse_fls seed=1
    python src/saliency.py -m study=paper game=mspacman,breakout model=sparse_fls seed=1,9
    python src/saliency.py ... saliency.root=/data/atari_head saliency.resolutions=[210x160,84x84]
    python src/saliency.py zoo=breakout_sparse_fls saliency.checks=[randomization,deletion,insertion]

Each cell's checkpoint is found through fls.rundir; per-frame results land in the cell's
saliency/frames/, per-trial means in saliency/trials.csv (read by `python -m analysis
table4`); the checks' per-frame results in saliency/checks/ (`python -m analysis checks`).
Cached results for the same checkpoint and settings are not recomputed unless
saliency.overwrite=true. Settings: conf/saliency.yaml, conf/saliency/default.yaml and
conf/checks/default.yaml.
"""

import logging

import hydra
from omegaconf import DictConfig

from fls.cli import app, check_command_line, partner
from fls.config import cell_configs
from fls.errors import Skipped
from fls.rundir import cell_from_config
from fls.saliency_checks import asked, check_config, run_checks, scores_gaze
from fls.gaze_scores import score_cell
from fls.zoo.entry import select

log = logging.getLogger("saliency_metrics")


@hydra.main(config_path="../conf", config_name="saliency", version_base="1.3")
@app  # a refusal is one line (fls.cli); in a sweep, this cell alone fails
def main(cfg: DictConfig):
    """Score the cell `cfg` names; under pack=seeds, the cells of pack.seeds one after another
    (scoring has no rollout to share)."""
    results = {}
    cfgs = cell_configs(cfg)
    for one in cfgs:
        cell = select(one) or cell_from_config(one)
        def work(one: DictConfig = one, cell=cell):  # noqa: ANN202 (bound now: partner calls it at once)
            trials = score_cell(one, cell) if scores_gaze(one) else None
            checked = run_checks(one, cell) if asked(one) else None
            result = None if trials is None else trials.to_dict("records")
            if asked(one):
                result = {"gaze": result, "checks": None if checked is None else checked.to_dict("records")}
            return result

        result = partner(work, len(cfgs))
        if isinstance(result, Skipped):  # nothing to score: leave no empty directory behind
            cell.remove_if_empty()
        results[cell.cell.key] = result
    return next(iter(results.values())) if len(cfgs) == 1 else results


if __name__ == "__main__":
    check_command_line("saliency", check_config)
    main()
