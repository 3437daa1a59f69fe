"""Organisation quotas through a real hub, on SQLite and PostgreSQL: an admin sets them (API and
CLI), a submission that would pass one is refused with 429 naming the quota, the use and what
to do, and racing submissions cannot pass it together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import HubProc, make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def db_hub(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    from services import free_port

    h = HubProc(tmp_path / "hub", free_port())
    h.data_dir.mkdir()
    if database_url.startswith("postgresql"):
        h.database_url = database_url
    h.init()
    h.start()
    yield h
    h.kill()


def _task(cores: float = 1, gpus: int = 0) -> dict:
    # no pool can run it (no agent): it stays queued and keeps counting
    return {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": cores, "gpus": gpus}}


def _cli(hub: HubProc, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env.update(CPNET_HUB=hub.url, CPNET_TOKEN=token, HOME=str(hub.data_dir), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "cpnet", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_quotas_refuse_naming_the_quota_and_racing_submissions_cannot_pass(
    db_hub: HubProc,
) -> None:
    world = make_world(db_hub, {})
    org = world.org_id
    auth = {"authorization": f"Bearer {world.user_token}"}

    # Only an admin sets quotas; the organisation's user may read them.
    r = httpx.put(f"{db_hub.url}/v1/accounts/{org}/quota", json={"queued": 1}, headers=auth)
    assert r.status_code == 403, r.text
    out = _cli(db_hub, db_hub.admin_token, "account", "quota", org, "--queued", "6", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["queued"] == 6
    out = _cli(db_hub, db_hub.admin_token, "account", "quota", org, "--cores", "8", "--gpus", "1")
    assert out.returncode == 0 and "of 8" in out.stdout and "of 6" in out.stdout, out.stdout

    # Cores: 6 queued + 3 asked > 8.
    with db_hub.client(world.user_token) as user:
        user.submit(_task(cores=6))
    r = httpx.post(f"{db_hub.url}/v1/tasks", json=_task(cores=3), headers=auth)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert (err["code"], err["quota"], err["used"], err["asked"], err["limit"]) == (
        "quota_exceeded",
        "cores",
        6,
        3,
        8,
    )
    assert err["field"] == "resources.cpu_cores" and "cpnet account quota" in err["message"]
    assert "retry-after" not in r.headers  # waiting a second does not help: tasks must end
    # GPUs: the task asks 2 of 1
    r = httpx.post(f"{db_hub.url}/v1/tasks", json=_task(cores=1, gpus=2), headers=auth)
    assert r.status_code == 429 and r.json()["error"]["quota"] == "gpus", r.text

    # Queued tasks, raced: 12 submissions at once for the 5 places left -> exactly 5 accepted.
    _cli(db_hub, db_hub.admin_token, "account", "quota", org, "--cores", "1000")
    with db_hub.client(world.user_token) as user:
        left = 6 - user.quota(org).used_queued
    assert left == 5

    def submit(_: int) -> int:
        return httpx.post(
            f"{db_hub.url}/v1/tasks", json=_task(cores=0.5), headers=auth, timeout=60
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = Counter(pool.map(submit, range(12)))
    assert codes == Counter({201: left, 429: 12 - left}), codes
    with db_hub.client(world.user_token) as user:
        q = user.quota(org)
        assert q.used_queued == 6 == q.queued
        # cancelling one makes room for exactly one
        first = user.tasks().tasks[0]
        user.cancel(first.id)
        user.submit(_task(cores=0.5))
        with pytest.raises(Exception) as info:
            user.submit(_task(cores=0.5))
        assert getattr(info.value, "status", None) == 429

    # Removing the quotas lets submissions through again.
    out = _cli(db_hub, db_hub.admin_token, "account", "quota", org, "--remove", "--json")
    assert json.loads(out.stdout)["queued"] is None
    assert httpx.post(f"{db_hub.url}/v1/tasks", json=_task(), headers=auth).status_code == 201
