# Helpers shared by up.sh and down.sh.

PORT_BASE=${FLS_SLURM_PORT_BASE:-16810}
CTLD_PORT=$((PORT_BASE + 7))
SLURMD_PORT=$((PORT_BASE + 8))
DBD_PORT=$((PORT_BASE + 9))
DB_PORT=$((PORT_BASE + 6))
STATE=$FLS_SLURM_DIR

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

# The pid in a pid file, if that process is alive and is the daemon we expect (a pid can
# be reused after a crash).
live_pid() {  # name pidfile
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

wait_for() {  # seconds description command...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s (logs: $STATE/log/)"
        sleep 0.2
    done
}

stop_daemon() {  # name pidfile
    local pid i
    pid=$(live_pid "$1" "$2") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        [ -d "/proc/$pid" ] || { say "stopped $1"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $1 (it ignored SIGTERM for 20 s)"
}
