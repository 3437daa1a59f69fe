"""GET /metrics: the hub's Prometheus metrics (telemetry/metrics.py, docs/operations.md)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cpnet.api.deps import caller, require
from cpnet.telemetry.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    """The hub's metrics in the Prometheus text format: HTTP requests by route, the scheduler's
    passes and placements, attempts ended, sites lost, and the store's queue depth, capacity and
    ledger postings. Needs an admin's token unless the hub runs with CPNET_METRICS_PUBLIC=1.

    **Example:** `curl -H "Authorization: Bearer $CPNET_TOKEN" http://127.0.0.1:8470/metrics`
    """
    hub = request.app.state.hub
    if not hub.settings.metrics_public:
        require(await caller(request))  # an admin's token
    body = await to_thread.run_sync(hub.metrics.render)  # reads the store
    return Response(body, media_type=CONTENT_TYPE_LATEST)
