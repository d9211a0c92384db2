#!/usr/bin/env bash
# Start (or reuse) a single-node SLURM cluster on this machine for tests/test_slurm.py.
#
#   tests/slurm/start_slurm.sh            # prints `export SLURM_CONF=...` on success
#   eval "$(tests/slurm/start_slurm.sh)"  # then sinfo / sbatch / snakemake --executor slurm use it
#   tests/slurm/stop_slurm.sh
#
# Needs the Debian packages slurmctld slurmd slurm-client munge, and root (munged runs as the munge
# user, slurmd as root). Everything it writes (slurm.conf, gres.conf, state, spool, logs, pid files)
# is in $SLURM_TEST_DIR (default /tmp/sensitivity-loc-slurm), plus one symlink /etc/slurm/slurm.conf
# to its slurm.conf: Snakemake's slurm-jobstep plugin removes every SLURM_* variable (SLURM_CONF
# included) before its nested `srun`, which then only finds the configuration at the compiled-in path.
# An existing /etc/slurm/slurm.conf that is not that symlink (a real cluster) is never replaced: the
# script stops with exit code 3 instead. Running it again while the cluster is up reuses it.
#
# Exit codes: 0 up (idle node), 2 SLURM or munge binaries missing, 3 could not start.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${SLURM_TEST_DIR:-/tmp/sensitivity-loc-slurm}"
CTLD_PORT="${SLURM_TEST_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_TEST_SLURMD_PORT:-6818}"
WAIT_S="${SLURM_TEST_WAIT_S:-60}"
CONF="$STATE/slurm.conf"
SYS_CONF=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"
export PATH="$PATH:/usr/sbin:/sbin"

say() { echo "start_slurm: $*" >&2; }
die() { local code=$1; shift; say "$*"; exit "$code"; }
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true; }
show_logs() {
    for log in "$STATE"/log/*.log; do
        [[ -f "$log" ]] && { say "--- last lines of $log"; tail -n 15 "$log" >&2; }
    done
    return 0
}

missing=()
for bin in munged munge unmunge slurmctld slurmd sinfo sbatch squeue srun scontrol; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if ((${#missing[@]})); then
    die 2 "missing ${missing[*]}; install the Debian packages: apt-get install slurmctld slurmd slurm-client munge"
fi

if [[ -e "$SYS_CONF" || -L "$SYS_CONF" ]] && [[ "$(readlink "$SYS_CONF" || true)" != "$CONF" ]]; then
    die 3 "$SYS_CONF exists and is not this test cluster's (a real SLURM configuration?); not touching it"
fi
if [[ ! -L "$SYS_CONF" ]]; then
    [[ $(id -u) -eq 0 ]] || die 3 "must run as root to link $SYS_CONF to $CONF"
    mkdir -p "$(dirname "$SYS_CONF")"
    ln -sfn "$CONF" "$SYS_CONF"
fi

# Reuse a cluster this script started before (both daemons alive, node answering).
if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"; then
    case "$(node_state)" in
        idle*|mix*|alloc*) say "reusing the running cluster in $STATE"; echo "export SLURM_CONF=$CONF"; exit 0 ;;
    esac
fi

[[ $(id -u) -eq 0 ]] || die 3 "must run as root to start munged and slurmd (or start the cluster once as root)"

HOST="$(hostname -s)"
CPUS="$(nproc)"
# RealMemory ≈ 85% of what slurmd sees (and of the cgroup limit, when that is lower).
MEM_MB="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
[[ -n "$MEM_MB" ]] || die 3 "could not read RealMemory from 'slurmd -C'"
CG_MAX="$(cat /sys/fs/cgroup/memory.max 2>/dev/null || echo max)"
if [[ "$CG_MAX" =~ ^[0-9]+$ ]] && ((CG_MAX / 1048576 < MEM_MB)); then MEM_MB=$((CG_MAX / 1048576)); fi
MEM_MB=$((MEM_MB * 85 / 100))
SLURM_USER=root
id slurm >/dev/null 2>&1 && SLURM_USER=slurm

# Stop leftovers of an earlier, half-running start before writing a new configuration.
"$HERE/stop_slurm.sh" --keep-munge >/dev/null 2>&1 || true

mkdir -p "$STATE"/{ctld,slurmd,run,log}
chown -R "$SLURM_USER" "$STATE/ctld" "$STATE/log" "$STATE/run"
chmod 755 "$STATE"
fill() {
    sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@STATE@|$STATE|g" \
        -e "s|@SLURM_USER@|$SLURM_USER|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$1"
}
fill "$HERE/slurm.conf.in" >"$CONF"
fill "$HERE/gres.conf.in" >"$STATE/gres.conf"
chmod 644 "$CONF" "$STATE/gres.conf"

# munge: one key per machine, shared by every daemon and client.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    id munge >/dev/null 2>&1 || die 3 "the munge user does not exist (is the munge package installed?)"
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then mungekey --create --force >/dev/null 2>&1
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    runuser -u munge -- munged --force >>"$STATE/log/munged.out" 2>&1 || { cat "$STATE/log/munged.out" >&2; die 3 "munged did not start"; }
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die 3 "munged started but credentials do not round-trip"
fi

# -c: forget jobs of an earlier cluster in this state directory.
slurmctld -c -f "$CONF" >>"$STATE/log/slurmctld.out" 2>&1 || { show_logs; die 3 "slurmctld did not start"; }
slurmd -f "$CONF" >>"$STATE/log/slurmd.out" 2>&1 || { show_logs; die 3 "slurmd did not start"; }

state=""
for ((i = 0; i < WAIT_S * 2; i++)); do
    state="$(node_state)"
    case "$state" in
        idle*) say "node $HOST up (${CPUS} CPUs, ${MEM_MB} MB, 1 stand-in GPU); state in $STATE"
               echo "export SLURM_CONF=$CONF"; exit 0 ;;
        drain*|down*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
show_logs
die 3 "node $HOST not idle after ${WAIT_S}s (state: '${state:-no answer from slurmctld}')"
