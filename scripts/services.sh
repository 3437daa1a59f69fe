#!/usr/bin/env bash
# Bring up (or down) every service the tests need, and write their addresses to an env file.
#
#   scripts/services.sh up     start each service, write ${CPNET_DEV_DIR:-<repo>/.dev}/services.env
#   scripts/services.sh down   stop each service (in reverse order)
#
# A service that fails to start is reported with the reason. With CPNET_REQUIRE_SERVICES=1 that is
# fatal (services already started are stopped again and the exit code is 1); otherwise it is a
# warning, the variable is left out of the env file and the tests that need the service skip with
# the reason.
#
# Each service is one line below: its name, the variable the tests read, and a script that takes
# {start|stop|status|url}; `start` exits 0 once the service is ready and `url` prints its address
# (for slurm: the path of its slurm.conf, which clients need as SLURM_CONF).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${CPNET_DEV_DIR:-$REPO/.dev}
ENV_FILE=$DEV_DIR/services.env

SERVICES=(
    # name     env variable              control script
    "postgres  CPNET_TEST_POSTGRES_URL   scripts/dev-postgres.sh"
    "slurm     CPNET_TEST_SLURM_CONF     scripts/dev-slurm.sh"
    # "ray       CPNET_TEST_RAY_ADDRESS    scripts/dev-ray.sh"
    "seaweedfs CPNET_TEST_S3_ENDPOINT    scripts/dev-seaweedfs.sh"
)

say() { echo "services: $*" >&2; }
required() { [[ ${CPNET_REQUIRE_SERVICES:-0} == 1 ]]; }

up() {
    mkdir -p "$DEV_DIR"
    local tmp=$ENV_FILE.tmp started=() line name var script out url t0
    rm -f "$ENV_FILE"
    : >"$tmp"
    for line in "${SERVICES[@]}"; do
        read -r name var script <<<"$line"
        t0=$SECONDS
        if out=$(bash "$REPO/$script" start 2>&1) && url=$(bash "$REPO/$script" url 2>/dev/null); then
            started+=("$line")
            echo "$var=$url" >>"$tmp"
            say "$name up in $((SECONDS - t0))s: $url"
            continue
        fi
        say "$name FAILED to start ($script start):"
        sed 's/^/    /' <<<"$out" >&2
        if required; then
            say "CPNET_REQUIRE_SERVICES=1: $name is required; stopping what was started"
            rm -f "$tmp"
            stop_all "${started[@]}"
            exit 1
        fi
        say "continuing without $name: tests that need it will skip"
    done
    mv -f "$tmp" "$ENV_FILE"
    say "wrote $ENV_FILE"
}

# Stop the given service lines in reverse order; a failure to stop is reported, not fatal.
stop_all() {
    local i name var script out
    for ((i = $#; i >= 1; i--)); do
        read -r name var script <<<"${!i}"
        if ! out=$(bash "$REPO/$script" stop 2>&1); then
            say "WARNING: could not stop $name ($script stop):"
            sed 's/^/    /' <<<"$out" >&2
        fi
    done
}

case ${1:-} in
up) up ;;
down)
    stop_all "${SERVICES[@]}"
    rm -f "$ENV_FILE"
    say "all services down"
    ;;
*)
    echo "usage: $0 {up|down}" >&2
    exit 2
    ;;
esac
