#!/usr/bin/env bash
# Bring up a one-node SLURM on this machine, with real accounting: munged, MariaDB,
# slurmdbd, slurmctld and slurmd, started directly (no systemd), listening on loopback
# only, all state under $FLS_SLURM_DIR (default <repo>/.slurm). Installs Debian's
# packages when they are missing. Idempotent: daemons already up are left alone.
# Ports 16816-16819 on 127.0.0.1 (FLS_SLURM_PORT_BASE=16810 moves them); one node named
# after this host, with its CPUs and memory; one partition, `local`.
#
#   cluster/slurm-local/up.sh                  (make slurm-up)
#   source cluster/slurm-local/env.sh          then sbatch, squeue, sacct, and
#   python src/train.py -m ... launcher=slurm_local
#   cluster/slurm-local/down.sh                (make slurm-down) stops it and removes the state
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
source "$HERE/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root (the daemons and the test jobs run as root)"

PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
BINARIES="slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mungekey mariadbd mariadb-install-db mariadb-admin"

install_packages() {
    local missing="" b
    for b in $BINARIES; do command -v "$b" >/dev/null || missing="$missing $b"; done
    [ -n "$missing" ] || return 0
    say "installing $PACKAGES (missing:$missing)"
    if ! apt-cache policy slurmctld 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq
    fi
    # Keep the packages' init scripts from starting system-wide daemons: ours run with
    # their own config, sockets and ports.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$guard"
        chmod 755 "$guard"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null \
        || { [ -z "$guard" ] || rm -f "$guard"; die "apt-get install $PACKAGES failed"; }
    [ -z "$guard" ] || rm -f "$guard"
}

render() {  # template output
    sed -e "s|@STATE@|$STATE|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@MEM_PER_CPU@|$MEM_PER_CPU|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" \
        -e "s|@FIRST_JOB_ID@|$FIRST_JOB_ID|g" "$1" >"$2"
}

write_configs() {
    NODE=$(hostname -s)
    CPUS=$(nproc)
    local total_mb
    total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # Leave the daemons and the test runner some memory.
    MEM_MB=$((total_mb > 4096 ? total_mb - 2048 : total_mb / 2))
    MEM_PER_CPU=$((MEM_MB / CPUS < 1024 ? MEM_MB / CPUS : 1024))
    FIRST_JOB_ID=$(($(date +%s) / 2 % 60000000 + 1000))
    mkdir -p "$STATE"/{etc,log,run,munge,mysql,slurmctld,slurmd}
    chmod 755 "$STATE" "$STATE"/{etc,log,run,slurmctld,slurmd}
    chmod 700 "$STATE/munge"
    render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
    render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf"
    chmod 600 "$STATE/etc/slurmdbd.conf"  # slurmdbd refuses a readable one: it holds a password
    render "$HERE/my.cnf.in" "$STATE/etc/my.cnf"
    local socket="$STATE/munge/munge.socket.2"
    [ ${#socket} -lt 100 ] || die "$socket is too long for a Unix socket; set FLS_SLURM_DIR to a shorter path"
}

start_munge() {
    live_pid munged "$STATE/run/munged.pid" >/dev/null && return 0
    [ -s "$STATE/munge/munge.key" ] || mungekey -c -k "$STATE/munge/munge.key"
    chmod 600 "$STATE/munge/munge.key"
    # --force: munged refuses to run as root, or beside a world-readable repo, without it.
    munged --force --socket="$STATE/munge/munge.socket.2" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged test -S "$STATE/munge/munge.socket.2"
    say "munged up"
}

start_mariadb() {
    if ! live_pid mariadbd "$STATE/run/mysqld.pid" >/dev/null; then
        if [ ! -d "$STATE/mysql/mysql" ]; then
            mariadb-install-db --defaults-file="$STATE/etc/my.cnf" --auth-root-authentication-method=socket \
                --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
                || die "mariadb-install-db failed: see $STATE/log/mariadb-install.log"
        fi
        setsid mariadbd --defaults-file="$STATE/etc/my.cnf" </dev/null >/dev/null 2>&1 &
        wait_for 60 MariaDB mariadb-admin --defaults-file="$STATE/etc/my.cnf" ping
        say "MariaDB up on 127.0.0.1:$DB_PORT"
    fi
    mariadb --defaults-file="$STATE/etc/my.cnf" -u root <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurmdbd() {
    if ! live_pid slurmdbd "$STATE/run/slurmdbd.pid" >/dev/null; then
        slurmdbd
        wait_for 60 slurmdbd sacctmgr -n list cluster
        say "slurmdbd up on 127.0.0.1:$DBD_PORT"
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx fls-local; then
        sacctmgr -i add cluster fls-local >/dev/null
    fi
}

start_slurmctld() {
    live_pid slurmctld "$STATE/run/slurmctld.pid" >/dev/null && return 0
    slurmctld
    wait_for 60 slurmctld sh -c 'scontrol ping | grep -q "is UP"'
    say "slurmctld up on 127.0.0.1:$CTLD_PORT"
}

node_idle() {
    case "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" in
        idle* | mixed* | allocated*) return 0 ;;
        down* | drain* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null; return 1 ;;
        *) return 1 ;;
    esac
}

start_slurmd() {
    if ! live_pid slurmd "$STATE/run/slurmd.pid" >/dev/null; then
        slurmd
        say "slurmd started"
    fi
    wait_for 60 "node $NODE" node_idle
}

install_packages
if [ -s "$SLURM_CONF" ]; then
    NODE=$(awk -F'[= ]' '/^NodeName=/ {print $2}' "$SLURM_CONF")
else
    write_configs
fi
start_munge
start_mariadb
start_slurmdbd
start_slurmctld
start_slurmd
say "up: node $NODE ($(sinfo -h -n "$NODE" -o '%c CPUs, %m MB')), partition local; state in $STATE"
say "use it with: source cluster/slurm-local/env.sh"
