#!/usr/bin/env bash
# A throw-away local Ray cluster (a head with the dashboard / Jobs API, and one worker raylet with
# a custom resource) for development and tests, all on this host and on loopback.
#
#   scripts/dev-ray.sh start    start it (idempotent), wait until a job runs, print its address
#   scripts/dev-ray.sh stop     stop the worker and the head by their PID files
#   scripts/dev-ray.sh status   print whether it runs; exit 0 if it does, 3 if not
#   scripts/dev-ray.sh url      print the Jobs API (dashboard) address: http://127.0.0.1:PORT
#   scripts/dev-ray.sh add NAME RESOURCES   start one more worker raylet (CPU=1) with the custom
#                               resources RESOURCES (JSON, e.g. '{"turbo": 1}'), wait until alive
#   scripts/dev-ray.sh remove NAME          stop that extra raylet (`stop` stops extras too)
#
# Nodes: the head (CPU=2, no custom resources) and a worker raylet (CPU=1, custom resource
# `fast`=2); the cpnet Ray backend makes them two pools, `cpu` and `fast`.
# State lives in ${CPNET_DEV_DIR:-<repo>/.dev}/ray: url, gcs (the GCS address workers join),
# run/ (PID files: each node is one `ray start --block` leading its own session), log/, and Ray's
# temp dir (a short directory under /tmp when the state dir's path is too long for Ray's unix
# sockets). Every port is chosen free at start. The head binds 127.0.0.1 only:
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray from rewriting 127.0.0.1 to a NIC address. The
# worker (which Ray refuses to start under that setting) joins the head's GCS through a host name
# that resolves to 127.0.0.1 (this host's name, as /etc/hosts usually has it), because Ray
# rewrites a literal 127.0.0.1/localhost GCS address to the NIC address, where the GCS does not
# listen; the worker itself runs at the address Ray picks for this host, as a second machine
# would (the head reaches its agent there for logs).
# Stopping never uses `ray stop` (which stops every Ray on the machine): each node's `ray start`
# gets SIGTERM (it drains and stops its processes), then whatever is left of its session SIGKILL.
#
# Ray comes from the project venv (`make venv`: the dev extra has ray[default]); $CPNET_RAY_BIN
# names another `ray` executable. Knobs: CPNET_RAY_TIMEOUT (seconds to wait, default 90).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${CPNET_DEV_DIR:-$REPO/.dev}
STATE_DIR=$DEV_DIR/ray
RUN=$STATE_DIR/run
URL_FILE=$STATE_DIR/url
TIMEOUT=${CPNET_RAY_TIMEOUT:-90}
NODES=(head worker)

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0

say() { echo "dev-ray: $*" >&2; }
die() {
    say "$*"
    exit 1
}

ray_bin() {
    if [[ -n ${CPNET_RAY_BIN:-} ]]; then
        echo "$CPNET_RAY_BIN"
    elif [[ -x $REPO/.venv/bin/ray ]]; then
        echo "$REPO/.venv/bin/ray"
    else
        command -v ray || true
    fi
}
RAY=$(ray_bin)
PYTHON=$(dirname "${RAY:-/nonexistent}")/python

# Ray's unix sockets live under <temp dir>/session_<date>_<pid>/sockets/: keep the temp dir short.
temp_dir() {
    if ((${#STATE_DIR} > 40)); then
        echo "${TMPDIR:-/tmp}/cpnet-ray-$(printf %s "$STATE_DIR" | cksum | cut -d' ' -f1)"
    else
        echo "$STATE_DIR/t"
    fi
}
TEMP_DIR=$(temp_dir)

# A name for 127.0.0.1 that Ray does not rewrite: a worker given --address=127.0.0.1:PORT or
# localhost:PORT replaces it with the machine's NIC address (where the GCS does not listen).
loopback_name() {
    local n
    for n in "$(hostname)" "$(hostname -f 2>/dev/null || true)" localhost.localdomain; do
        [[ -n $n && $n != localhost ]] || continue
        if getent ahostsv4 "$n" 2>/dev/null | awk '{ print $1 }' | grep -qx 127.0.0.1; then
            echo "$n"
            return 0
        fi
    done
    return 1
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

# pid_alive NODE: the PID in run/NODE.pid is a live `ray start` process.
pid_alive() {
    local f=$RUN/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- ' start ' || return 1
}

all_running() {
    local n
    for n in "${NODES[@]}"; do pid_alive "$n" || return 1; done
}

any_running() {
    local n
    for n in "${NODES[@]}" $(extra_nodes); do
        pid_alive "$n" && return 0
        [[ -f $RUN/$n.pid ]] && [[ -n $(session_pids "$(tr -dc 0-9 <"$RUN/$n.pid")") ]] && return 0
    done
    return 1
}

session_pids() { # the processes of session $1 (a node's `ray start` leads one)
    [[ -n $1 ]] || return 0
    ps -e -o pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'
}

# stop_node NODE: SIGTERM its `ray start` (it drains and stops its processes), wait up to 30 s
# for the whole session to go, then SIGKILL what is left of it.
stop_node() {
    local n=$1 f=$RUN/$1.pid pid i left
    [[ -f $f ]] || return 0
    pid=$(tr -dc 0-9 <"$f")
    if [[ -n $pid ]] && pid_alive "$n"; then
        say "stopping $n (ray start pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < 300; i++)); do
        left=$(session_pids "$pid")
        [[ -z $left ]] && break
        sleep 0.1
    done
    left=$(session_pids "$pid")
    if [[ -n $left ]]; then
        say "$n: SIGKILL to what is left of session $pid: $(tr '\n' ' ' <<<"$left")"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
    rm -f "$f"
}

extra_nodes() { # the names of raylets started by `add`
    local f n
    for f in "$RUN"/*.pid; do
        [[ -f $f ]] || continue
        n=$(basename "$f" .pid)
        [[ " ${NODES[*]} " == *" $n "* ]] || echo "$n"
    done
}

stop_all() {
    local i n
    for n in $(extra_nodes); do stop_node "$n"; done
    for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do stop_node "${NODES[$i]}"; done
}

log_tails() {
    local f
    for f in "$STATE_DIR"/log/*.log; do
        [[ -f $f ]] || continue
        say "--- tail of $f"
        tail -n 15 "$f" >&2
    done
}

# start_node NODE ARGS...: `ray start --block ARGS` in a session of its own, PID in run/NODE.pid.
start_node() {
    local n=$1
    shift
    setsid "$RAY" start --block --disable-usage-stats \
        --temp-dir="$TEMP_DIR" "$@" </dev/null >"$STATE_DIR/log/$n.log" 2>&1 9>&- &
    echo $! >"$RUN/$n.pid"
}

# node_ports A B C D E F: the per-node port flags every raylet needs (ports from one free_ports
# call: ports from separate calls may coincide, as each call's sockets are closed when it ends).
node_ports() {
    echo "--node-manager-port=$1 --object-manager-port=$2 --dashboard-agent-listen-port=$3" \
        "--dashboard-agent-grpc-port=$4 --runtime-env-agent-port=$5 --metrics-export-port=$6"
}

alive_nodes() { # how many nodes the dashboard reports ALIVE
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/v0/nodes?limit=1000", timeout=5) as r:
    nodes = json.load(r)["data"]["result"]["result"]
print(sum(1 for n in nodes if n.get("state") == "ALIVE"))
EOF
}

# A trivial job through the Jobs API must succeed.
probe_job() {
    "$PYTHON" - "$1" "$TIMEOUT" <<'EOF'
import sys, time
from ray.job_submission import JobSubmissionClient, JobStatus
client = JobSubmissionClient(sys.argv[1])
sid = client.submit_job(entrypoint="true", metadata={"cpnet": "dev-ray probe"})
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    status = client.get_job_status(sid)
    if status.is_terminal():
        client.delete_job(sid)
        sys.exit(0 if status == JobStatus.SUCCEEDED else f"probe job {sid} ended {status}")
    time.sleep(0.2)
sys.exit(f"probe job {sid} not done within {sys.argv[2]} s")
EOF
}

wait_ready() {
    local url=$1 deadline=$((SECONDS + TIMEOUT)) n
    while :; do
        n=$(alive_nodes "$url")
        [[ $n -ge ${#NODES[@]} ]] && break
        if ((SECONDS >= deadline)); then
            say "${n:-0} of ${#NODES[@]} nodes alive after ${TIMEOUT}s"
            log_tails
            return 1
        fi
        for n in "${NODES[@]}"; do
            if [[ -f $RUN/$n.pid ]] && ! pid_alive "$n"; then
                say "$n exited during start-up"
                log_tails
                return 1
            fi
        done
        sleep 0.3
    done
    probe_job "$url" || {
        log_tails
        return 1
    }
}

cmd_start() {
    [[ -n $RAY && -x $RAY ]] || {
        say "no ray executable: run 'make venv' (the dev extra installs ray[default]) or set CPNET_RAY_BIN"
        exit 3
    }
    local t0=$EPOCHREALTIME
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "another start/stop holds $STATE_DIR/lock"
    if all_running && [[ -f $URL_FILE ]]; then
        wait_ready "$(cat "$URL_FILE")" || die "running, but not answering"
        say "already running (head pid $(cat "$RUN/head.pid"))"
        cat "$URL_FILE"
        return 0
    fi
    any_running && stop_all
    rm -f "$URL_FILE" "$STATE_DIR/gcs"
    rm -rf "$RUN" "$TEMP_DIR"
    mkdir -p "$RUN" "$STATE_DIR/log" "$TEMP_DIR"

    local gcs dash client url loop ports
    loop=$(loopback_name) || die "no host name other than 'localhost' resolves to 127.0.0.1" \
        "(checked: $(hostname) $(hostname -f 2>/dev/null || true) localhost.localdomain);" \
        "a worker raylet needs one to join the head on loopback"
    ports=$(free_ports 9)
    read -r gcs dash client _ <<<"$ports"
    url=http://127.0.0.1:$dash
    say "starting the head (GCS 127.0.0.1:$gcs, Jobs API $url)"
    # shellcheck disable=SC2046
    start_node head --node-ip-address=127.0.0.1 --head --port="$gcs" --num-cpus=2 --num-gpus=0 \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
        --ray-client-server-port="$client" --object-store-memory=100000000 \
        $(node_ports $(cut -d' ' -f4- <<<"$ports"))
    local deadline=$((SECONDS + TIMEOUT))
    until [[ $(alive_nodes "$url") -ge 1 ]]; do
        if ! pid_alive head || ((SECONDS >= deadline)); then
            log_tails
            stop_all
            die "the head did not come up"
        fi
        sleep 0.3
    done
    say "starting a worker raylet (CPU=1, fast=2)"
    # shellcheck disable=SC2046
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 start_node worker --address="$loop:$gcs" --num-cpus=1 --num-gpus=0 \
        --resources='{"fast": 2}' --object-store-memory=80000000 $(node_ports $(free_ports 6))
    if ! wait_ready "$url"; then
        stop_all
        die "cluster did not become ready within ${TIMEOUT}s"
    fi
    echo "127.0.0.1:$gcs" >"$STATE_DIR/gcs"
    echo "$url" >"$URL_FILE.tmp"
    mv -f "$URL_FILE.tmp" "$URL_FILE"
    say "ready in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s" \
        "(head pid $(cat "$RUN/head.pid"), worker pid $(cat "$RUN/worker.pid"))"
    cat "$URL_FILE"
}

cmd_stop() {
    rm -f "$URL_FILE"
    [[ -d $STATE_DIR ]] || {
        say "not running"
        return 0
    }
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "another start/stop holds $STATE_DIR/lock"
    if any_running; then
        stop_all
    else
        say "not running"
    fi
    rm -rf "$TEMP_DIR" "$STATE_DIR/gcs"
}

cmd_status() {
    if all_running && [[ -f $URL_FILE ]]; then
        echo "running (head pid $(cat "$RUN/head.pid"), worker pid $(cat "$RUN/worker.pid")): $(cat "$URL_FILE")"
    elif any_running; then
        echo "partly running (run '$0 stop' or '$0 start')"
        return 3
    else
        echo "not running"
        return 3
    fi
}

cmd_url() {
    if all_running && [[ -f $URL_FILE ]]; then
        cat "$URL_FILE"
    else
        say "not running (start it with: scripts/dev-ray.sh start)"
        return 3
    fi
}

cmd_add() {
    local n=${1:-} res=${2:-} url gcs loop before deadline
    [[ $n =~ ^[a-z][a-z0-9_-]*$ && $n != head && $n != worker ]] ||
        die "add: NAME must be a plain lower-case name other than head/worker"
    [[ -n $res ]] || die "add: give the custom resources as JSON, e.g. '{\"turbo\": 1}'"
    url=$(cmd_url) || exit 3
    gcs=$(cat "$STATE_DIR/gcs") || die "no $STATE_DIR/gcs"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "another start/stop holds $STATE_DIR/lock"
    pid_alive "$n" && die "node $n runs already"
    loop=$(loopback_name) || die "no host name other than 'localhost' resolves to 127.0.0.1"
    before=$(alive_nodes "$url")
    say "starting raylet $n (CPU=1, $res)"
    # shellcheck disable=SC2046
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 start_node "$n" --address="$loop:${gcs##*:}" \
        --num-cpus=1 --num-gpus=0 --resources="$res" --object-store-memory=80000000 \
        $(node_ports $(free_ports 6))
    deadline=$((SECONDS + TIMEOUT))
    until [[ $(alive_nodes "$url") -gt $before ]]; do
        if ! pid_alive "$n" || ((SECONDS >= deadline)); then
            tail -n 15 "$STATE_DIR/log/$n.log" >&2 || true
            stop_node "$n"
            die "raylet $n did not join"
        fi
        sleep 0.3
    done
    say "raylet $n joined (pid $(cat "$RUN/$n.pid"))"
}

cmd_remove() {
    local n=${1:-}
    [[ $n =~ ^[a-z][a-z0-9_-]*$ && $n != head && $n != worker ]] ||
        die "remove: NAME must be a node started by add"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "another start/stop holds $STATE_DIR/lock"
    stop_node "$n"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) cmd_url ;;
add) cmd_add "${2:-}" "${3:-}" ;;
remove) cmd_remove "${2:-}" ;;
*)
    echo "usage: $0 {start|stop|status|url|add NAME RESOURCES|remove NAME}" >&2
    exit 2
    ;;
esac
