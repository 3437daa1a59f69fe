#!/usr/bin/env bash
# A throw-away Slurm cluster (one slurmctld, four slurmd nodes, a private munged) for development
# and tests, all on this host.
#
#   scripts/dev-slurm.sh start    start it (idempotent), wait until a job runs, print SLURM_CONF
#   scripts/dev-slurm.sh stop     stop slurmd x4, slurmctld and munged by their PID files
#   scripts/dev-slurm.sh status   print whether it runs; exit 0 if it does, 3 if not
#   scripts/dev-slurm.sh env      print the client environment (SLURM_CONF=...); exit 3 if down
#   scripts/dev-slurm.sh url      print the slurm.conf path (what scripts/services.sh records)
#
# State lives in ${CPNET_DEV_DIR:-<repo>/.dev}/slurm: slurm.conf, env (SLURM_CONF=... for clients),
# state/, spool/<node>/, log/, run/ (PID files), jobcomp.txt (read it with `sacct -c`), jwt.key.
# When slurmrestd and the JWT plugin are installed (packages slurmrestd slurm-wlm-jwt-plugin), a
# slurmrestd (openapi/v0.0.38, JWT auth) runs too, as the `slurm` user (it refuses root), and its
# URL is in slurmrestd.url next to slurm.conf; get a token with `scontrol token username=root`.
# Nodes n1,n2 (CPUs=1, 1 GiB) form partition `cpu` (the default); n3,n4 (CPUs=2, 2 GiB) form `big`.
# All daemons listen on 127.0.0.1, on ports chosen free at start. Slurm runs as root (SlurmUser=root,
# which needs `start` to run as root); munged runs as the `munge` user with its own key and socket
# (AuthInfo=socket=...), so a system munged, if any, is neither used nor disturbed.
#
# Missing packages (slurmctld slurmd slurm-client munge) are installed by `start` when run as root
# (unless CPNET_SLURM_INSTALL=0); otherwise it prints the install command and exits 3.
# Other knobs: CPNET_SLURM_TIMEOUT (seconds to wait for start-up, default 60).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${CPNET_DEV_DIR:-$REPO/.dev}
STATE_DIR=$DEV_DIR/slurm
CONF=$STATE_DIR/slurm.conf
ENV_FILE=$STATE_DIR/env
RUN=$STATE_DIR/run
TIMEOUT=${CPNET_SLURM_TIMEOUT:-60}
NODES=(n1 n2 n3 n4)
PACKAGES=(slurmctld slurmd slurm-client munge)
REST_PACKAGES=(slurmrestd slurm-wlm-jwt-plugin) # optional: the slurmrestd transport
JWT_PLUGIN=/usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so
REST_URL_FILE=$STATE_DIR/slurmrestd.url

say() { echo "dev-slurm: $*" >&2; }
die() {
    say "$*"
    exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }

if is_root; then
    INSTALL_CMD="apt-get install -y --no-install-recommends ${PACKAGES[*]}"
else
    INSTALL_CMD="sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
fi

have_binaries() {
    [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/sbin/munged ]] &&
        command -v sbatch >/dev/null 2>&1 && command -v sinfo >/dev/null 2>&1
}

ensure_binaries() {
    have_binaries && return 0
    if is_root && [[ ${CPNET_SLURM_INSTALL:-1} != 0 ]]; then
        say "Slurm/munge binaries not found; installing ${PACKAGES[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
        have_binaries || die "installed ${PACKAGES[*]} but still miss slurmctld/slurmd/munged/sbatch"
    else
        say "Slurm is not installed. Install it with:"
        echo "$INSTALL_CMD" >&2
        exit 3
    fi
}

have_rest() { [[ -x /usr/sbin/slurmrestd && -f $JWT_PLUGIN ]] && id -u slurm >/dev/null 2>&1; }

ensure_rest() { # best effort: the CLI cluster works without it
    have_rest && return 0
    if is_root && [[ ${CPNET_SLURM_INSTALL:-1} != 0 ]]; then
        say "installing ${REST_PACKAGES[*]} (for the slurmrestd transport)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${REST_PACKAGES[@]}" >&2 || say "could not install ${REST_PACKAGES[*]}"
    fi
    have_rest || say "no slurmrestd: install ${REST_PACKAGES[*]} for the REST transport"
}

# slurmrestd has no daemon mode: start it in the background as `slurm` (setpriv execs, so $! is
# slurmrestd itself), record its PID, and wait until it answers.
start_rest() {
    have_rest || return 0
    local port
    port=$(free_ports 1)
    (cd / && exec setpriv --reuid=slurm --regid=slurm --init-groups \
        env SLURM_CONF="$CONF" SLURM_JWT=daemon /usr/sbin/slurmrestd -f "$CONF" \
        -a rest_auth/jwt -s openapi/v0.0.38 "127.0.0.1:$port" \
        >>"$STATE_DIR/log/slurmrestd.log" 2>&1 9>&- </dev/null) &
    echo $! >"$RUN/slurmrestd.pid"
    local deadline=$((SECONDS + 20)) token
    token=$(scontrol token username=root lifespan=60 | sed -n 's/^SLURM_JWT=//p')
    until python3 - "http://127.0.0.1:$port/slurm/v0.0.38/ping" "$token" 2>/dev/null <<'EOF'
import sys, urllib.request
req = urllib.request.Request(
    sys.argv[1], headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": sys.argv[2]}
)
urllib.request.urlopen(req, timeout=2).read()
EOF
    do
        if ((SECONDS >= deadline)) || ! pid_alive "$RUN/slurmrestd.pid" slurmrestd; then
            say "slurmrestd did not answer on port $port"
            tail -n 10 "$STATE_DIR/log/slurmrestd.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    echo "http://127.0.0.1:$port" >"$REST_URL_FILE"
}

# munged (running as `munge`) checks the ownership and permissions of its directories and must be
# able to reach them; if the state dir is somewhere that user cannot enter (e.g. a 0700 mktemp dir)
# or the socket path would be too long, use a fixed directory under /tmp derived from the state
# dir's path, so that every sub-command finds the same one.
munge_dir() {
    local d=$STATE_DIR
    while [[ ! -d $d ]]; do d=$(dirname "$d"); done
    if ((${#STATE_DIR} > 80)) ||
        { id -u munge >/dev/null 2>&1 && ! runuser -u munge -- test -x "$d" 2>/dev/null; }; then
        echo "${TMPDIR:-/tmp}/cpnet-munge-$(printf %s "$STATE_DIR" | cksum | cut -d' ' -f1)"
    else
        echo "$STATE_DIR/munge"
    fi
}
set_munge_paths() {
    MUNGE_DIR=$(munge_dir)
    MUNGE_SOCKET=$MUNGE_DIR/munge.socket
    MUNGE_PID=$MUNGE_DIR/munged.pid
}
set_munge_paths

# pid_alive PIDFILE NAME: the PID in PIDFILE is a live process whose executable is NAME.
pid_alive() {
    local f=$1 name=$2 pid
    [[ -f $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    # (Debian's alternatives make /usr/sbin/slurmd a link to slurmd-wlm.)
    local exe
    exe=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")
    [[ $exe == "$name" || $exe == "$name-wlm" ]]
}

# stop_pids PIDFILE:NAME...: TERM each live one at once (one by one, slurmd and slurmctld take
# seconds each to shut down), wait up to 10 s for all, then KILL the rest; remove the PID files.
stop_pids() {
    local item f name pid pids=() alive=() i
    for item in "$@"; do
        f=${item%%:*} name=${item#*:}
        if pid_alive "$f" "$name"; then
            pid=$(tr -dc 0-9 <"$f")
            say "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 100; i++)); do
        alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        ((${#alive[@]} == 0)) && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid ignored SIGTERM for 10s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for item in "$@"; do rm -f "${item%%:*}"; done
}

free_ports() { # free_ports N: N distinct free TCP ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

all_running() {
    pid_alive "$MUNGE_PID" munged && pid_alive "$RUN/slurmctld.pid" slurmctld || return 1
    local n
    for n in "${NODES[@]}"; do pid_alive "$RUN/slurmd-$n.pid" slurmd || return 1; done
}

any_running() {
    pid_alive "$MUNGE_PID" munged && return 0
    pid_alive "$RUN/slurmctld.pid" slurmctld && return 0
    pid_alive "$RUN/slurmrestd.pid" slurmrestd && return 0
    local n
    for n in "${NODES[@]}"; do pid_alive "$RUN/slurmd-$n.pid" slurmd && return 0; done
    return 1
}

start_munge() {
    mkdir -p "$MUNGE_DIR"
    chown munge: "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR" # munged: the socket dir must be executable by all
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    fi
    chown munge: "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    (cd / && runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" \
        --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed") 9>&- ||
        {
            tail -n 20 "$MUNGE_DIR/munged.log" >&2 || true
            die "munged failed to start"
        }
    local deadline=$((SECONDS + 10))
    until [[ -S $MUNGE_SOCKET ]] && pid_alive "$MUNGE_PID" munged; do
        ((SECONDS < deadline)) || die "munged did not create $MUNGE_SOCKET"
        sleep 0.1
    done
}

write_conf() {
    local host ports ctl_port
    host=$(hostname -s)
    read -r ctl_port p1 p2 p3 p4 <<<"$(free_ports 5)"
    cat >"$CONF.tmp" <<EOF
# Generated by scripts/dev-slurm.sh: a throw-away cluster. Do not edit; it is rewritten at start.
ClusterName=cpnetdev
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
$(have_rest && echo "AuthAltTypes=auth/jwt")
$(have_rest && echo "AuthAltParameters=jwt_key=$STATE_DIR/jwt.key")
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=10
SlurmctldTimeout=10
MinJobAge=600
KillWait=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/jobcomp.txt
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p1 CPUs=1 RealMemory=1024 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p2 CPUs=1 RealMemory=1024 State=UNKNOWN
NodeName=n3 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p3 CPUs=2 RealMemory=2048 State=UNKNOWN
NodeName=n4 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p4 CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=cpu Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
PartitionName=big Nodes=n3,n4 Default=NO MaxTime=INFINITE State=UP
EOF
    mv -f "$CONF.tmp" "$CONF"
}

log_tails() {
    local f
    for f in "$STATE_DIR"/log/*.log "$MUNGE_DIR/munged.log"; do
        [[ -f $f ]] || continue
        say "--- tail of $f"
        tail -n 10 "$f" >&2
    done
}

# Wait until all four nodes are idle and a trivial batch job completes.
wait_ready() {
    local deadline=$((SECONDS + TIMEOUT)) states
    while :; do
        states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
        [[ $(grep -c ' idle$' <<<"$states") -eq 4 ]] && break
        if ((SECONDS >= deadline)); then
            say "nodes not idle within ${TIMEOUT}s: $(tr '\n' ' ' <<<"$states")"
            log_tails
            return 1
        fi
        sleep 0.2
    done
    local left=$((deadline - SECONDS)) jobid state
    ((left < 10)) && left=10
    jobid=$(sbatch --parsable -J cpnet-dev-ready -o /dev/null -D "$STATE_DIR" --wrap true) ||
        {
            log_tails
            return 1
        }
    while :; do
        state=$(scontrol show job "$jobid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case $state in
        COMPLETED) return 0 ;;
        FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
            say "probe job $jobid ended $state"
            log_tails
            return 1
            ;;
        esac
        if ((SECONDS >= deadline + left)); then
            say "probe job $jobid not done within the deadline (state ${state:-?})"
            log_tails
            return 1
        fi
        sleep 0.1
    done
}

cmd_start() {
    ensure_binaries
    set_munge_paths # the munge user may only exist now
    is_root || {
        say "the dev cluster runs Slurm as root (SlurmUser=root): run 'sudo $0 start'"
        exit 3
    }
    local t0=$EPOCHREALTIME
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"
    export SLURM_CONF=$CONF

    if all_running && [[ -f $ENV_FILE ]]; then
        wait_ready || die "running, but not answering"
        say "already running (slurmctld pid $(cat "$RUN/slurmctld.pid"))"
        cat "$ENV_FILE"
        return 0
    fi
    # Partly up, or leftovers from a crash: stop what is left and start afresh.
    any_running && stop_all
    rm -f "$ENV_FILE"
    rm -rf "$STATE_DIR/state" "$STATE_DIR/spool" "$RUN"
    mkdir -p "$STATE_DIR/state" "$STATE_DIR/log" "$RUN"
    local n
    for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/spool/$n"; done

    start_munge
    ensure_rest
    rm -f "$REST_URL_FILE"
    if have_rest && [[ ! -s $STATE_DIR/jwt.key ]]; then
        (umask 077 && head -c 32 /dev/urandom >"$STATE_DIR/jwt.key")
    fi
    write_conf
    say "starting slurmctld (port $(sed -n 's/^SlurmctldPort=//p' "$CONF")) and slurmd ${NODES[*]}"
    /usr/sbin/slurmctld -i -f "$CONF" 9>&- || {
        log_tails
        die "slurmctld failed to start"
    }
    for n in "${NODES[@]}"; do
        /usr/sbin/slurmd -f "$CONF" -N "$n" 9>&- || {
            log_tails
            die "slurmd -N $n failed to start"
        }
    done
    if ! wait_ready; then
        stop_all
        die "cluster did not become ready within ${TIMEOUT}s"
    fi
    start_rest || say "continuing without slurmrestd"
    echo "SLURM_CONF=$CONF" >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
    say "ready in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s" \
        "(slurmctld pid $(cat "$RUN/slurmctld.pid"))"
    cat "$ENV_FILE"
}

stop_all() {
    local n
    local daemons=("$RUN/slurmrestd.pid:slurmrestd" "$RUN/slurmctld.pid:slurmctld")
    for n in "${NODES[@]}"; do daemons+=("$RUN/slurmd-$n.pid:slurmd"); done
    stop_pids "${daemons[@]}"
    stop_pids "$MUNGE_PID:munged" # last: the others talk to it while shutting down
}

cmd_stop() {
    rm -f "$ENV_FILE" "$REST_URL_FILE"
    [[ -d $STATE_DIR ]] || {
        say "not running"
        return 0
    }
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"
    if any_running; then
        stop_all
    else
        say "not running"
    fi
}

cmd_status() {
    if all_running; then
        echo "running (slurmctld pid $(cat "$RUN/slurmctld.pid"), 4 slurmd, munged): SLURM_CONF=$CONF"
    elif any_running; then
        echo "partly running (run '$0 stop' or '$0 start')"
        return 3
    elif have_binaries; then
        echo "not running"
        return 3
    else
        echo "not running (Slurm not installed: $INSTALL_CMD)"
        return 3
    fi
}

cmd_env() {
    if all_running && [[ -f $ENV_FILE ]]; then
        cat "$ENV_FILE"
    else
        say "not running (start it with: scripts/dev-slurm.sh start)"
        return 3
    fi
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
url) cmd_env >/dev/null && echo "$CONF" ;;
*)
    echo "usage: $0 {start|stop|status|env|url}" >&2
    exit 2
    ;;
esac
