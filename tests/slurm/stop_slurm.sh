#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start_slurm.sh (by its pid files), and munged unless
# --keep-munge is given or munged was not started by us. Safe to run when nothing is running.
set -uo pipefail
STATE="${SLURM_TEST_DIR:-/tmp/sensitivity-loc-slurm}"

stop() {  # stop <pidfile> <name>: SIGTERM, then wait up to 10 s, then SIGKILL
    local pidfile=$1 pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "stop_slurm: stopped $2 ($pid)" >&2
    fi
    rm -f "$pidfile"
}

stop "$STATE/run/slurmd.pid" slurmd
stop "$STATE/run/slurmctld.pid" slurmctld
# munged is shared by anything on the machine that uses munge; only stop it if this script's
# start_slurm.sh started it (its log is in our state directory).
if [[ "${1:-}" != "--keep-munge" && -f "$STATE/log/munged.out" ]]; then
    stop /run/munge/munged.pid munged
    rm -f "$STATE/log/munged.out"
fi
# The /etc/slurm/slurm.conf symlink start_slurm.sh made (only if it still points at our config).
if [[ "${1:-}" != "--keep-munge" && -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == "$STATE/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
fi
exit 0
