"""GA4GH TES v1.1 at /ga4gh/tes/v1: a thin shell over the native task store.

Same bearer tokens, same tenant isolation (another organisation's task is 404), same validation
(400 naming the field); the mapping lives in cpnet.tasks.tes. Responses carry only fields the
spec defines and never a null.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cpnet import __version__
from cpnet.api.deps import caller, hub, person
from cpnet.auth.model import Principal
from cpnet.errors import Invalid
from cpnet.hub import tasks
from cpnet.hub.service import Hub
from cpnet.store import tasks as store
from cpnet.tasks import tes
from cpnet.tasks.model import URL_SCHEMES, TaskView
from cpnet.tasks.states import State

PREFIX = "/ga4gh/tes/v1"
NOTE = tasks.NOTE_PREFIX  # the task events that hold warnings shown in system_logs
MAX_PAGE = 2047  # "Must be less than 2048"
DEFAULT_PAGE = 256
TES_STATES = ("UNKNOWN", *(s.value for s in State))

router = APIRouter(prefix=PREFIX, tags=["ga4gh-tes"])


def _json(data: dict) -> JSONResponse:
    return JSONResponse(data)


@router.get("/service-info")
def service_info(request: Request, who: Principal = Depends(caller)) -> JSONResponse:
    """GetServiceInfo: who we are, the storage URL schemes agents stage, the cpnet
    backend_parameters keys."""
    h: Hub = request.app.state.hub
    return _json(
        {
            "id": f"{'.'.join(reversed(h.settings.authority.split('.')))}.cpnet.tes",
            "name": "cpnet hub",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "GA4GH TES on cpnet: each task is placed on the best pool of the "
            "whole network of compute providers",
            "organization": {"name": "cpnet", "url": "https://github.com/cpnet"},
            "documentationUrl": str(request.base_url).rstrip("/") + "/docs",
            "environment": "production",
            "version": __version__,
            "storage": [f"{s}://" for s in URL_SCHEMES],
            "tesResources_backend_parameters": list(tes.BACKEND_PARAMETERS),
        }
    )


@router.post("/tasks")
async def create_task(
    request: Request, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> JSONResponse:
    """CreateTask: validate, map to a TaskSpec, submit it like a native task; returns {id}."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"body is not JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise Invalid("body must be a tesTask JSON object", field="body")
    spec, warnings = tes.to_spec(tes.parse(body))
    submit = partial(tasks.submit, h, who, spec, notes=warnings, view=False)
    try:  # the store is synchronous: keep it off the event loop, as sync routes are
        done = await run_in_threadpool(submit)
    except Invalid as exc:
        if exc.field != "work.reference_pool":
            raise
        field = "resources.backend_parameters.cpnet.reference_pool"  # where TES gave it
        raise Invalid(exc.message, field=field) from None
    return _json({"id": done.id})


View = Annotated[tes.View, Query()]


@router.get("/tasks")
def list_tasks(
    name_prefix: Annotated[str | None, Query(max_length=256)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    tag_key: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006
    tag_value: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    page_token: Annotated[str | None, Query(max_length=64)] = None,
    view: View = tes.View.MINIMAL,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> JSONResponse:
    """ListTasks: your organisation's tasks, newest first."""
    if state is not None and state not in TES_STATES:
        raise Invalid(f"state {state!r} unknown; use one of {', '.join(TES_STATES)}", field="state")
    wanted = tes.tag_filter(tag_key, tag_value)
    f = store.TaskFilter(
        # UNKNOWN is never a cpnet task's state: the filter then matches nothing
        states=(state,) if state else (),
        name_prefix=name_prefix,
        tags=tuple((k, v) for k, v in wanted if v is not None),
        tag_keys=tuple(k for k, v in wanted if v is None),
    )
    with h.store.read() as s:
        try:
            rows, nxt = store.list_tasks(s, who, f, page_size, page_token)
        except Invalid as exc:
            raise Invalid(exc.message.replace("cursor", "page_token"), field="page_token") from None
        if view is tes.View.MINIMAL:
            tasks = [{"id": t.id, "state": t.state} for t in rows]
        else:
            tasks = [_task(s, v, view) for v in store.task_views(s, rows)]
    out: dict = {"tasks": tasks}
    if nxt:
        out["next_page_token"] = nxt
    return _json(out)


def _task(s: Session, v: TaskView, view: tes.View) -> dict:
    """A task in a BASIC or FULL view; FULL shows the warnings recorded at creation first."""
    notes: list[str] = []
    if view is tes.View.FULL:
        notes = [n.removeprefix(NOTE) for n in store.notes_of(s, v.id, NOTE)]
    return tes.to_tes(v, view, notes)


@router.get("/tasks/service-info", include_in_schema=False)
def legacy_service_info(who: Principal = Depends(caller)) -> JSONResponse:
    """TES 1.0's ServiceInfo, where py-tes 0.4 (snakemake-executor-plugin-tes) looks for it."""
    return _json(
        {
            "name": "cpnet hub",
            "doc": "GA4GH TES v1.1 at /ga4gh/tes/v1/service-info",
            "storage": [f"{s}://" for s in URL_SCHEMES],
        }
    )


@router.get("/tasks/{task_id}")
def get_task(
    task_id: str,
    view: View = tes.View.MINIMAL,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> JSONResponse:
    """GetTask in the asked view (MINIMAL by default, as the spec says)."""
    with h.store.read() as s:
        task = store.get_task(s, who, task_id)
        if view is tes.View.MINIMAL:
            return _json({"id": task.id, "state": task.state})
        full = view is tes.View.FULL  # FULL also has each attempt's transfer records
        return _json(_task(s, store.task_view(s, task, full=full), view))


@router.post("/tasks/{task_id}:cancel")
def cancel_task(
    task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> JSONResponse:
    """CancelTask: as the native cancel; the response is the spec's empty object."""
    tasks.cancel(h, who, task_id)
    return _json({})
