"""What the dashboard shows (api/routers/ui.py): the network's sites and pools, the paths between
sites, and the flow of tasks, read in one read-only transaction."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from cpnet.network.geo import shipped
from cpnet.store.tables import Pool, PoolReputation, Site, Task, TaskEvent
from cpnet.tasks.states import TERMINAL, State

FLOW_MINUTES = 30  # the task-flow chart's span
LIVE = tuple(s.value for s in State if s not in TERMINAL)
# A task event's new state, as the flow chart counts it.
FLOW_KIND = {
    State.QUEUED.value: "queued",
    State.RUNNING.value: "running",
    State.COMPLETE.value: "complete",
    State.EXECUTOR_ERROR.value: "failed",
    State.SYSTEM_ERROR.value: "failed",
    State.CANCELED.value: "canceled",
}


def sites(s: Session) -> list[dict[str, Any]]:
    """Every site not retired, with its pools (not retired) and their reputations."""
    rep = {
        pid: score for pid, score in s.execute(select(PoolReputation.pool_id, PoolReputation.score))
    }
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in s.scalars(select(Pool).where(Pool.retired_at.is_(None)).order_by(Pool.id)):
        price = (p.descriptor or {}).get("price", {})
        pools[p.site_id].append(
            {
                "id": p.id,
                "name": p.name,
                "type": p.type,
                "online": p.online,
                "cpu_cores": p.total_cpu,
                "cpu_reserved": p.reserved_cpu,
                "ram_gb": p.total_ram,
                "gpus": p.total_gpus,
                "gpus_reserved": p.reserved_gpus,
                "gpu_model": p.gpu_model,
                "running": p.running,
                "queue_length": p.queue_length,
                "price_cpu_core_hour": price.get("cpu_core_hour"),
                "price_gpu_hour": price.get("gpu_hour"),
                "currency": price.get("currency", "CNY"),
                "reputation": rep.get(p.id),
                # SCU per hour by workload profile (docs/compute-unit.md): measured or catalogue
                "scu": dict(sorted((p.scu or {}).items())),
            }
        )
    out = []
    geo = shipped()
    for site in s.scalars(select(Site).where(Site.retired_at.is_(None)).order_by(Site.id)):
        lat, lon, region_name = site.lat, site.lon, site.region_name
        if lat is None or lon is None:  # not given at registration: the region's city
            city = geo.city(site.region_code)
            if city is not None:
                lat, lon, region_name = city.lat, city.lon, region_name or city.name
        out.append(
            {
                "id": site.id,
                "name": site.name,
                "type": site.type,
                "provider_id": site.provider_id,
                "region_code": site.region_code,
                "region_name": region_name,
                "lat": lat,
                "lon": lon,
                "online": site.online,
                "last_heartbeat": site.last_heartbeat,
                "pools": pools.get(site.id, []),
            }
        )
    return out


def task_counts(s: Session, org_id: str | None) -> dict[str, int]:
    """Tasks waiting or running, by state: the organisation's, or everyone's (None)."""
    q = select(Task.state, func.count()).where(Task.state.in_(LIVE)).group_by(Task.state)
    if org_id is not None:
        q = q.where(Task.org_id == org_id)
    counts = {st: 0 for st in LIVE}
    counts.update({st: n for st, n in s.execute(q)})
    return counts


def flow(s: Session, org_id: str | None, now: float) -> list[dict[str, Any]]:
    """Per minute of the last FLOW_MINUTES: tasks that entered the queue, started running,
    completed, failed or were canceled (the organisation's, or everyone's). Counted by the
    database, a minute at a time, from the index on the events' time (0017): every move in the
    window counts, however many there were."""
    start = (math.floor(now / 60) - FLOW_MINUTES + 1) * 60
    moved = or_(TaskEvent.from_state.is_(None), TaskEvent.from_state != TaskEvent.to_state)
    q = select(TaskEvent.to_state, func.count()).where(
        moved, TaskEvent.to_state.in_(FLOW_KIND), TaskEvent.at >= bindparam("lo"),
        TaskEvent.at < bindparam("hi"),
    )  # fmt: skip
    if org_id is not None:
        q = q.join(Task, Task.id == TaskEvent.task_id).where(Task.org_id == org_id)
    q = q.group_by(TaskEvent.to_state)
    minutes = []
    for i in range(FLOW_MINUTES):
        lo = start + 60 * i
        m = {"minute": lo, "queued": 0, "running": 0, "complete": 0, "failed": 0, "canceled": 0}
        for to_state, n in s.execute(q, {"lo": lo, "hi": lo + 60}):
            m[FLOW_KIND[to_state]] += n
        minutes.append(m)
    return minutes
