#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for development and tests.
#
#   scripts/dev-postgres.sh start    start it (idempotent) and print its URL
#   scripts/dev-postgres.sh stop     stop it (by its PID file, via pg_ctl)
#   scripts/dev-postgres.sh status   print whether it runs; exit 0 if it does, 3 if not
#   scripts/dev-postgres.sh url      print its URL; exit 3 if it is not running
#
# State lives in ${CPNET_DEV_DIR:-<repo>/.dev}/postgres: the cluster in data/, socket and server log
# in run/, the current URL in url. The server listens on 127.0.0.1 only, on a free port chosen at
# start (or $CPNET_PG_PORT), with trust auth; role `cpnet` (LOGIN CREATEDB) owns database `cpnet`:
#   postgresql+psycopg://cpnet@127.0.0.1:PORT/cpnet
#
# As root the cluster belongs to the `postgres` OS user (initdb refuses root), created if missing.
# Binaries: $CPNET_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else initdb on PATH. If they
# are missing, `start` installs them when run as root (unless CPNET_PG_INSTALL=0), otherwise it
# prints the install command and exits 3.
#
# Other knobs: CPNET_PG_TIMEOUT (seconds to wait for start-up, default 30).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${CPNET_DEV_DIR:-$REPO/.dev}
STATE_DIR=$DEV_DIR/postgres
URL_FILE=$STATE_DIR/url
TIMEOUT=${CPNET_PG_TIMEOUT:-30}
PG_OS_USER=postgres

say() { echo "dev-postgres: $*" >&2; }
die() {
    say "$*"
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

if is_root; then
    INSTALL_CMD="apt-get install -y postgresql"
else
    INSTALL_CMD="sudo apt-get install -y postgresql"
fi

find_bindir() {
    if [[ -n ${CPNET_PG_BINDIR:-} ]]; then
        [[ -x $CPNET_PG_BINDIR/initdb ]] && echo "$CPNET_PG_BINDIR"
        return 0
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $d && -x $d/initdb ]]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    fi
}

BINDIR=$(find_bindir)

ensure_binaries() {
    [[ -n $BINDIR ]] && return 0
    if is_root && [[ ${CPNET_PG_INSTALL:-1} != 0 ]]; then
        say "PostgreSQL binaries not found; installing the Debian package 'postgresql'"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends postgresql >&2
        BINDIR=$(find_bindir)
        [[ -n $BINDIR ]] || die "installed 'postgresql' but still found no initdb"
    else
        say "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed. Install them with:"
        echo "$INSTALL_CMD" >&2
        exit 3
    fi
}

# Where the cluster itself lives. As root it must be reachable by the postgres user; if the repo is
# somewhere that user cannot enter (e.g. under /root), fall back to a fixed directory under /tmp
# derived from the state dir's path, so every sub-command finds the same cluster. (The test is made
# on the nearest existing ancestor so that it gives the same answer before and after mkdir -p.)
cluster_dir() {
    local d=$STATE_DIR
    while [[ ! -d $d ]]; do d=$(dirname "$d"); done
    if is_root && id -u "$PG_OS_USER" >/dev/null 2>&1 &&
        ! runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null; then
        echo "${TMPDIR:-/tmp}/cpnet-postgres-$(printf %s "$STATE_DIR" | cksum | cut -d' ' -f1)"
    else
        echo "$STATE_DIR"
    fi
}

# Run a command as the cluster's owner (from /, which that user can always enter).
as_owner() {
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

ensure_os_user() {
    is_root || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    say "creating system user '$PG_OS_USER'"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$PG_OS_USER"
}

pg_ctl_() { as_owner "$BINDIR/pg_ctl" -D "$DATA" "$@"; }

running() {
    [[ -n $BINDIR && -f $DATA/postmaster.pid ]] && pg_ctl_ status >/dev/null 2>&1
}

# Port the running server listens on (4th line of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid"; }
running_pid() { sed -n 1p "$DATA/postmaster.pid"; }

url_for() { echo "postgresql+psycopg://cpnet@127.0.0.1:$1/cpnet"; }

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 30000))
            # A refused connection means nobody listens there.
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
                echo "$p"
                return
            }
        done
    fi
}

psql_() {
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT))
    until "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; do
        if ((SECONDS >= deadline)); then
            say "server did not accept connections on 127.0.0.1:$PORT within ${TIMEOUT}s; log tail:"
            tail -n 20 "$RUN/postgres.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

init_cluster() {
    # A half-made or old-major cluster is thrown away: nothing in it is worth keeping.
    local major
    major=$("$BINDIR/pg_config" --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/' || true)
    if [[ -d $DATA && (! -f $DATA/PG_VERSION || (-n $major && $(cat "$DATA/PG_VERSION") != "$major")) ]]; then
        say "removing unusable cluster in $DATA"
        rm -rf "$DATA"
    fi
    [[ -d $DATA ]] && return 0
    say "initdb $DATA"
    mkdir -m 0700 "$DATA"
    is_root && chown "$PG_OS_USER:" "$DATA"
    as_owner "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        >"$RUN/initdb.log" 2>&1 || {
        cat "$RUN/initdb.log" >&2
        rm -rf "$DATA"
        die "initdb failed"
    }
}

start_server() {
    # The socket directory goes in run/ unless that path is too long for a unix socket, in which
    # case unix sockets are off (everything here connects over TCP anyway).
    local sockdir=$RUN
    ((${#sockdir} > 90)) && sockdir=""
    local opts="-p $PORT -k '$sockdir' -c listen_addresses=127.0.0.1 -c fsync=off"
    opts+=" -c max_connections=200"
    [[ -f $RUN/postgres.log ]] && mv -f "$RUN/postgres.log" "$RUN/postgres.log.prev"
    # 9>&- : the server must not inherit the lock file descriptor (it would hold the lock forever).
    pg_ctl_ start -w -t "$TIMEOUT" -l "$RUN/postgres.log" -o "$opts" >"$RUN/pg_ctl.out" 2>&1 9>&-
}

cmd_start() {
    ensure_binaries
    ensure_os_user
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"

    if running; then
        PORT=$(running_port)
        wait_ready
        url_for "$PORT" >"$URL_FILE"
        say "already running (pid $(running_pid)) on 127.0.0.1:$PORT"
        cat "$URL_FILE"
        return 0
    fi
    rm -f "$URL_FILE"

    mkdir -p "$CLUSTER" "$RUN"
    is_root && chown "$PG_OS_USER:" "$RUN"
    init_cluster

    local attempt
    for attempt in 1 2 3 4 5; do
        PORT=${CPNET_PG_PORT:-$(free_port)}
        say "starting on 127.0.0.1:$PORT (cluster $DATA)"
        start_server && break
        if [[ -z ${CPNET_PG_PORT:-} && $attempt -lt 5 ]] &&
            grep -qi "could not bind\|address already in use" "$RUN/postgres.log" 2>/dev/null; then
            say "port $PORT was taken meanwhile; trying another"
            continue
        fi
        say "pg_ctl start failed:"
        cat "$RUN/pg_ctl.out" >&2 || true
        say "server log tail ($RUN/postgres.log):"
        tail -n 20 "$RUN/postgres.log" >&2 || true
        exit 1
    done
    wait_ready

    # Role and database, each in its own psql call (CREATE DATABASE cannot run in a transaction).
    if [[ -z $(psql_ -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'cpnet'") ]]; then
        psql_ -c "CREATE ROLE cpnet LOGIN CREATEDB"
    fi
    if [[ -z $(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = 'cpnet'") ]]; then
        psql_ -c "CREATE DATABASE cpnet OWNER cpnet"
    fi

    url_for "$PORT" >"$URL_FILE.tmp"
    mv "$URL_FILE.tmp" "$URL_FILE"
    say "ready (pid $(running_pid))"
    cat "$URL_FILE"
}

cmd_stop() {
    if [[ ! -f $DATA/postmaster.pid ]]; then
        say "not running"
        rm -f "$URL_FILE"
        return 0
    fi
    [[ -n $BINDIR ]] || die "$DATA/postmaster.pid exists but pg_ctl is not installed"
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w "$((TIMEOUT + 30))" 9 || die "another start/stop holds $STATE_DIR/lock"
    if running; then
        say "stopping pid $(running_pid)"
        pg_ctl_ stop -m fast -w -t "$TIMEOUT" >/dev/null ||
            pg_ctl_ stop -m immediate -w -t "$TIMEOUT" >/dev/null
    else
        say "not running"
    fi
    rm -f "$URL_FILE"
}

cmd_status() {
    if running; then
        echo "running (pid $(running_pid)) on 127.0.0.1:$(running_port): $(url_for "$(running_port)")"
    else
        if [[ -n $BINDIR ]]; then
            echo "not running"
        else
            echo "not running (PostgreSQL binaries not installed: $INSTALL_CMD)"
        fi
        return 3
    fi
}

cmd_url() {
    if running; then
        url_for "$(running_port)"
    else
        say "not running (start it with: scripts/dev-postgres.sh start)"
        return 3
    fi
}

CLUSTER=$(cluster_dir)
DATA=$CLUSTER/data
RUN=$CLUSTER/run
PORT=

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
