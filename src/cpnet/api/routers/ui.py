"""The dashboard: its files at /ui, what it shows at GET /v1/dashboard, and the same pushed every
few seconds as server-sent events at GET /v1/dashboard/stream (docs/operations.md, "Dashboard").

The dashboard signs in with the API's own bearer tokens and sees what they may: sites and pools
(public discovery), and the tasks of the caller's organisation (an admin: everyone's)."""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.staticfiles import StaticFiles

from cpnet.api.deps import caller, hub
from cpnet.auth.model import Principal, Role
from cpnet.hub.service import Hub
from cpnet.network.model import site_place
from cpnet.store import dashboard
from cpnet.store import network as net_store

router = APIRouter(tags=["dashboard"])
STREAM_EVERY_S = 2.0  # the stream's period (the dashboard's "live")
MIN_EVERY_S = 0.5


OVERVIEW_TTL_S = 1.0  # pages and streams of one organisation share a reading this fresh


def static_dir() -> str:
    return str(resources.files("cpnet.ui").joinpath("static"))


def overview(h: Hub, who: Principal, now: float) -> dict[str, Any]:
    """Everything the dashboard's pages show, as the caller may see it."""
    org = None if who.role is Role.ADMIN else who.org_id
    with h.store.read() as s:
        sites = dashboard.sites(s)
        m = net_store.load_map(s, now)
        tasks = dashboard.task_counts(s, org)
        flow = dashboard.flow(s, org, now)
    # Paths between two sites that rest on something better than distance alone.
    by_place = {site_place(x["id"]): x["id"] for x in sites}
    links = []
    for a, b in m.pairs():
        if a in by_place and b in by_place:
            p = m.path(a, b)
            if p.rtt_source in ("measured", "declared") or p.mbps_source in (
                "measured",
                "declared",
            ):
                links.append(
                    {
                        "a": by_place[a],
                        "b": by_place[b],
                        "rtt_ms": round(p.rtt_ms, 3),
                        "mbps": round(p.mbps, 3),
                        "source": p.rtt_source,
                    }
                )
    return {
        "at": now,
        "who": {"role": who.role.value, "org_id": who.org_id},
        "sites": sites,
        "links": links,
        "tasks": tasks,
        "flow": flow,
    }


def shared_overview(h: Hub, who: Principal, now: float) -> dict[str, Any]:
    """``overview``, read at most once per OVERVIEW_TTL_S for each organisation (and once for
    the operators), however many dashboards are open on it; a reading that took long is kept
    five times as long, so the dashboard never takes more than a fifth of the hub's time (an
    organisation's flow over a busy half hour joins every move of everyone to its tasks)."""
    key = (who.role.value, who.org_id)
    hit = h.dashboard_cache.get(key)
    if hit is not None and 0 <= now - hit[0] < max(OVERVIEW_TTL_S, 5 * hit[2]):
        return hit[1]
    t0 = time.monotonic()
    body = overview(h, who, now)
    for k, (at, _, _) in list(h.dashboard_cache.items()):
        if now - at > 60:  # organisations nobody watches any more
            h.dashboard_cache.pop(k, None)
    h.dashboard_cache[key] = (now, body, time.monotonic() - t0)
    return body


@router.get("/v1/dashboard")
async def get_dashboard(who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict[str, Any]:
    """The network at a glance: sites with their pools (capacity, load, price, reputation), the
    measured or declared links between sites, your organisation's tasks by state and their
    flow per minute over the last 30 minutes (an admin's token: everyone's)."""
    return await to_thread.run_sync(shared_overview, h, who, time.time())


@router.get(
    "/v1/dashboard/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def stream_dashboard(
    request: Request,
    every: Annotated[float, Query(ge=MIN_EVERY_S, le=60.0)] = STREAM_EVERY_S,
    count: Annotated[int, Query(ge=0, le=100_000)] = 0,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> StreamingResponse:
    """GET /v1/dashboard as server-sent events (`event: overview`), one now and one every
    `every` seconds, until the client goes away, the hub stops, or `count` events (0: no end)."""

    async def events():  # type: ignore[no-untyped-def]
        sent = 0
        while not h.closing:
            body = await to_thread.run_sync(shared_overview, h, who, time.time())
            yield f"event: overview\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"
            sent += 1
            if sent == count:
                return
            deadline = time.monotonic() + every
            while time.monotonic() < deadline:
                if h.closing or await request.is_disconnected():
                    return
                await asyncio.sleep(min(0.5, every))

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def mount(app) -> None:  # type: ignore[no-untyped-def]
    """Serve the built dashboard at /ui/ (index.html for /ui/; /ui redirects there)."""
    app.mount("/ui", StaticFiles(directory=static_dir(), html=True, check_dir=False), name="ui")
