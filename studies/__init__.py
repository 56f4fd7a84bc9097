"""Whole studies: a study run stage after stage (study.py), and where every cell of it is
(status.py, sweep-status). The launcher profiles are Hydra configs in conf/launcher/, the
launchers themselves Hydra plugins in src/hydra_plugins/; cluster/ holds the one-node SLURM
and the notes on running on a cluster."""
