"""Request bodies over a size limit get a 413 that the client reliably reads.

Answering 413 before the body is read is the point of a limit, but closing the connection right
after the answer, with the client still sending, loses the answer: the unread bytes in the
server's receive buffer make close() send a TCP reset, and the client sees `connection reset`
instead of the 413 (before this, from a tenth to three quarters of `urllib` uploads of 2 MiB did,
and every 8 MiB upload to /v1/blobs). So `TooLarge` sends its whole answer, with `Content-Length`
and `Connection: close`, then reads and discards what the client still sends (at most the larger
of `DRAIN_MIN_BYTES` and `DRAIN_FACTOR` times the limit, for at most `DRAIN_S`, stopping after
`DRAIN_IDLE_S` without data: a "lingering close", as nginx does), and only then ends the
response, after which the server closes. A client sending more or for longer can still see the
reset. Both the body limit below and the blob route answer with it.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpnet.api.errors import error_body

DRAIN_S = 10.0  # at most this long reading what follows a refused body
DRAIN_IDLE_S = 5.0  # ...and stop sooner when nothing arrives for this long
DRAIN_MIN_BYTES = 16 * 1024 * 1024  # at least this much is read, or DRAIN_FACTOR times the limit
DRAIN_FACTOR = 8


class TooLarge(Response):
    """The 413 `too_large` response (field `body`, `limit` in bytes), answered without dropping
    the connection on a client still sending; what the body limit and the blob route send."""

    media_type = "application/json"

    def __init__(self, limit: int, message: str) -> None:
        body = error_body("too_large", message, "body", limit=limit)
        super().__init__(json.dumps(body), status_code=413, headers={"connection": "close"})
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The whole answer goes out now (its length is known); the response ends after draining.
        await send(
            {"type": "http.response.start", "status": 413, "headers": self.raw_headers},
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await drain(receive, max(DRAIN_MIN_BYTES, DRAIN_FACTOR * self.limit))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def drain(receive: Receive, max_bytes: int) -> None:
    """Read and drop the rest of the request body, within the byte and time bounds."""
    deadline = time.monotonic() + DRAIN_S
    seen = 0
    while seen <= max_bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            msg = await asyncio.wait_for(receive(), min(left, DRAIN_IDLE_S))
        except TimeoutError:
            return
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            return  # the body ended, or the client went away
        seen += len(msg.get("body", b""))


class BodyLimit:
    """Refuse bodies larger than `max_bytes`, whether announced (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.exempt = exempt  # path prefixes whose routes enforce their own limit

    def refusal(self) -> TooLarge:
        return TooLarge(
            self.max_bytes,
            f"request body over {self.max_bytes} bytes; send less "
            "(large inputs go by URL, not inline)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = self.max_bytes + 1
                if size > self.max_bytes:
                    await self.refusal()(scope, receive, send)
                    return
        seen = 0
        started = cut = refused = False

        async def limited() -> Message:
            nonlocal seen, cut, refused
            if cut:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    # The app gets no more of the body: to it, the client went away. The 413 is
                    # answered here, not by raising through the app (the framework would turn an
                    # exception from reading the body into a 400).
                    cut = True
                    if not started:
                        refused = True
                        await self.refusal()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; what the app says after it goes nowhere
            started = True
            await send(msg)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not refused:
                raise
            # the app failed on the body it could not have (e.g. ClientDisconnect): answered
