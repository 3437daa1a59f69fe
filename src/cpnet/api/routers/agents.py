"""What agents call: register, heartbeat, receive assignments (long poll), report updates.

Every route is under `/v1/sites/{site_id}/...` and an agent token works for its own site only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from cpnet.agent.protocol import (
    Assignments,
    Heartbeat,
    HeartbeatReply,
    Measurements,
    RegisterResult,
    Registration,
    UpdateReply,
    Updates,
)
from cpnet.api.deps import caller, hub
from cpnet.auth.model import Principal, Role
from cpnet.errors import Forbidden, NotFound
from cpnet.hub import secrets as hub_secrets
from cpnet.hub.service import Hub
from cpnet.store import network, registry
from cpnet.store import secrets as secret_store
from cpnet.store import tasks as store
from cpnet.tasks import secrets as task_secrets

router = APIRouter(prefix="/v1/sites/{site_id}", tags=["agents"])
log = logging.getLogger("cpnet.hub.attempts")

REDELIVER_AFTER_S = 15.0  # an assignment not acknowledged by then is handed out again
MAX_WAIT_S = 60.0


def agent_for(site_id: str, who: Principal) -> str:
    """Only the site's own agent may speak for it."""
    if who.role is not Role.AGENT or who.site_id != site_id.lower():
        raise Forbidden(f"this token may not act for site {site_id}", field="site_id")
    return who.site_id


@router.post("/register", response_model=RegisterResult)
def register(
    site_id: str, body: Registration, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> RegisterResult:
    """Declare the site's pools on agent start (idempotent: same names keep their ids)."""
    sid = agent_for(site_id, who)
    with h.store.tx() as s:
        res = registry.register(
            s, sid, body, time.time(), sla_min_window_s=h.settings.sla_min_window_s
        )
    h.resolver.invalidate([sid])
    h.wake_scheduler()
    return res


@router.post("/measurements")
def measurements(
    site_id: str, body: Measurements, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, dict[str, dict]]:
    """Calibration probe results per pool; answers each pool's rebuilt capacity vector."""
    sid = agent_for(site_id, who)
    with h.store.tx() as s:
        vectors = registry.record_measurements(s, sid, body, time.time())
    h.resolver.invalidate([sid])
    h.wake_scheduler()
    return {"capacity": vectors}


@router.post("/heartbeat", response_model=HeartbeatReply)
def heartbeat(
    site_id: str, body: Heartbeat, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> HeartbeatReply:
    sid = agent_for(site_id, who)
    with h.store.tx() as s:
        back = registry.heartbeat(s, sid, body, time.time())
        reply = HeartbeatReply(
            cancel=store.cancels(s, sid),
            unknown=store.unknown_running(s, sid, body.running_attempts),
            measure=registry.pending_measurements(s, sid),
            probe=network.peers_to_probe(s, sid, time.time()),
        )
    h.wake_scheduler()
    if back:
        h.resolver.invalidate([sid])
    return reply


def _fetch(h: Hub, site_id: str) -> dict[str, Any]:
    """New attempts and cancels for the site, as the ``Assignments`` wire body.

    Each spec is the stored dump of a ``TaskSpec`` validated when the task was created, so it is
    sent as stored: no second validation per assignment (the agent validates what it receives).
    """
    with h.store.tx() as s:
        out = store.assignments(s, site_id, time.time(), REDELIVER_AFTER_S)
        return {"assignments": out, "cancel": store.cancels(s, site_id)}


@router.get("/assignments", response_model=Assignments)
async def assignments(
    request: Request,
    site_id: str,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 25.0,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> Response:
    """New attempts for this site and attempts to cancel; waits up to `wait` s for either.

    Reading the store hands the new attempts out (they are redelivered only after
    REDELIVER_AFTER_S), so a poll nobody will read must take nothing: one whose client has
    disconnected, or one superseded by a newer poll of the site (the poll of an agent killed
    mid-wait, still waiting here when the restarted agent polls). Else that dead poll, woken
    first, would take a new placement and the live agent would wait for its redelivery."""
    sid = agent_for(site_id, who)
    notifier = h.notifier
    assert notifier is not None
    event = notifier.site_event(sid)
    number = notifier.poll_begins(sid)
    deadline = time.monotonic() + wait
    while True:
        if not notifier.poll_is_newest(sid, number) or await request.is_disconnected():
            return JSONResponse({"assignments": [], "cancel": []})
        event.clear()  # before reading, so a placement committed after the read wakes us
        got = await to_thread.run_sync(_fetch, h, sid)
        left = deadline - time.monotonic()
        if got["assignments"] or got["cancel"] or left <= 0 or h.closing:
            # A Response is sent as is: FastAPI does not validate it against the model again.
            return JSONResponse(got)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), left)


@router.post("/updates", response_model=UpdateReply)
def updates(
    site_id: str, body: Updates, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> Response:
    """Apply attempt reports in order, in one transaction; repeats are harmless."""
    sid = agent_for(site_id, who)
    now = time.time()
    with h.store.tx() as s:
        results = store.apply_updates(s, sid, body.updates, now)
    if any(r.released or r.requeued for r in results):
        h.wake_scheduler()
    if any(r.status == "applied" for r in results):
        h.tasks_changed()
    _tell(h, sid, body, results)
    # The ``UpdateReply`` wire body, sent as it is: a model returned here would be validated
    # and serialised again, in another trip to the thread pool.
    return JSONResponse(
        {
            "results": [
                {
                    "attempt_id": r.attempt_id,
                    "status": r.status,
                    "reason": r.reason,
                    "cancel": r.cancel,
                    "usage": None
                    if r.usage is None
                    else {
                        "verdict": r.usage.verdict.value,
                        "reason": r.usage.reason,
                        "field": r.usage.field,
                    },
                }
                for r in results
            ]
        }
    )


def _tell(h: Hub, site_id: str, body: Updates, results: list[store.UpdateResult]) -> None:
    """Committed: count the attempts that ended and log them (one line each, with the task's
    trace id: telemetry/logs.py)."""
    for u, r in zip(body.updates, results, strict=True):
        if not r.released:
            continue
        h.metrics.attempts_ended.labels(u.state.value).inc()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "attempt ended: %s; task %s",
                u.state.value,
                r.task_state,
                extra={
                    "task_id": r.task_id,
                    "attempt_id": r.attempt_id,
                    "site_id": site_id,
                    "trace_id": r.trace_id,
                    "state": u.state.value,
                },
            )


@router.get("/attempts/{attempt_id}/secrets")
def attempt_secrets(
    site_id: str, attempt_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> dict:
    """The secret env values of an attempt's task, by executor index, and its data key (if it
    has one: ``data_key``), for the agent that runs
    it (docs/security.md, "Secrets"): only this site's agent, only while the attempt has not
    ended. Anything else is a 404, as if there were none."""
    sid = agent_for(site_id, who)
    with h.store.read() as s:
        found = secret_store.for_attempt(s, attempt_id, sid)
    if found is None:
        raise NotFound(f"no secrets for attempt {attempt_id} on this site", field="attempt_id")
    task_id, sealed = found
    values = hub_secrets.unseal(hub_secrets.load_key(h.settings), task_id, sealed)
    data_key = values.pop(task_secrets.DATA_KEY, None)
    out = {"attempt_id": attempt_id, "executors": values}
    if data_key:
        out["data_key"] = data_key["key"]
    return out
