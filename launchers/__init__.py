"""Running sweeps on a cluster: sweep-status (status.py) and a one-node SLURM (slurm-local/).

The launcher profiles are Hydra configs, in conf/launcher/; the launchers themselves are
the Hydra plugins of src/hydra_plugins/fls_launchers/."""
