"""Scheduler v2 through the real hub and agents: latency bounds, spillover, deadlines, staging."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cpnet.tasks.states import State
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration


def test_constraints_objectives_and_explanations_end_to_end(hub: HubProc, agents, tmp_path):
    # Shenzhen and Beijing: a cheaper pool far away and a dearer one in the city.
    world = make_world(hub, {"sz": ("edge", "440300"), "bj": ("general", "110000")})
    start_agent(hub, agents, tmp_path, world, "sz", [pool("edge", cores=2, type="edge", price=0.5)])
    start_agent(hub, agents, tmp_path, world, "bj", [pool("cpu", cores=4, price=0.01)])
    user = hub.client(world.user_token)
    pools = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 30, "two live pools")
    ids = {p.name: p.id for p in pools}
    quick = {"executors": [{"command": ["true"]}], "expected_runtime_s": 5}

    # Real time near Shenzhen: Beijing is ~1940 km away (~48 ms by the distance model).
    near = user.submit(
        {**quick, "constraints": {"latency": {"to": "region:440300", "max_rtt_ms": 5}}}
    )
    assert user.wait(near.id, timeout=60).pool_id == ids["edge"]
    why = user.explain(near.id)
    rejected = {r["pool_id"]: " ".join(r["reasons"]) for r in why["rejections"]}
    assert "exceeds the bound 5 ms" in rejected[ids["cpu"]]

    # Cheapest goes to Beijing; a spillover tier that starts in Shenzhen keeps it local.
    cheap = user.submit({**quick, "objective": "cheapest"})
    assert user.wait(cheap.id, timeout=60).pool_id == ids["cpu"]
    local = user.submit(
        {**quick, "objective": "cheapest", "constraints": {"spillover": [["4403"], [""]]}}
    )
    assert user.wait(local.id, timeout=60).pool_id == ids["edge"]
    ranked = {p["pool_id"]: p for p in user.explain(local.id)["placements"]}
    assert ranked[ids["edge"]]["tier"] == 1 and ranked[ids["cpu"]]["tier"] == 2

    # A deadline nobody can meet: the task waits, and explain says why for every pool.
    soon = datetime.now(UTC) + timedelta(seconds=30)
    late = user.submit(
        {
            "executors": [{"command": ["true"]}],
            "expected_runtime_s": 3600,
            "constraints": {"deadline": soon.isoformat()},
        }
    )
    why = user.explain(late.id)
    assert why["placements"] == []
    assert all("deadline in" in " ".join(r["reasons"]) for r in why["rejections"])
    assert user.task(late.id).state is State.QUEUED
    user.cancel(late.id)

    # The hub fills a blob input's size and counts its staging.
    data = b"x" * 300_000
    url = user.put_blob(data)
    assert url == f"cpnet://blobs/{hashlib.sha256(data).hexdigest()}"
    staged = user.submit(
        {
            **quick,
            "inputs": [{"url": url, "path": "/tmp/in.bin"}],
            "executors": [{"command": ["sh", "-c", "test $(wc -c < /tmp/in.bin) = 300000"]}],
        }
    )
    done = user.wait(staged.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    placements = user.explain(staged.id)["placements"]
    assert placements and all(p["staging_s"] > 0 for p in placements)
    assert any("staging 300 KB" in " ".join(p["reasons"]) for p in placements)


@pytest.mark.parametrize(
    ("constraints", "field"),
    [
        ({"deadline": "2026-12-07T08:00:00"}, "deadline"),
        ({"latency": {"to": "hub", "max_rtt_ms": -1}}, "max_rtt_ms"),
        ({"latency": {"to": "hub", "max_rtt_ms": 10, "fallback_max_rtt_ms": 5}}, "fallback"),
        ({"spillover": [["44x"]]}, "spillover"),
        ({"budget": -5}, "budget"),
    ],
)
def test_bad_v2_constraints_are_refused_naming_the_field(hub: HubProc, constraints, field):
    world = make_world(hub, {"a": ("general", "440300")})
    r = httpx.post(
        f"{hub.url}/v1/tasks",
        json={"executors": [{"command": ["true"]}], "constraints": constraints},
        headers={"Authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 400 or r.status_code == 422, r.text
    assert field in r.text
