"""Per-token rate limits: a 429 with `Retry-After` when a caller is out of requests.

One token bucket (limits/rate.py) per bearer token the hub knows (`app.state.token_cache`, which
`api/deps.caller` fills), with the agents' own, larger budget for agent tokens so that heartbeats,
long polls and reports are never starved by anything a user does. A call without a token, or with
one the hub has not seen yet or refused, takes from its client address's bucket instead: that is
what bounds token guessing and anonymous traffic. The buckets live in this process: with N hub
replicas behind a balancer each enforces the whole rate, so a caller gets up to N times it.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from cpnet.api.errors import error_body
from cpnet.auth.model import Role
from cpnet.limits.rate import Bucket, Rate, retry_after, take

MAX_BUCKETS = 100_000  # past this, full buckets are forgotten (they start full anyway)
AGENT_PREFIX = "/v1/agents/"


class RateLimit:
    """ASGI middleware: take one token per request from the caller's bucket, or answer 429."""

    def __init__(
        self, app: ASGIApp, user: Rate | None, agent: Rate | None, anonymous: Rate | None
    ) -> None:
        self.app = app
        self.rates = {"user": user, "agent": agent, "anonymous": anonymous}
        self.buckets: dict[tuple[str, str], Bucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind, key = self._who(scope)
        rate = self.rates[kind]
        if rate is None:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        bucket, wait = take(self.buckets.get((kind, key)), rate, now)
        if len(self.buckets) >= MAX_BUCKETS:
            self._forget(now)
        self.buckets[(kind, key)] = bucket
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        await self._refuse(send, kind, rate, wait)

    def _who(self, scope: Scope) -> tuple[str, str]:
        """Which budget the request takes from: ("agent" | "user", token) for a token the hub
        knows, else ("anonymous", client address)."""
        token = ""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                break
        if token:
            app = scope.get("app")
            cache = getattr(getattr(app, "state", None), "token_cache", None) or {}
            hit = cache.get(token)
            # a stale entry still tells the role: a token's role never changes
            if hit is not None and hit[1] is not None:
                return ("agent" if hit[1].role is Role.AGENT else "user"), token
        client = scope.get("client") or ("unknown", 0)
        return "anonymous", str(client[0])

    def _forget(self, now: float) -> None:
        full = [
            k
            for k, b in self.buckets.items()
            if (r := self.rates[k[0]]) is None or b.tokens + (now - b.at) * r.per_s >= r.burst
        ]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= MAX_BUCKETS:
            self.buckets.clear()  # everyone starts full: generous, never wrong

    @staticmethod
    async def _refuse(send: Send, kind: str, rate: Rate, wait: float) -> None:
        seconds = retry_after(wait)
        whose = {
            "user": "this token",
            "agent": "this agent token",
            "anonymous": "calls without a known token from this address",
        }[kind]
        body = error_body(
            "rate_limited",
            f"too many requests: {whose} may make {rate.per_s:g} a second (bursts of "
            f"{rate.burst}); retry after {seconds} s (the Retry-After header), or spread "
            "the calls out",
            limit=str(rate),
            retry_after_s=seconds,
        )
        raw = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"retry-after", str(seconds).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": raw})
