"""Serving cached resolution records straight from ASGI, before the framework's routing.

Resolution is the hub's hottest read (PRODUCT.md: "fast, cached, in memory"). A cached, signed
record is a ready byte string, so a hit needs no routing, no dependency injection and no
serialisation. Misses (and everything else) go through the normal FastAPI route, which is also
what the OpenAPI document describes.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/v1/resolve/"
HEADERS = [(b"content-type", b"application/json")]


class ResolveCache:
    """ASGI middleware: answer `GET /v1/resolve/{id}` from the resolver's cache when it can."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With a query string the route answers (it refuses unknown parameters: query.py).
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path: str = scope["path"]
            if path.startswith(PREFIX):
                # Starlette puts the application in the scope before its middleware runs.
                hub = getattr(scope["app"].state, "hub", None)
                if hub is not None:
                    body = hub.resolver.cached(unquote(path[len(PREFIX) :]))
                    if body is not None:
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
                            }
                        )
                        await send({"type": "http.response.body", "body": body})
                        return
        await self.app(scope, receive, send)
