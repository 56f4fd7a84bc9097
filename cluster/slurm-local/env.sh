# Source me to talk to the one-node SLURM of cluster/slurm-local (sbatch, squeue, sacct,
# and sweeps with launcher=slurm_local):   source cluster/slurm-local/env.sh
_fls_slurm_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FLS_SLURM_DIR=${FLS_SLURM_DIR:-$(cd "$_fls_slurm_here/../.." && pwd)/.slurm}
# SLURM's clients and daemons read their config from here instead of /etc/slurm.
export SLURM_CONF=$FLS_SLURM_DIR/etc/slurm.conf
unset _fls_slurm_here
