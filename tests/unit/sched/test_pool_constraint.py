"""`constraints.pools`: a task allowed only some pools (a quoted task: its quoted pool)."""

from __future__ import annotations

from dataclasses import replace

from cpnet.hub.scheduling import request_from_dict
from cpnet.sched import PoolView, Price, Resources, TaskRequest, assign, rank

BASE = PoolView(
    id="p",
    site_id="site-1",
    provider_id="prov-a",
    name="pool",
    type="general",
    region_code="440300",
    labels=(),
    total=Resources(8, 32, 100, 0),
    available=Resources(8, 32, 100, 0),
    gpu_model=None,
    queue_length=0,
    running=0,
    price=Price("CNY", cpu_core_hour=0.1),
)


def test_only_the_allowed_pools_are_candidates_and_the_others_say_why() -> None:
    pools = [replace(BASE, id=i, name=i) for i in ("a", "b", "c")]
    task = TaskRequest(id="t", demand=Resources(1, 1), pools=("b",))
    d = rank(task, pools)
    assert [p.pool_id for p in d.placements] == ["b"]
    assert {r.pool_id: r.reasons for r in d.rejections}["a"] == ("pool a not allowed (allowed: b)",)
    # The batch never puts it elsewhere, even when its pool is full.
    full = [replace(p, available=Resources()) if p.id == "b" else p for p in pools]
    ((_, _, chosen),) = assign([task], full)
    assert chosen is None


def test_the_stored_spec_reads_into_the_request() -> None:
    spec = {"executors": [{"command": ["true"]}], "constraints": {"pools": ["CN.DEV.X.P1"]}}
    assert request_from_dict("t", spec).pools == ("cn.dev.x.p1",)
    assert request_from_dict("t", {"executors": [{"command": ["true"]}]}).pools == ()
