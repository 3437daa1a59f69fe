"""Helpers for tests that need real services (PostgreSQL, Slurm now; Ray, SeaweedFS later).

Tests import them as ``from services import need_service, free_port`` (``tests/conftest.py`` puts
``tests/`` on ``sys.path``). The fixtures built on them live in ``tests/conftest.py``.

A test that cannot get a service calls :func:`need_service`: it skips with the reason, or fails when
``CPNET_REQUIRE_SERVICES=1`` (as in CI, where a missing service is a broken machine, not a reason to
skip).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
DEV_DIR = Path(os.environ.get("CPNET_DEV_DIR") or REPO / ".dev")
DEV_POSTGRES = REPO / "scripts" / "dev-postgres.sh"
POSTGRES_URL_FILE = DEV_DIR / "postgres" / "url"
DEV_SLURM = REPO / "scripts" / "dev-slurm.sh"
SLURM_ENV_FILE = DEV_DIR / "slurm" / "env"
DEV_RAY = REPO / "scripts" / "dev-ray.sh"
RAY_URL_FILE = DEV_DIR / "ray" / "url"


def services_required() -> bool:
    """True when missing services must fail the tests instead of skipping them."""
    return os.environ.get("CPNET_REQUIRE_SERVICES", "") == "1"


def need_service(name: str, reason: str) -> NoReturn:
    """Skip the current test because service `name` is unavailable (or fail, if services are
    required)."""
    if services_required():
        pytest.fail(f"{name} required (CPNET_REQUIRE_SERVICES=1): {reason}", pytrace=False)
    pytest.skip(reason)


# Ports handed out by free_port: each pytest-xdist worker draws from its own block below the
# kernel's ephemeral range (32768-60999 by default), so neither another worker nor an outgoing
# connection can take a port between free_port() and the server that binds it. Ray's worker ports
# (10002-19999 by default) lie below the blocks.
PORT_BLOCK_START = 20000
PORT_BLOCK_SIZE = 3000
PORT_BLOCKS = 4
_handed_out: set[int] = set()


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # unset when running without xdist
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = PORT_BLOCK_START + (index % PORT_BLOCKS) * PORT_BLOCK_SIZE
    return range(start, start + PORT_BLOCK_SIZE)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free now and that this process has not handed out before, from
    this worker's block (see PORT_BLOCK_START). Bind it soon."""
    block = _port_block()
    if len(_handed_out) > len(block) // 2:
        _handed_out.clear()
    candidates = [p for p in block if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1} on {host}")


def postgres_install_hint() -> str:
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"install PostgreSQL with `{sudo}apt-get install -y postgresql`"


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy) -> ``postgresql://...`` (libpq / psycopg)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def postgres_problem(url: str) -> str | None:
    """None if `url` accepts a connection, else why not."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=5):
            return None
    except Exception as e:
        return f"{type(e).__name__}: {str(e).strip()}"


def start_dev_postgres(timeout: float = 120) -> tuple[str | None, str]:
    """Run ``scripts/dev-postgres.sh start`` (never installing packages from a test run).

    Returns (url, "") on success, (None, why) on failure.
    """
    env = {**os.environ, "CPNET_PG_INSTALL": "0"}
    try:
        proc = subprocess.run(
            ["bash", str(DEV_POSTGRES), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"scripts/dev-postgres.sh start did not finish: {e}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return lines[-1], ""
    out = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    tail = " | ".join(out.splitlines()[-8:])
    return None, f"scripts/dev-postgres.sh start failed (exit {proc.returncode}): {tail}"


def stop_dev_postgres() -> None:
    subprocess.run(["bash", str(DEV_POSTGRES), "stop"], capture_output=True, timeout=120)


def slurm_install_hint() -> str:
    sudo = "" if os.geteuid() == 0 else "sudo "
    return (
        f"install Slurm with `{sudo}apt-get install -y --no-install-recommends "
        "slurmctld slurmd slurm-client munge` and run scripts/dev-slurm.sh start as root"
    )


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (as ``scripts/dev-slurm.sh`` writes them) as a dict."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            env[key] = value
    return env


def slurm_problem(env: dict[str, str]) -> str | None:
    """None if the cluster `env` (``SLURM_CONF``) points at answers ``sinfo``, else why not."""
    conf = env.get("SLURM_CONF", "")
    if not conf or not Path(conf).is_file():
        return f"SLURM_CONF={conf!r} is not a file"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%P"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo did not run: {e}"
    if proc.returncode != 0:
        return f"sinfo failed (exit {proc.returncode}): {proc.stderr.strip()}"
    return None


def start_dev_slurm(timeout: float = 180) -> tuple[dict[str, str] | None, str]:
    """Run ``scripts/dev-slurm.sh start`` (never installing packages from a test run).

    Returns (env, "") on success, (None, why) on failure.
    """
    env = {**os.environ, "CPNET_SLURM_INSTALL": "0"}
    try:
        proc = subprocess.run(
            ["bash", str(DEV_SLURM), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"scripts/dev-slurm.sh start did not finish: {e}"
    if proc.returncode == 0 and SLURM_ENV_FILE.is_file():
        return read_env_file(SLURM_ENV_FILE), ""
    out = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    tail = " | ".join(out.splitlines()[-8:])
    return None, f"scripts/dev-slurm.sh start failed (exit {proc.returncode}): {tail}"


def stop_dev_slurm() -> None:
    subprocess.run(["bash", str(DEV_SLURM), "stop"], capture_output=True, timeout=120)


DEV_SEAWEEDFS = REPO / "scripts" / "dev-seaweedfs.sh"
SEAWEEDFS_URL_FILE = DEV_DIR / "seaweedfs" / "url"


def s3_problem(url: str) -> str | None:
    """None if the S3 endpoint `url` answers a ListBuckets (any key works on the dev server)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=5) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def start_dev_seaweedfs(timeout: float = 120) -> tuple[str | None, str]:
    """Run ``scripts/dev-seaweedfs.sh start``; (url, "") on success, (None, why) on failure."""
    try:
        proc = subprocess.run(
            ["bash", str(DEV_SEAWEEDFS), "start"], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"scripts/dev-seaweedfs.sh start did not finish: {e}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return lines[-1], ""
    out = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    tail = " | ".join(out.splitlines()[-8:])
    return None, f"scripts/dev-seaweedfs.sh start failed (exit {proc.returncode}): {tail}"


def stop_dev_seaweedfs() -> None:
    subprocess.run(["bash", str(DEV_SEAWEEDFS), "stop"], capture_output=True, timeout=60)


def ray_problem(url: str) -> str | None:
    """None if the Ray Jobs API (dashboard) at `url` answers with at least one live node."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/api/v0/nodes", timeout=10)
        r.raise_for_status()
        nodes = r.json()["data"]["result"]["result"]
    except Exception as e:
        return f"{type(e).__name__}: {str(e).strip()[:200]}"
    if not any(n.get("state") == "ALIVE" for n in nodes):
        return "no live Ray node"
    return None


def start_dev_ray(timeout: float = 240) -> tuple[str | None, str]:
    """Run ``scripts/dev-ray.sh start``; (url, "") on success, (None, why) on failure."""
    try:
        proc = subprocess.run(
            ["bash", str(DEV_RAY), "start"], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"scripts/dev-ray.sh start did not finish: {e}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return lines[-1], ""
    out = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    tail = " | ".join(out.splitlines()[-8:])
    return None, f"scripts/dev-ray.sh start failed (exit {proc.returncode}): {tail}"


def stop_dev_ray() -> None:
    subprocess.run(["bash", str(DEV_RAY), "stop"], capture_output=True, timeout=120)
