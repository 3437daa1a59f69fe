"""Audit of every mutating call: a request id per request, and one chained record per call.

Pure ASGI (no BaseHTTPMiddleware: no extra task, no buffering of other answers). Every request
gets a fresh request id, returned as `X-Request-Id` and known to the domain events the call
writes (store/audit.current). For POST, PUT, PATCH and DELETE the record says who (the
principal the `caller` dependency resolved: role, organisation, user, site, token id — never
the token), what (the method and the route's template, e.g. `POST /v1/tasks/{task_id}/cancel`),
the object (the path parameters, or the id of what the call created), the answer's status and
the SHA-256 of the request body (never the body). It is committed before the answer leaves, so
a client that got an answer can find its record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpnet.store import audit

log = logging.getLogger("cpnet.audit")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CREATED_MAX = 64 * 1024  # bytes of an answer read for the id of what the call created


def new_request_id() -> str:
    return "req_" + secrets.token_hex(10)


class AuditCalls:
    """Tag each request with an id; write an audit record for each mutating call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        call = audit.Call(new_request_id())
        audit.current.set(call)
        rid = (b"x-request-id", call.request_id.encode())
        if scope["method"] not in MUTATING:

            async def tag(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), rid]}
                await send(message)

            await self.app(scope, receive, tag)
            return

        body = hashlib.sha256()
        body_bytes = 0
        start: Message | None = None
        held: list[Message] = []
        held_bytes = 0
        written = False

        async def recv() -> Message:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                body.update(chunk)
                body_bytes += len(chunk)
            return message

        async def hold(message: Message) -> None:
            nonlocal start, held_bytes, written
            if written:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = {**message, "headers": [*message.get("headers", ()), rid]}
                return
            held.append(message)
            held_bytes += len(message.get("body", b""))
            if message.get("more_body") and held_bytes <= _CREATED_MAX:
                return
            written = True
            assert start is not None
            answer = b"".join(m.get("body", b"") for m in held)
            await self._write(scope, call, start, answer, body.hexdigest() if body_bytes else None)
            await send(start)
            for m in held:
                await send(m)

        await self.app(scope, recv, hold)

    async def _write(
        self, scope: Scope, call: audit.Call, start: Message, answer: bytes, body: str | None
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "(no route)"
        params = scope.get("path_params") or {}
        status = int(start["status"])
        object_id = "/".join(str(v) for v in params.values())[:200] or None
        created = _created_id(start, answer) if status < 300 else None
        detail = {"created": created} if created and created != object_id else {}
        who = call.who
        hub = scope["app"].state.hub
        try:
            await to_thread.run_sync(
                _append,
                hub.store,
                f"{scope['method']} {template}"[:200],
                who.org_id if who else None,
                object_id or created,
                status,
                body,
                detail,
            )
        except Exception:  # the change (if any) is committed: answer it, and say so loudly
            log.exception("audit record of %s %s failed", scope["method"], template)


def _append(store, action, org_id, object_id, status, body, detail) -> None:  # type: ignore[no-untyped-def]
    with store.tx() as s:
        audit.append(
            s,
            action,
            time.time(),
            org_id=org_id,
            object_id=object_id,
            status=status,
            body=body,
            detail=detail,
        )


def _created_id(start: Message, answer: bytes) -> str | None:
    """The `id` of a JSON answer (what a POST created); nothing else of the answer is kept —
    a token's answer holds its secret."""
    headers = dict(start.get("headers", ()))
    if not headers.get(b"content-type", b"").startswith(b"application/json"):
        return None
    if not answer or len(answer) > _CREATED_MAX:
        return None
    try:
        doc = json.loads(answer)
    except ValueError:
        return None
    got = doc.get("id") if isinstance(doc, dict) else None
    return got[:200] if isinstance(got, str) else None
