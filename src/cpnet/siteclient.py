"""The SDK's client for a site's agent: the agent API (``/v1/sites/{site_id}/...``) over the same
transport, retry policy and error hierarchy as :class:`cpnet.client.Client`.

An agent must outlast any hub outage, so its client retries every failure — refused or dropped
connections, timeouts, 5xx answers — for as long as it runs (no window), pausing with backoff up to
``BACKOFF_MAX_S`` and saying so once per outage; setting its ``stop`` event ends the waiting with
:class:`~cpnet.client.Stopped`. Every agent call is safe to repeat: registration keeps pool ids by
name, updates are applied idempotently, heartbeats and long polls only read or refresh. A 4xx
answer is raised at once as the SDK's error for it (``Unauthorized`` for 401/403, ``BadRequest``,
``NotFound``, ...). Messages are the models of :mod:`cpnet.agent.protocol`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import httpx

from cpnet.agent.protocol import (
    Assignments,
    HeartbeatReply,
    ProbeSample,
    RegisterResult,
    UpdateReply,
)
from cpnet.auth.model import WhoAmI
from cpnet.client import Client, tls_context

BACKOFF_MAX_S = 5.0  # an agent's pause between tries grows up to this
LONG_POLL_READ_S = 90.0  # read timeout: a long poll may hold the answer up to 60 s
PROBE_TIMEOUT_S = 60.0  # a probe download slower than this is a failed probe


class SiteClient(Client):
    """One site's agent talking to its hub. ``stop``: set it to stop retrying (the agent is
    stopping); ``on_retry`` hears of each outage once (default: a ``cpnet.client`` warning)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        stop: threading.Event,
        on_retry: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        super().__init__(
            url, token, retry_window_s=0, on_retry=on_retry, transport=transport, ca_file=ca_file
        )
        self._http.timeout = httpx.Timeout(30.0, read=LONG_POLL_READ_S)
        self.retry_window_s = math.inf  # until the hub answers, or stop is set
        self._backoff_max_s = BACKOFF_MAX_S
        self._retry_server_errors = True
        self._retryable = (httpx.TransportError,)  # timeouts too: a hub may hang, then recover
        self._stop = stop

    def certificate(self, csr_pem: bytes) -> dict:
        """A client certificate for this agent's site from its CSR (POST /v1/agents/certificate:
        the one agent route that needs no client certificate under mutual TLS)."""
        body = {"csr": csr_pem.decode()}
        return dict(self._request("POST", "/v1/agents/certificate", body=body, idempotent=True))  # type: ignore[call-overload]

    def use_cert(self, cert_file: str, key_file: str) -> None:
        """Present this client certificate from the next request on (new connections; the
        previous client is left to finish what it has in flight, e.g. a long poll)."""
        self.cert = (cert_file, key_file)
        old = self._http
        self._http = httpx.Client(
            base_url=old.base_url,
            headers=old.headers,
            timeout=old.timeout,
            transport=self._transport,
            verify=tls_context(self.ca_file, self.cert),
        )

    def attempt_secrets(self, site_id: str, attempt_id: str) -> dict:
        """The secret env values of an attempt's task, by executor index (only this site's
        agent, only while the attempt runs)."""
        return dict(self._site("GET", site_id, f"attempts/{attempt_id}/secrets"))  # type: ignore[call-overload]

    def _site(self, method: str, site_id: str, path: str, **kw: object) -> object:
        return self._request(method, f"/v1/sites/{site_id}/{path}", idempotent=True, **kw)

    def whoami(self) -> WhoAmI:
        return self._model(WhoAmI, self._request("GET", "/v1/whoami"), "whoami")

    def register(self, site_id: str, body: dict) -> RegisterResult:
        """Declare the site's pools (all of them: those left out go offline)."""
        data = self._site("POST", site_id, "register", body=body)
        return self._model(RegisterResult, data, "register")

    def measurements(self, site_id: str, body: dict) -> dict:
        """Send calibration reports; the hub answers each pool's rebuilt capacity vector."""
        return dict(self._site("POST", site_id, "measurements", body=body))  # type: ignore[call-overload]

    def post_usage(self, site_id: str, envelope: dict) -> dict:
        """Send a signed usage record by itself; the hub's verdict (a refusal is an error)."""
        return dict(self._site("POST", site_id, "usage", body=envelope))  # type: ignore[call-overload]

    def heartbeat(self, site_id: str, body: dict) -> HeartbeatReply:
        data = self._site("POST", site_id, "heartbeat", body=body)
        return self._model(HeartbeatReply, data, "heartbeat")

    def assignments(self, site_id: str, wait_s: float) -> Assignments:
        """New attempts and attempts to cancel, waiting up to `wait_s` for either (long poll)."""
        data = self._site("GET", site_id, "assignments", params={"wait": wait_s})
        return self._model(Assignments, data, "assignments")

    def post_samples(self, site_id: str, samples: Sequence[ProbeSample]) -> int:
        """Report network probe samples (at most MAX_SAMPLES at once); how many were stored."""
        body = {"samples": [x.model_dump(mode="json") for x in samples]}
        data = self._site("POST", site_id, "network/samples", body=body)
        return int(data["stored"])  # type: ignore[index]

    def probe_download(self, nbytes: int) -> int:
        """Download ``nbytes`` of probe payload from the hub (time the call); bytes received.

        Not retried: a probe that fails is a missing sample, not something to wait out.
        """
        with self._http.stream(
            "GET", "/v1/network/probe", params={"bytes": nbytes}, timeout=PROBE_TIMEOUT_S
        ) as response:
            if response.status_code != 200:
                response.read()
                self._answer(response)
            got = 0
            for chunk in response.iter_raw(64 * 1024):
                got += len(chunk)
        return got

    def post_updates(self, site_id: str, parts: Sequence[str]) -> UpdateReply:
        """Attempt updates already serialised (one JSON object each), in one request."""
        content = ('{"updates":[' + ",".join(parts) + "]}").encode()
        response = self._send(
            "POST",
            f"/v1/sites/{site_id}/updates",
            idempotent=True,
            content=content,
            headers={"content-type": "application/json"},
        )
        return self._model(UpdateReply, self._answer(response), "updates")
