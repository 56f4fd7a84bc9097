"""Running studies and sweeps on a cluster: a whole study (study.py, its checks preflight.py,
its SLURM job chain chain.py), where it is (status.py, progress.py), its W&B dashboard
(dashboard.py), and a one-node SLURM (slurm-local/).

The launcher profiles are Hydra configs, in conf/launcher/; the launchers themselves are
the Hydra plugins of src/hydra_plugins/fls_launchers/."""
