"""Audit of every mutating call: a request id per request, and one chained record per call.

Pure ASGI (no BaseHTTPMiddleware: no extra task, no buffering of other answers). Every request
gets a fresh request id, returned as `X-Request-Id` and known to the domain events the call
writes (store/audit.current). For POST, PUT, PATCH and DELETE the record says who (the
principal the `caller` dependency resolved: role, organisation, user, site, token id — never
the token), what (the method and the route's template, e.g. `POST /v1/tasks/{task_id}/cancel`),
the object (the path parameters, or the id of what the call created), the answer's status and
the SHA-256 of the request body (never the body). It rides in the first write transaction the
call commits (store/audit.flush: no extra transaction on the hot path, and the call's record
and its domain events commit together or not at all); a call that commits nothing (a refusal,
a validation error) or answers another status than its route's is recorded here, in its own
transaction. Either way the record is committed before the answer leaves, so a client that
got an answer can find its record.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import secrets
import time

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpnet.audit.chain import Entry
from cpnet.store import audit

log = logging.getLogger("cpnet.audit")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CREATED_MAX = 64 * 1024  # bytes of an answer read for the id of what the call created


def new_request_id() -> str:
    return "req_" + secrets.token_hex(10)


class AuditCalls:
    """Tag each request with an id; make sure each mutating call has its audit record."""

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

        call.method, call.scope = scope["method"], scope
        start: Message | None = None
        held: list[Message] = []
        held_bytes = 0
        done = False

        async def recv() -> Message:
            message = await receive()
            chunk = message.get("body", b"") if message["type"] == "http.request" else b""
            if chunk:
                if call.body is None:
                    call.body = hashlib.sha256()
                call.body.update(chunk)
            return message

        async def hold(message: Message) -> None:
            nonlocal start, held_bytes, done
            if done:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = {**message, "headers": [*message.get("headers", ()), rid]}
                status = int(start["status"])
                if call.recorded == status or status >= 300:
                    # Recorded already, or nothing was created: no need to read the answer,
                    # which may still be streaming (a 413 goes out while its body drains).
                    done = True
                    if call.recorded != status:
                        await self._write(call, call.entry(time.time(), None, status))
                    await send(start)
                return
            held.append(message)
            held_bytes += len(message.get("body", b""))
            if message.get("more_body") and held_bytes <= _CREATED_MAX:
                return
            done = True
            assert start is not None
            status = int(start["status"])
            if call.recorded != status:  # nothing committed with this status: write it now
                answer = b"".join(m.get("body", b"") for m in held)
                created = _created_id(start, answer) if status < 300 else None
                await self._write(call, call.entry(time.time(), created, status))
            await send(start)
            for m in held:
                await send(m)

        await self.app(scope, recv, hold)

    async def _write(self, call: audit.Call, entry: Entry) -> None:
        hub = call.scope["app"].state.hub if call.scope else None
        try:
            # A fresh context: this transaction is the record, not another commit of the call.
            await to_thread.run_sync(contextvars.Context().run, _append, hub.store, entry)
        except Exception:  # the change (if any) is committed: answer it, and say so loudly
            log.exception("audit record of %s failed", entry.action)


def _append(store, entry: Entry) -> None:  # type: ignore[no-untyped-def]
    with store.tx() as s:
        audit.append_entry(s, entry)


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
