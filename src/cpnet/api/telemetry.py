"""Every HTTP request, counted and timed by route (telemetry/metrics.py), and with
``access_log`` one log line each (telemetry/logs.py).

Pure ASGI and outermost, so a request the rate limit refuses (429) or the resolve fast path
answers is counted too. The route is the matched route's template (``/v1/tasks/{task_id}``,
never the path: ids would make a metric per task); a cached resolve counts under its route's
template; a path no route matches under ``unmatched``.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpnet.api.fastpath import PREFIX as RESOLVE_PREFIX

log = logging.getLogger("cpnet.access")
RESOLVE_ROUTE = RESOLVE_PREFIX + "{identifier}"
UNMATCHED = "unmatched"


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if scope["path"].startswith(RESOLVE_PREFIX):
        return RESOLVE_ROUTE
    return UNMATCHED


class Telemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what a request that raised before answering amounts to
        request_id: str | None = None

        async def watch(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            hub = getattr(scope["app"].state, "hub", None)
            if hub is not None:
                elapsed = time.perf_counter() - began
                method, route = scope["method"], route_of(scope)
                hub.metrics.requests.labels(method, route, str(status)).inc()
                hub.metrics.latency.labels(method, route).observe(elapsed)
                if hub.settings.access_log:
                    log.info(
                        "%s %s %d",
                        method,
                        scope["path"],
                        status,
                        extra={
                            "request_id": request_id,
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                        },
                    )
