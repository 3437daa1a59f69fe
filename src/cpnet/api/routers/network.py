"""The network map: agents report probe samples, operators declare links, anyone reads the map
and asks how long N bytes take between two places (docs/network.md).

Samples go under the reporting site (``/v1/sites/{site_id}/network/samples``, its agent only);
``/v1/network/probe`` answers exactly the requested number of bytes (bounded) so agents can time
a download from the hub.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from cpnet.api.deps import caller, hub, needs
from cpnet.api.routers.agents import agent_for
from cpnet.auth.model import Principal
from cpnet.errors import Invalid
from cpnet.hub.service import Hub
from cpnet.network.model import check_place
from cpnet.network.records import (
    MAX_ESTIMATE_BYTES,
    MAX_PROBE_BYTES,
    EstimateRecord,
    LinkDecl,
    LinkRecord,
    NetworkRecord,
    ProbeSamples,
    estimate_record,
    network_record,
)
from cpnet.store import network as store

router = APIRouter(tags=["network"])

_CHUNK = bytes(64 * 1024)  # the probe's payload: zeros (nothing on the path compresses them)


def place(value: str, field: str) -> str:
    """A query's place in canonical form, or a 400 naming the field and the accepted forms."""
    try:
        return check_place(value)
    except ValueError as exc:
        raise Invalid(str(exc), field=field) from None


@router.post("/v1/sites/{site_id}/network/samples")
def samples(
    site_id: str, body: ProbeSamples, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, int]:
    """Probe results of this site's agent (to the hub, data origins, other sites)."""
    sid = agent_for(site_id, who)
    with h.store.tx() as s:
        n = store.record_samples(s, sid, body.samples, time.time())
    return {"stored": n}


@router.get("/v1/network/probe")
def probe(
    nbytes: Annotated[int, Query(alias="bytes", ge=0, le=MAX_PROBE_BYTES)] = 0,
    _: Principal = Depends(caller),
) -> Response:
    """Exactly ``bytes`` bytes (at most 8 MiB), for agents timing a download from the hub."""

    def body() -> Iterator[bytes]:
        left = nbytes
        while left > 0:
            piece = _CHUNK[: min(left, len(_CHUNK))]
            left -= len(piece)
            yield piece

    headers = {"content-length": str(nbytes), "cache-control": "no-store"}
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


@router.get("/v1/network", response_model=NetworkRecord)
def network(_: Principal = Depends(caller), h: Hub = Depends(hub)) -> NetworkRecord:
    """Every pair the map knows: RTT, bandwidth, each figure's source, samples and their age."""
    with h.store.read() as s:
        m = store.load_map(s, time.time())
        links = store.links(s)
    return network_record(m, links)


@router.get("/v1/network/estimate", response_model=EstimateRecord)
def estimate(
    src: Annotated[str, Query(max_length=320)],
    dst: Annotated[str, Query(max_length=320)],
    nbytes: Annotated[int, Query(alias="bytes", ge=0, le=MAX_ESTIMATE_BYTES)],
    _: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> EstimateRecord:
    """Seconds to move ``bytes`` from ``src`` to ``dst``, with the path's figures and sources."""
    a, b = place(src, "src"), place(dst, "dst")
    with h.store.read() as s:
        m = store.load_map(s, time.time())
    link = m.links.get((a, b)) or m.links.get((b, a))
    return estimate_record(m, a, b, nbytes, link.currency if link else "CNY")


@router.put("/v1/network/links", response_model=LinkRecord)
def set_link(
    body: LinkDecl, who: Principal = Depends(needs()), h: Hub = Depends(hub)
) -> LinkRecord:
    """Declare the link between two places (admins): RTT, bandwidth, egress price per GB."""
    if body.rtt_ms is None and body.mbps is None and not body.egress_per_gb:
        raise Invalid("declare at least one of rtt_ms, mbps, egress_per_gb", field="mbps")
    if body.a == body.b:
        raise Invalid("a link joins two different places", field="b")
    with h.store.tx() as s:
        rec = store.set_link(s, body, who.user_id or who.token_id, time.time())
    h.wake_scheduler()
    return rec


@router.delete("/v1/network/links", response_model=LinkRecord)
def remove_link(
    a: Annotated[str, Query(max_length=320)],
    b: Annotated[str, Query(max_length=320)],
    _: Principal = Depends(needs()),
    h: Hub = Depends(hub),
) -> LinkRecord:
    """Forget a declared link (admins)."""
    pa = a if a == "*" else place(a, "a")
    pb = b if b == "*" else place(b, "b")
    with h.store.tx() as s:
        rec = store.remove_link(s, pa, pb)
    h.wake_scheduler()
    return rec
