#!/usr/bin/env bash
# Tear down the one-node SLURM of up.sh: cancel its jobs, stop its daemons (by their pid
# files, nothing else), remove $FLS_SLURM_DIR. Idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
source "$HERE/lib.sh"

if [ ! -d "$STATE" ]; then
    say "not up (no $STATE)"
    exit 0
fi

# Jobs first, so no slurmstepd outlives its slurmd.
if live_pid slurmctld "$STATE/run/slurmctld.pid" >/dev/null; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u || true)
    if [ -n "$jobs" ]; then
        scancel $jobs 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
        say "cancelled jobs: $(echo $jobs)"
    fi
fi

stop_daemon slurmd "$STATE/run/slurmd.pid"
stop_daemon slurmctld "$STATE/run/slurmctld.pid"
stop_daemon slurmdbd "$STATE/run/slurmdbd.pid"
stop_daemon mariadbd "$STATE/run/mysqld.pid"
stop_daemon munged "$STATE/run/munged.pid"
rm -rf "$STATE"
say "down (removed $STATE)"
