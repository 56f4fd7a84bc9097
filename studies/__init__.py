"""Whole studies: a study run (study.py), its stages (stages.py), every stage checked before
the first (preflight.py), on SLURM submitted as one job chain (chain.py); where every cell and
stage of it is (status.py, progress.py: sweep-status); what SLURM says of its jobs (slurm.py);
its W&B dashboard (dashboard.py). The launcher profiles are Hydra configs in conf/launcher/,
the launchers themselves Hydra plugins in src/hydra_plugins/; cluster/ holds the one-node SLURM
and the notes on running on a cluster."""
