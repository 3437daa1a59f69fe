"""The Python SDK: one synchronous client for a cpnet hub's native API.

The CLI, the demo and the benchmarks all talk to a hub through :class:`Client`, so retries, error
mapping and configuration lookup live here once::

    from cpnet import Client

    with Client() as hub:  # CPNET_HUB / CPNET_TOKEN, else ~/.config/cpnet/config.toml
        task = hub.submit({"executors": [{"command": ["echo", "hi"]}]})
        print(hub.wait(task.id, timeout=60).state)

Every failure is a :class:`CpnetError`; its subclass says what kind (``NotFound``,
``Unauthorized``, ``BadRequest``, ``Conflict``, ``HubUnavailable``, ``WaitTimeout``).

While the hub cannot be reached (e.g. it is restarting), calls are retried with backoff for up to
``retry_window_s`` seconds (default 30, or CPNET_RETRY_WINDOW_S), saying so once through the
``cpnet.client`` logger or ``on_retry``; only calls the hub treats as idempotent are sent again
when the request may already have reached it; so are those answered 502, 503 or 504 (a load
balancer in front of hub replicas, one of which died or restarts: docs/operations.md). A hub URL
or token that no request could carry (e.g. a typographic dash pasted into a token) is refused
when the Client is built, with ``BadSetting``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from cpnet import __version__
from cpnet.audit.wire import AuditPage, AuditRecordOut, AuditVerify
from cpnet.auth.model import IssuedToken, OrgRecord, TokenRecord, UserRecord, WhoAmI
from cpnet.config import DEFAULT_PORT
from cpnet.limits.wire import QuotaView
from cpnet.market.auction_records import AuctionRecord, BidRecord, BidRuleRecord, LeaseRecord
from cpnet.market.records import PoolPrices, PoolSla, QuoteRecord, ReputationRecord
from cpnet.market.wire import AccountSummary, Bill, LedgerCheck, Posted, UsageList
from cpnet.network.records import EstimateRecord, LinkRecord, NetworkRecord
from cpnet.registry.model import PoolRecord, ProviderRecord, SiteRecord
from cpnet.tasks.model import (
    MAX_BATCH,
    BatchItem,
    BatchResult,
    TaskEvent,
    TaskPage,
    TaskSpec,
    TaskView,
)
from cpnet.tasks.states import State

DEFAULT_HUB = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_RETRY_WINDOW_S = 30.0  # long enough to ride out a hub restart
RETRY_WINDOW_ENV = "CPNET_RETRY_WINDOW_S"
BACKOFF_S = 0.1  # first pause between tries; doubles each time ...
BACKOFF_MAX_S = 1.0  # ... up to this
WAIT_POLL_MAX_S = 2.0  # wait() slows its polling down to at most this interval
WAIT_LONG_POLL_S = 25.0  # wait(): how long each long poll may wait at the hub
BATCH_BYTES = 900 * 1024  # JSON per batch request, under the hub's default 1 MiB body limit

# Failures that can pass if the hub comes back: the request is sent again while the retry window
# lasts. Of these, _NOT_SENT ones happened before any byte of the request left (no connection):
# safe to repeat for any call. After the others the request may have reached the hub, so only
# calls the hub treats as idempotent are sent again.
_RETRYABLE = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
# Methods that are idempotent by HTTP's definition, and are so at the hub (a repeated PUT of a
# blob, DELETE of a token or pool changes nothing more). POSTs say so call by call.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# What a load balancer answers when the replica it chose died under the request or none is up:
# sent again, like a connection reset, when the call is idempotent.
_GATEWAY_ERRORS = frozenset({502, 503, 504})

log = logging.getLogger("cpnet.client")

M = TypeVar("M", bound=BaseModel)


# ---- errors -----------------------------------------------------------------------------------


class CpnetError(Exception):
    """Any failure talking to a hub: an HTTP status (or None), a stable code and a message."""

    hint = ""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class NotFound(CpnetError):
    """The hub has no such object (404), or not one the caller may see."""

    hint = "check the id: `cpnet tasks` and `cpnet pools` list what you can see"


class Unauthorized(CpnetError):
    """The token is missing, wrong or revoked (401), or its role may not do this (403)."""

    @property
    def hint(self) -> str:  # type: ignore[override]
        if self.status == 403:
            return "your token's role does not allow this; ask a hub admin"
        return "pass a valid token: `cpnet login --hub URL --token TOKEN`, --token or CPNET_TOKEN"


class BadRequest(CpnetError):
    """The hub refused the request as malformed or too large (400, 413, 422)."""

    @property
    def hint(self) -> str:  # type: ignore[override]
        where = f" (field {self.field})" if self.field else ""
        return f"fix the request{where} and try again"


class Conflict(CpnetError):
    """The request clashes with the object's current state (409)."""

    hint = "look at the object's current state and try again"


class PaymentRequired(CpnetError):
    """The organisation's money does not cover the task's hold (402): its message names the
    shortfall."""

    hint = "top up the organisation (`cpnet account topup`, admin) or lower constraints.budget"


class BadSetting(BadRequest):
    """A hub URL, token or client setting that no request could carry, refused before sending;
    its message says what to do."""

    hint = ""  # type: ignore[assignment]


class HubUnavailable(CpnetError):
    """The hub could not be reached, or did not answer in time."""


class Stopped(CpnetError):
    """The client was stopped (its stop event set) while it waited to retry."""


class WaitTimeout(CpnetError, TimeoutError):
    """wait() gave up before the task reached a terminal state."""

    hint = "the task keeps running; follow it with `cpnet status ID --watch`"


_BY_STATUS: dict[int, type[CpnetError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: BadRequest,
}


def error_from_response(response: httpx.Response) -> CpnetError:
    """Turn a hub's 4xx/5xx answer (``{"error": {code, message, field}}``) into a CpnetError."""
    cls = _BY_STATUS.get(response.status_code, CpnetError)
    code, field = f"http_{response.status_code}", None
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        field = error.get("field") or None
    elif isinstance(body, dict) and "detail" in body:  # a framework error that escaped the mapper
        message = str(body["detail"])
    if not message:
        text = response.text
        if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
            text = re.sub(r"<[^>]*>", " ", text)  # a proxy's or web server's error page: its words
        text = " ".join(text.split())[:200]
        request = response.request
        message = f"HTTP {response.status_code} from {request.method} {request.url.path}"
        if text:
            message += f": {text}"
    return cls(message, status=response.status_code, code=code, field=field)


# ---- configuration ----------------------------------------------------------------------------


def config_path() -> Path:
    """Where the CLI keeps the hub URL and token: CPNET_CONFIG, else the XDG config dir."""
    env = os.environ.get("CPNET_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cpnet" / "config.toml"


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The config file's contents (``hub``, ``token``), or {} when there is none."""
    path = path or config_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CpnetError(
            f"cannot read the config file {path}: {err}; fix it, delete it, or run `cpnet login`",
            code="bad_config",
        ) from None


def normalise_url(url: str) -> str:
    """A hub base URL without a trailing slash; ``host:port`` gets ``http://`` in front."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def _odd_char(value: str) -> tuple[int, str] | None:
    """The first character that cannot go into an HTTP header or a URL as typed: (1-based
    position, description such as ``'—' (U+2014)``), or None. Printable ASCII other than the
    space is fine."""
    for i, ch in enumerate(value, 1):
        if not "!" <= ch <= "~":
            return i, f"{ch!r} (U+{ord(ch):04X})"
    return None


def _from(where: str) -> str:
    return f" {where}" if where else ""


def check_token(token: str, where: str = "") -> str:
    """The token without surrounding whitespace, or BadSetting if it has a character no cpnet
    token has (say, a typographic dash from a word processor), naming it and its position.

    ``where`` says where the value came from, for the message (e.g. "given with --token").
    """
    token = token.strip()
    if not token:
        raise BadSetting(
            f"the token{_from(where)} is empty; give the token itself, or leave the setting out",
            code="bad_token",
            field="token",
        )
    odd = _odd_char(token)
    if odd is not None:
        pos, char = odd
        raise BadSetting(
            f"the token{_from(where)} has {char} at position {pos}, which no cpnet token "
            "contains; copy it again from where it was issued",
            code="bad_token",
            field="token",
        )
    return token


def check_hub_url(url: str, where: str = "") -> str:
    """The hub URL normalised (see normalise_url), or BadSetting saying why no request could go
    to it: empty, a character a URL cannot have as typed, not http(s), no host, a bad port."""
    raw = url.strip()
    what = f"the hub URL{_from(where)}"
    example = "give it as http://HOST:PORT, e.g. http://127.0.0.1:8470"
    if not raw:
        raise BadSetting(f"{what} is empty; {example}", code="bad_hub_url", field="hub")
    odd = _odd_char(raw)
    if odd is not None:
        pos, char = odd
        raise BadSetting(
            f"{what} ({raw!r}) has {char} at position {pos}; a hub URL is plain ASCII without "
            f"spaces ({example}; an internationalised host name goes in its xn-- form)",
            code="bad_hub_url",
            field="hub",
        )
    normal = normalise_url(raw)
    try:
        parsed = httpx.URL(normal)
        port = parsed.port
    except httpx.InvalidURL as err:
        raise BadSetting(
            f"{what} ({raw!r}) is not a URL: {err}; {example}", code="bad_hub_url", field="hub"
        ) from None
    problem = None
    if parsed.scheme not in ("http", "https"):
        problem = f"its scheme is {parsed.scheme!r}, not http or https"
    elif not parsed.host:
        problem = "it has no host"
    elif port is not None and not 0 < port < 65536:
        problem = f"port {port} is out of range"
    elif parsed.query or parsed.fragment:
        problem = "a hub URL has no ?query or #fragment"
    if problem:
        raise BadSetting(
            f"{what} ({raw!r}) cannot be used: {problem}; {example}",
            code="bad_hub_url",
            field="hub",
        )
    return normal


def tls_context(
    ca_file: str | os.PathLike[str] | None, cert: tuple[str, str] | None = None
) -> ssl.SSLContext | bool:
    """What httpx verifies the hub's certificate with: the default roots (True), or a context
    trusting `ca_file` (the hub's private CA) and presenting `cert` (certificate, key)."""
    if ca_file is None and cert is None:
        return True
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        if cert is not None:
            ctx.load_cert_chain(cert[0], cert[1])
    except (OSError, ssl.SSLError) as exc:
        raise BadSetting(
            f"cannot use the TLS files (CA file {ca_file}, certificate {cert and cert[0]}): "
            f"{exc}; check the paths (--ca-file, CPNET_CA_FILE)"
        ) from None
    return ctx


def _tls_refused(err: Exception) -> bool:
    """Whether a connection failed in the TLS handshake for a reason retrying cannot fix (an
    untrusted or mismatched certificate, a refused client certificate)."""
    text = str(err)
    return any(
        s in text
        for s in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "certificate required")
    )


def _tls_advice(url: str, err: Exception) -> str:
    text = str(err)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the hub's TLS certificate at {url} is not trusted ({text[:200]}); pass the CA "
            "that signed it with --ca-file (or CPNET_CA_FILE), e.g. the hub's DATA_DIR/tls/ca.crt"
        )
    if "WRONG_VERSION_NUMBER" in text:
        return f"{url} does not speak TLS: use http:// for this hub, or start it with --tls"
    return f"the hub refused the TLS connection ({text[:200]}); check the client certificate"


def resolve_target(url: str | None, token: str | None) -> tuple[str, str | None]:
    """Find the hub URL and token: arguments, then CPNET_HUB / CPNET_TOKEN, then the config file.

    The file's token is only used with the file's hub: a token is never sent to a hub it was not
    saved for just because another URL was given on the command line or in the environment.
    Both are checked (check_hub_url, check_token); the error says where a bad one came from.
    """
    url_from = token_from = ""
    if not url and os.environ.get("CPNET_HUB"):
        url, url_from = os.environ["CPNET_HUB"], "in CPNET_HUB"
    if not token and os.environ.get("CPNET_TOKEN"):
        token, token_from = os.environ["CPNET_TOKEN"], "in CPNET_TOKEN"
    if url and token:
        return check_hub_url(url, url_from), check_token(token, token_from)
    saved = read_config()
    path = config_path()
    saved_hub = normalise_url(str(saved["hub"])) if saved.get("hub") else None
    if url:
        hub = check_hub_url(url, url_from)
    elif saved_hub:
        hub = check_hub_url(str(saved["hub"]), f"in {path}")
    else:
        hub = DEFAULT_HUB
    if not token and saved.get("token") and (saved_hub is None or saved_hub == hub):
        token, token_from = str(saved["token"]), f"in {path}"
    return hub, check_token(token, token_from) if token else None


def load_jwks(source: str, *, timeout: float = 10.0) -> dict:
    """A JWKS (``{"keys": [...]}``) from a local file, or fetched from an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            response = httpx.get(source, timeout=timeout, follow_redirects=True)
        except httpx.TransportError as err:
            raise HubUnavailable(f"cannot fetch keys from {source}: {err}") from None
        if response.is_error:
            raise error_from_response(response)
        text = response.text
    else:
        try:
            text = Path(source).expanduser().read_text()
        except OSError as err:
            raise BadRequest(f"cannot read keys from {source}: {err}", code="bad_keys") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise BadRequest(f"{source} is not JSON: {err}", code="bad_keys") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise BadRequest(f"{source} is not a JWKS (expected {{'keys': [...]}})", code="bad_keys")
    return data


# ---- the client -------------------------------------------------------------------------------


def _pairs(items: Mapping[str, str] | Iterable[str] | None) -> list[str]:
    """Labels or tags as a list of ``k=v`` strings, from a dict or from ``k=v`` strings."""
    if items is None:
        return []
    if isinstance(items, Mapping):
        return [f"{k}={v}" for k, v in items.items()]
    return [str(i) for i in items]


def _validated(spec: TaskSpec | Mapping[str, Any]) -> TaskSpec:
    """A task spec as the model, or BadRequest naming the first bad field."""
    if isinstance(spec, TaskSpec):
        return spec
    try:
        return TaskSpec.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BadRequest(
            f"invalid task spec: {loc or 'spec'}: {first['msg']}",
            code="invalid_spec",
            field=loc or None,
        ) from None


def _spec_body(spec: TaskSpec | Mapping[str, Any]) -> dict[str, Any]:
    return _validated(spec).model_dump(mode="json", exclude_none=True)


def _when(at: datetime | str) -> str:
    """A time for a query: ISO 8601 with a zone (a datetime without one is taken as UTC)."""
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.isoformat()


def _seg(value: str) -> str:
    """One URL path segment (ids are URL-safe already; this keeps a stray '/' from escaping, and
    '.' or '..' from being read as a relative path to another endpoint)."""
    value = str(value)
    if not value:
        raise BadRequest("an empty id was given", code="invalid", field="id")
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    """A 429's `Retry-After` in seconds (its delta-seconds form), or None if absent or odd."""
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if 0 <= value <= 3600 else None


def retry_window(value: float | str | None = None) -> float:
    """The retry window in seconds: `value`, else CPNET_RETRY_WINDOW_S, else 30; BadSetting if it
    is not a number of seconds >= 0."""
    where = "retry_window_s"
    if value is None:
        value = os.environ.get(RETRY_WINDOW_ENV) or None
        where = RETRY_WINDOW_ENV
    if value is None:
        return DEFAULT_RETRY_WINDOW_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise BadSetting(
            f"{where} is {value!r}, not a number of seconds >= 0; give e.g. 30 "
            "(how long to keep retrying while the hub is unreachable), or 0 to fail at once",
            code="bad_setting",
            field=where,
        )
    return seconds


def _name_unknown(err: httpx.TransportError) -> bool:
    """True when the hub's host name does not exist (a typo, not a restart): not worth retrying."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return seen.errno == socket.EAI_NONAME
        seen = seen.__cause__ or seen.__context__
    return False


class Client:
    """A connection to one hub: typed methods for tasks, discovery, identifiers and admin.

    ``url`` and ``token`` default to CPNET_HUB / CPNET_TOKEN, then to the config file
    (``~/.config/cpnet/config.toml``, or CPNET_CONFIG); a URL or token no request could carry is
    refused here with BadSetting. ``timeout`` bounds each request.

    While the hub is unreachable (refused connections, resets: a restart), each call keeps
    retrying with backoff for up to ``retry_window_s`` seconds from its first failure (default:
    CPNET_RETRY_WINDOW_S, else 30; 0 fails at once) and then raises HubUnavailable. A call is
    sent again after a failure that may have reached the hub only if the hub treats it as
    idempotent (reads, submit with its idempotency key, cancel, ...); a connection that was never
    made is retried for every call. An outage (a refused connection, or a call failing twice in
    a row) is announced once, as ``on_retry(message)``, or else as a warning of the
    ``cpnet.client`` logger.

    ``ca_file`` is a PEM file of the CA that signed the hub's certificate, for a hub serving
    HTTPS with a private CA (default: CPNET_CA_FILE; without it the system's and certifi's
    roots); ``cert`` a (certificate, key) pair of PEM files for mutual TLS (agents).

    ``transport`` replaces httpx's network transport, e.g. with one that injects network faults
    in tests. Use it as a context manager, or call close().
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_window_s: float | None = None,
        on_retry: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.url, self.token = resolve_target(url, token)
        self.ca_file = ca_file or os.environ.get("CPNET_CA_FILE") or None
        self.cert = cert
        self.retry_window_s = retry_window(retry_window_s)
        self._on_retry = on_retry
        # The retry policy's knobs that only a subclass changes (SiteClient: an agent retries
        # every failure, 5xx answers too, until it is stopped).
        self._backoff_max_s = BACKOFF_MAX_S
        self._retry_server_errors = False  # a 5xx answer is retried like an unreachable hub
        self._retryable: tuple[type[httpx.TransportError], ...] = _RETRYABLE
        self._stop: threading.Event | None = None  # set: stop retrying, raise Stopped
        self._outage = False  # a retry notice was given and no request has succeeded since
        self._long_polls = True  # the hub can hold GET /v1/tasks/{id} (wait_s); False once refused
        self._outage_lock = threading.Lock()
        headers = {"User-Agent": f"cpnet-sdk/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._transport = transport
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=tls_context(self.ca_file, self.cert),
        )

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, token={'set' if self.token else 'none'})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()

    # -- transport ------------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, idempotent: bool | None = None, **kw: Any
    ) -> httpx.Response:
        """Send one request and return the response, retrying while the hub is unreachable.

        `idempotent` (default: by method) says whether the request may be sent again after a
        failure that may have reached the hub; one that never connected is always retried.
        """
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        deadline: float | None = None  # set by the first failure
        pause = BACKOFF_S
        while True:
            if self._stop is not None and self._stop.is_set():
                raise Stopped("stopping: no more requests to the hub", code="stopped")
            try:
                response = self._http.request(method, path, **kw)
            except self._retryable as err:
                if _tls_refused(err):  # retrying cannot help: say what to fix now
                    raise BadSetting(_tls_advice(self.url, err)) from None
                now = time.monotonic()
                retried = deadline is not None
                if deadline is None:
                    deadline = now + self.retry_window_s
                if not (idempotent or isinstance(err, _NOT_SENT)):
                    raise self._unavailable(err, maybe_sent=True) from None
                if now >= deadline or _name_unknown(err):
                    raise self._unavailable(err, retried=retried) from None
                # Said at once when no connection could be made; after a reset only from the
                # second failure on (a lone one, say of a keep-alive connection the hub had just
                # closed, passes at the first retry and is no news).
                if retried or isinstance(err, _NOT_SENT):
                    self._announce(type(err).__name__)
            except httpx.TransportError as err:
                raise self._unavailable(err) from None
            else:
                if response.status_code == 429:
                    wait = _retry_after(response)
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.retry_window_s
                    # A 429 means the hub did nothing: any call may be sent again, once the
                    # hub's Retry-After has passed, while that is within the retry window.
                    if wait is not None and now + wait <= deadline:
                        log.info("rate limited by the hub; retrying in %.1f s", wait)
                        self._pause(wait)
                        continue
                    return response
                retry = (self._retry_server_errors and response.status_code >= 500) or (
                    idempotent and response.status_code in _GATEWAY_ERRORS
                )
                if not retry:
                    if self._outage:
                        with self._outage_lock:
                            self._outage = False
                    return response
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_window_s
                if now >= deadline:
                    return response  # the caller raises the hub's own error
                self._announce(f"HTTP {response.status_code}")
            self._pause(min(pause * random.uniform(0.5, 1.0), deadline - now))
            pause = min(pause * 2, self._backoff_max_s)

    def _pause(self, seconds: float) -> None:
        """Wait between tries (cut short when the client is stopped)."""
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _announce(self, what: str) -> None:
        """Say once per outage that calls are being retried (`what` went wrong)."""
        with self._outage_lock:
            if self._outage:
                return
            self._outage = True
        until = (
            "until it answers"
            if math.isinf(self.retry_window_s)
            else f"for up to {self.retry_window_s:g} s"
        )
        message = f"hub at {self.url} unreachable ({what}); retrying {until}…"
        if self._on_retry is not None:
            self._on_retry(message)
        else:
            log.warning("%s", message)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request (see _send) and return its JSON answer, or raise its error."""
        response = self._send(method, path, params=params, json=body, idempotent=idempotent)
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> Any:
        """A response's JSON, or the SDK's error for it (its status, or not JSON at all)."""
        if response.is_error:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError:
            request = response.request
            raise CpnetError(
                f"the hub answered {request.method} {request.url.path} with something that is "
                f"not JSON; is {self.url} a cpnet hub?",
                status=response.status_code,
                code="bad_response",
            ) from None

    def _unavailable(
        self, err: httpx.TransportError, *, retried: bool = False, maybe_sent: bool = False
    ) -> HubUnavailable:
        """The error for a hub that cannot be reached, saying what to try."""
        retries = f"; retried for {self.retry_window_s:g} s" if retried else ""
        if isinstance(err, httpx.TimeoutException):
            what = f"the hub at {self.url} did not answer in time ({type(err).__name__}{retries})"
        else:
            what = f"cannot reach the hub at {self.url} ({type(err).__name__}: {err}{retries})"
        if maybe_sent:
            return HubUnavailable(
                f"{what}; the request may have reached the hub, so it was not sent again: "
                "check whether it took effect before repeating it",
                code="hub_unavailable",
            )
        return HubUnavailable(
            f"{what}: is the hub running at {self.url}? start it with `cpnet hub`, "
            "or point --hub / CPNET_HUB at the right one",
            code="hub_unavailable",
        )

    def _model(self, model: type[M], data: Any, what: str) -> M:
        """Validate a hub answer against the SDK's model, blaming a version mismatch if it fails."""
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise self._mismatch(what, err) from None

    def _models(self, model: type[M], data: Any, key: str, what: str) -> list[M]:
        """Validate a ``{key: [...]}`` list answer."""
        items = data.get(key) if isinstance(data, dict) else None
        try:
            return TypeAdapter(list[model]).validate_python(items)
        except ValidationError as err:
            raise self._mismatch(what, err) from None

    def _mismatch(self, what: str, err: ValidationError) -> CpnetError:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return CpnetError(
            f"the hub's answer to {what} does not match this SDK ({loc}: {first['msg']}); "
            "are the hub and this cpnet the same version?",
            code="bad_response",
        )

    # -- blobs (the hub's small content-addressed store) -----------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store `data` in the hub's blob store; return its ``cpnet://blobs/<sha256>`` URL, usable
        as a task input's ``url`` (content-addressed: storing the same bytes again is a no-op)."""
        response = self._send("PUT", "/v1/blobs", content=data)  # the same bytes: a no-op
        if response.is_error:
            raise error_from_response(response)
        return str(response.json()["url"])

    def get_blob(self, sha256: str) -> bytes:
        """The bytes of the blob with this sha256 (or ``cpnet://blobs/<sha256>`` URL)."""
        sha = sha256.removeprefix("cpnet://blobs/").removeprefix("sha256:")
        response = self._send("GET", f"/v1/blobs/{_seg(sha)}")
        if response.is_error:
            raise error_from_response(response)
        return response.content

    # -- hub and identity -----------------------------------------------------------------------

    def health(self) -> dict:
        """The hub's liveness: ``{"status": "ok", "version", "authority"}``."""
        return self._request("GET", "/v1/health")

    def whoami(self) -> WhoAmI:
        """Who the token belongs to: role, organisation, user or site."""
        return self._model(WhoAmI, self._request("GET", "/v1/whoami"), "GET /v1/whoami")

    def keys(self) -> dict:
        """The hub's public signing keys as a JWKS, for verifying resolution records offline."""
        return self._request("GET", "/.well-known/cpnet/keys.json")

    def resolve(self, id: str) -> dict:
        """The signed envelope ``{"record", "signature"}`` for a compute identifier."""
        return self._request("GET", f"/v1/resolve/{_seg(id)}")

    # -- tasks ----------------------------------------------------------------------------------

    def submit(self, spec: TaskSpec | Mapping[str, Any]) -> TaskView:
        """Create a task; safe to retry: a spec without an idempotency key gets a fresh one."""
        spec = _validated(spec)
        if spec.idempotency_key is None:
            # Generated once, before the first try, so every retry carries the same key and the
            # hub answers a repeat with the task it already created.
            spec = spec.model_copy(update={"idempotency_key": uuid.uuid4().hex})
        body = spec.model_dump(mode="json", exclude_none=True)
        data = self._request("POST", "/v1/tasks", body=body, idempotent=True)
        return self._model(TaskView, data, "POST /v1/tasks")

    def submit_many(
        self,
        specs: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        chunk_size: int = MAX_BATCH,
        on_chunk: Callable[[int], None] | None = None,
    ) -> list[BatchItem]:
        """Create many tasks through ``POST /v1/tasks:batch``, in chunks of at most `chunk_size`
        items (and about 900 KB of JSON); the results in `specs`' order, ``index`` counting
        across chunks. Each item stands alone: an invalid one comes back with its own 4xx
        (``error``) and the others are created. Safe to retry: an item without an idempotency
        key gets a fresh one first, so a chunk sent again finds its tasks (status 200).
        `on_chunk(n)` is called after each chunk with the items it held (for progress bars)."""
        items: list[dict[str, Any]] = []
        for spec in specs:
            body = (
                spec.model_dump(mode="json", exclude_none=True)
                if isinstance(spec, TaskSpec)
                else dict(spec)
            )
            body.setdefault("idempotency_key", uuid.uuid4().hex)
            items.append(body)
        out: list[BatchItem] = []
        chunk: list[dict[str, Any]] = []
        size = 0

        def send() -> None:
            data = self._request("POST", "/v1/tasks:batch", body={"tasks": chunk}, idempotent=True)
            got = self._model(BatchResult, data, "POST /v1/tasks:batch")
            base = len(out)
            for r in got.results:
                error = r.error
                local = f"tasks.{r.index}"
                if error is not None and base and error.field and error.field.startswith(local):
                    # the field as it names the item among all of `specs`, not its chunk
                    moved = f"tasks.{base + r.index}"
                    error = error.model_copy(
                        update={
                            "field": moved + error.field[len(local) :],
                            "message": error.message.replace(local, moved, 1),
                        }
                    )
                out.append(r.model_copy(update={"index": base + r.index, "error": error}))
            if on_chunk is not None:
                on_chunk(len(chunk))

        for body in items:
            n = len(json.dumps(body, separators=(",", ":")))
            if chunk and (len(chunk) >= chunk_size or size + n > BATCH_BYTES):
                send()
                chunk, size = [], 0
            chunk.append(body)
            size += n
        if chunk:
            send()
        return out

    def task(
        self,
        id: str,
        *,
        full: bool = False,
        wait_s: float = 0.0,
        state: State | str | None = None,
    ) -> TaskView:
        """One task as the hub shows it to its owner; `full` adds per-transfer records.

        With ``wait_s`` (at most 60) the hub holds the answer until the task is no longer in
        ``state`` (without ``state``: until it has ended) or ``wait_s`` has passed."""
        params: dict[str, Any] = {"view": "full"} if full else {}
        kw: dict[str, Any] = {}
        if wait_s > 0:
            params["wait_s"] = f"{wait_s:g}"
            if state is not None:
                params["state"] = str(state)
            kw["timeout"] = self._http.timeout.read + wait_s if self._http.timeout.read else None
        r = self._answer(self._send("GET", f"/v1/tasks/{_seg(id)}", params=params or None, **kw))
        return self._model(TaskView, r, "GET task")

    def tasks(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        name_prefix: str | None = None,
        tags: Mapping[str, str] | Iterable[str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of the caller's tasks, newest first; pass ``next_cursor`` on for the next."""
        states = [state] if isinstance(state, str) else [str(s) for s in state or ()]
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = [str(s).upper() for s in states]
        if name_prefix:
            params["name_prefix"] = name_prefix
        if tags:
            params["tag"] = _pairs(tags)
        if cursor:
            params["cursor"] = cursor
        data = self._request("GET", "/v1/tasks", params=params)
        return self._model(TaskPage, data, "GET /v1/tasks")

    def iter_tasks(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        name_prefix: str | None = None,
        tags: Mapping[str, str] | Iterable[str] | None = None,
        page_size: int = 100,
    ) -> Iterator[TaskView]:
        """Every matching task, newest first, fetching pages as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = self.tasks(
                state=state, name_prefix=name_prefix, tags=tags, limit=page_size, cursor=cursor
            )
            yield from page.tasks
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, id: str) -> TaskView:
        """Ask the hub to cancel a task; returns it (CANCELING or CANCELED, or already ended)."""
        # Idempotent at the hub: cancelling a CANCELING or ended task changes nothing.
        data = self._request("POST", f"/v1/tasks/{_seg(id)}/cancel", idempotent=True)
        return self._model(TaskView, data, "POST cancel")

    def logs(self, id: str) -> dict:
        """Executor stdout/stderr tails and system logs, per attempt."""
        return self._request("GET", f"/v1/tasks/{_seg(id)}/logs")

    def events(self, id: str) -> list[TaskEvent]:
        """The task's state changes, oldest first."""
        data = self._request("GET", f"/v1/tasks/{_seg(id)}/events")
        return self._models(TaskEvent, data, "events", "GET events")

    def explain(self, id: str) -> dict:
        """Why the task went where it did: ranked placements and rejected pools with reasons."""
        return self._request("GET", f"/v1/tasks/{_seg(id)}/explain")

    def wait(
        self,
        id: str,
        timeout: float | None = None,
        poll: float = 0.2,
        *,
        on_update: Callable[[TaskView], None] | None = None,
    ) -> TaskView:
        """Follow a task until it reaches a terminal state and return it.

        Each call after the first is a long poll (``task(wait_s=…, state=…)``): the hub answers
        as soon as the task moves, so a state change is seen at once and an idle wait costs
        one request every WAIT_LONG_POLL_S. A hub too old for that is polled instead, every
        ``poll`` seconds at first, slowing to at most every WAIT_POLL_MAX_S (or ``poll``, if
        larger). ``on_update`` sees every view fetched. Raises WaitTimeout after ``timeout``
        seconds (None waits for ever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, ceiling = poll, max(poll, WAIT_POLL_MAX_S)
        seen: State | None = None  # the state of the last view
        while True:
            view = None
            left = None if deadline is None else deadline - time.monotonic()
            if seen is not None and self._long_polls and (left is None or left > 0.05):
                wait = WAIT_LONG_POLL_S if left is None else min(WAIT_LONG_POLL_S, left)
                try:
                    view = self.task(id, wait_s=wait, state=seen)
                except BadRequest as err:
                    if "wait_s" not in str(err):
                        raise
                    self._long_polls = False  # a hub from before long polls: poll it
            if view is None:
                view = self.task(id)
            if on_update is not None:
                on_update(view)
            if view.state.terminal:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"task {id} is still {view.state} after {timeout:g}s",
                    code="wait_timeout",
                )
            if seen is not None and not self._long_polls:  # polling: pause before looking again
                pause = interval
                if deadline is not None:
                    pause = max(0.0, min(pause, deadline - time.monotonic()))
                time.sleep(pause)
                interval = min(interval * 1.5, ceiling)
            seen = view.state

    # -- discovery ------------------------------------------------------------------------------

    def pools(
        self,
        *,
        type: str | None = None,
        region: str | None = None,
        accelerator: str | None = None,
        min_gpus: int | None = None,
        min_cores: float | None = None,
        min_memory_gb: float | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        online: bool | Literal["any"] = True,
        profile: str | None = None,
        min_scu: float | None = None,
    ) -> list[PoolRecord]:
        """Pools matching every given filter; the capacity filters apply to *free* capacity.

        ``region`` is a prefix of the region code, ``accelerator`` a case-insensitive substring
        of the model, ``online="any"`` includes pools that stopped heartbeating. With a workload
        ``profile`` each pool carries its SCU rate and price per SCU-hour, and ``min_scu`` keeps
        pools rated at least that many SCU.
        """
        params: dict[str, Any] = {
            "online": online if online == "any" else ("true" if online else "false"),
        }
        for key, value in (
            ("type", type),
            ("region", region),
            ("accelerator", accelerator),
            ("min_gpus", min_gpus),
            ("min_cores", min_cores),
            ("min_memory_gb", min_memory_gb),
            ("profile", profile),
            ("min_scu", min_scu),
        ):
            if value is not None:
                params[key] = value
        if labels:
            params["label"] = _pairs(labels)
        data = self._request("GET", "/v1/pools", params=params)
        return self._models(PoolRecord, data, "pools", "GET /v1/pools")

    def pool(self, id: str) -> PoolRecord:
        """One pool's record, online or not."""
        return self._model(PoolRecord, self._request("GET", f"/v1/pools/{_seg(id)}"), "GET pool")

    def request_measurement(self, pool_id: str) -> float:
        """Ask a pool's agent to probe it again; returns the request time (epoch seconds)."""
        # Asking twice still asks for one measurement: safe to send again.
        data = self._request("POST", f"/v1/pools/{_seg(pool_id)}/measure", idempotent=True)
        return float(data["requested_at"])

    # -- the market: prices and quotes -----------------------------------------------------------

    def prices(self, *, at: datetime | str | None = None) -> list[PoolPrices]:
        """Every live pool's prices at ``at`` (default now): on-demand and spot."""
        params = {"at": _when(at)} if at is not None else None
        data = self._request("GET", "/v1/prices", params=params)
        return self._models(PoolPrices, data, "pools", "GET /v1/prices")

    def pool_prices(
        self, pool_id: str, *, at: datetime | str | None = None, history: bool = False
    ) -> PoolPrices:
        """One pool's prices at ``at``, with the entries in force then (or every entry ever
        published, with ``history``)."""
        params: dict[str, Any] = {}
        if at is not None:
            params["at"] = _when(at)
        if history:
            params["history"] = "true"
        data = self._request("GET", f"/v1/pools/{_seg(pool_id)}/prices", params=params or None)
        return self._model(PoolPrices, data, "GET pool prices")

    def set_prices(self, pool_id: str, entries: Iterable[Mapping[str, Any]]) -> PoolPrices:
        """Publish price book entries for a pool (its provider's admins); each is kept as
        history. Not sent again once it may have reached the hub (it appends)."""
        body = {"entries": list(entries)}
        data = self._request("POST", f"/v1/pools/{_seg(pool_id)}/prices", body=body)
        return self._model(PoolPrices, data, "POST pool prices")

    def quote(
        self, spec: TaskSpec | Mapping[str, Any], *, options: int | None = None
    ) -> QuoteRecord:
        """A binding quote for a task spec: the feasible pools ranked by its objective, each
        with price, predicted completion and SLA score, valid until ``valid_until``."""
        body = _spec_body(spec)
        params = {"options": options} if options is not None else None
        data = self._request("POST", "/v1/quotes", params=params, body=body, idempotent=True)
        return self._model(QuoteRecord, data, "POST /v1/quotes")

    def get_quote(self, quote_id: str) -> QuoteRecord:
        """A quote of your organisation, and the task that used it, if any."""
        data = self._request("GET", f"/v1/quotes/{_seg(quote_id)}")
        return self._model(QuoteRecord, data, "GET quote")

    # -- SLAs and reputation --------------------------------------------------------------------

    def sla(self, pool_id: str) -> PoolSla:
        """A pool's SLA terms and their history, its newest evaluated windows (evidence,
        credits) and its reputation."""
        data = self._request("GET", f"/v1/pools/{_seg(pool_id)}/sla")
        return self._model(PoolSla, data, "GET pool sla")

    def set_sla(
        self,
        pool_id: str,
        *,
        availability: float | None = None,
        max_queue_wait_s: float | None = None,
        success_rate: float | None = None,
        window_s: float | None = None,
        credit_percent: float | None = None,
    ) -> PoolSla:
        """Declare a pool's SLA terms (its provider's admins); kept as history. Terms left out
        are not promised; window and credit default to the hub's (24 h, 10 %)."""
        body: dict[str, Any] = {}
        for key, value in (
            ("availability", availability),
            ("max_queue_wait_s", max_queue_wait_s),
            ("success_rate", success_rate),
            ("window_s", window_s),
            ("credit_percent", credit_percent),
        ):
            if value is not None:
                body[key] = value
        data = self._request("PUT", f"/v1/pools/{_seg(pool_id)}/sla", body=body)
        return self._model(PoolSla, data, "PUT pool sla")

    def reputations(self) -> list[ReputationRecord]:
        """Every pool's reputation score with its evidence, best first."""
        data = self._request("GET", "/v1/reputation")
        return self._models(ReputationRecord, data, "pools", "GET /v1/reputation")

    def reputation(self, pool_id: str) -> ReputationRecord:
        """One pool's reputation score with its evidence."""
        data = self._request("GET", f"/v1/pools/{_seg(pool_id)}/reputation")
        return self._model(ReputationRecord, data, "GET pool reputation")

    # -- the market: auctions and leases ---------------------------------------------------------

    def create_auction(
        self,
        *,
        start: datetime | str,
        end: datetime | str,
        max_price: str,
        resources: Mapping[str, Any],
        units: int = 1,
        bids_close_at: datetime | str | None = None,
        min_sla: float | None = None,
        regions: Iterable[str] = (),
        providers: Iterable[str] = (),
    ) -> AuctionRecord:
        """Post a request for capacity: ``units`` × ``resources`` (cpu_cores, ram_gb, disk_gb,
        gpus, gpu_model) from ``start`` to ``end``, at most ``max_price`` ("12.50") per hour for
        the whole request. Not sent again once it may have reached the hub."""
        body = {
            "resources": dict(resources),
            "units": units,
            "start": _when(start),
            "end": _when(end),
            "max_price": max_price,
            "min_sla": min_sla,
            "bids_close_at": None if bids_close_at is None else _when(bids_close_at),
            "regions": list(regions),
            "providers": list(providers),
        }
        data = self._request("POST", "/v1/auctions", body=body)
        return self._model(AuctionRecord, data, "POST /v1/auctions")

    def auctions(
        self, *, state: str | None = None, limit: int | None = None
    ) -> list[AuctionRecord]:
        """The requests you may see (yours; open ones and those you bid on, for providers)."""
        params = {k: v for k, v in {"state": state, "limit": limit}.items() if v is not None}
        data = self._request("GET", "/v1/auctions", params=params or None)
        return self._models(AuctionRecord, data, "auctions", "GET /v1/auctions")

    def auction(self, auction_id: str) -> AuctionRecord:
        path = f"/v1/auctions/{_seg(auction_id)}"
        return self._model(AuctionRecord, self._request("GET", path), f"GET {path}")

    def bid(self, auction_id: str, pool_id: str, price: str) -> BidRecord:
        """A sealed bid of ``price`` ("9.00") per hour for the whole request on your pool; a
        new bid for the same pool replaces the old one until the close."""
        path = f"/v1/auctions/{_seg(auction_id)}/bids"
        body = {"pool_id": pool_id, "price": price}
        data = self._request("POST", path, body=body, idempotent=True)
        return self._model(BidRecord, data, f"POST {path}")

    def close_auction(self, auction_id: str) -> AuctionRecord:
        """Close a request's bids now and award it."""
        path = f"/v1/auctions/{_seg(auction_id)}/close"
        return self._model(AuctionRecord, self._request("POST", path), f"POST {path}")

    def set_bid_rule(
        self,
        pool_id: str,
        factor: float = 1.0,
        *,
        min_price: str | None = None,
        max_price: str | None = None,
    ) -> BidRuleRecord:
        """Let the hub bid for your pool at each close: its on-demand price × ``factor``."""
        path = f"/v1/pools/{_seg(pool_id)}/bid-rule"
        body = {"factor": factor, "min_price": min_price, "max_price": max_price}
        data = self._request("PUT", path, body=body, idempotent=True)
        return self._model(BidRuleRecord, data, f"PUT {path}")

    def leases(self, *, state: str | None = None, limit: int | None = None) -> list[LeaseRecord]:
        """The leases your organisation holds or provides."""
        params = {k: v for k, v in {"state": state, "limit": limit}.items() if v is not None}
        data = self._request("GET", "/v1/leases", params=params or None)
        return self._models(LeaseRecord, data, "leases", "GET /v1/leases")

    def cancel_lease(self, lease_id: str) -> LeaseRecord:
        """End a lease early: pay what elapsed; the rest of its hold is released."""
        path = f"/v1/leases/{_seg(lease_id)}"
        return self._model(LeaseRecord, self._request("DELETE", path), f"DELETE {path}")

    # -- the network map ------------------------------------------------------------------------

    def network(self) -> NetworkRecord:
        """The network map: every known pair with its RTT, bandwidth and each figure's source."""
        return self._model(NetworkRecord, self._request("GET", "/v1/network"), "GET /v1/network")

    def estimate_transfer(self, src: str, dst: str, nbytes: int) -> EstimateRecord:
        """How long ``nbytes`` take from place ``src`` to ``dst`` (``hub``, ``site:<id>``,
        ``url:<scheme>://<host>``), with the figures used and where each came from."""
        params = {"src": src, "dst": dst, "bytes": nbytes}
        data = self._request("GET", "/v1/network/estimate", params=params)
        return self._model(EstimateRecord, data, "GET /v1/network/estimate")

    def set_link(
        self,
        a: str,
        b: str,
        *,
        rtt_ms: float | None = None,
        mbps: float | None = None,
        egress_per_gb: float = 0.0,
        currency: str = "CNY",
    ) -> LinkRecord:
        """Declare the link between two places (admins); replaces an earlier declaration."""
        body = {
            "a": a,
            "b": b,
            "rtt_ms": rtt_ms,
            "mbps": mbps,
            "egress_per_gb": egress_per_gb,
            "currency": currency,
        }
        data = self._request("PUT", "/v1/network/links", body=body, idempotent=True)
        return self._model(LinkRecord, data, "PUT /v1/network/links")

    def remove_link(self, a: str, b: str) -> LinkRecord:
        """Forget a declared link (admins)."""
        data = self._request("DELETE", "/v1/network/links", params={"a": a, "b": b})
        return self._model(LinkRecord, data, "DELETE /v1/network/links")

    def match_hardware(self, model: str, kind: str = "accelerator") -> dict:
        """The hardware catalogue entry a model string matches (NotFound when none does)."""
        params = {"model": model, "kind": kind}
        return self._request("GET", "/v1/catalogue/match", params=params)

    # -- the market: accounts, bills, the ledger ------------------------------------------------

    def account(self, org_id: str) -> AccountSummary:
        """An organisation's balance, held money, credit and spending limits (minor units)."""
        path = f"/v1/accounts/{_seg(org_id)}"
        return self._model(AccountSummary, self._request("GET", path), f"GET {path}")

    def topup(
        self, org_id: str, amount: str, *, transfer_id: str | None = None, memo: str = ""
    ) -> AccountSummary:
        """Fund an organisation with `amount` major units ("1000.00"); admin only. Give a
        `transfer_id` to make a retry safe (the same id never funds twice)."""
        path = f"/v1/accounts/{_seg(org_id)}/topups"
        body = {
            "amount": amount,
            "memo": memo,
            "transfer_id": transfer_id or f"top_{uuid.uuid4().hex}",
        }
        data = self._request("POST", path, body=body, idempotent=True)
        return self._model(AccountSummary, data, f"POST {path}")

    def set_limits(
        self,
        org_id: str,
        *,
        credit_limit: str | None = None,
        monthly: str | None = None,
        user_id: str | None = None,
        remove_monthly: bool = False,
    ) -> AccountSummary:
        """Set an organisation's credit limit and monthly spending limits; admin only."""
        path = f"/v1/accounts/{_seg(org_id)}/limits"
        body = {
            "credit_limit": credit_limit,
            "monthly": monthly,
            "user_id": user_id,
            "remove_monthly": remove_monthly,
        }
        data = self._request("PUT", path, body=body, idempotent=True)
        return self._model(AccountSummary, data, f"PUT {path}")

    def audit_records(
        self,
        org_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
    ) -> Iterator[AuditRecordOut]:
        """Audit records concerning an organisation (None: yours; an admin's None: every
        organisation's), from `since` (inclusive) to `until` (exclusive), oldest first."""
        params: dict[str, Any] = {"limit": page_size}
        if org_id:
            params["org"] = org_id
        if since is not None:
            params["since"] = since.isoformat()
        if until is not None:
            params["until"] = until.isoformat()
        while True:
            page = self._model(
                AuditPage, self._request("GET", "/v1/audit", params=params), "GET /v1/audit"
            )
            yield from page.records
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor

    def audit_verify(self) -> AuditVerify:
        """Verify the hub's whole audit chain (admins)."""
        return self._model(
            AuditVerify, self._request("GET", "/v1/audit/verify"), "GET /v1/audit/verify"
        )

    def quota(self, org_id: str) -> QuotaView:
        """An organisation's quotas (None: no limit) and its use now."""
        path = f"/v1/accounts/{_seg(org_id)}/quota"
        return self._model(QuotaView, self._request("GET", path), f"GET {path}")

    def set_quota(
        self,
        org_id: str,
        *,
        queued: int | None = None,
        cores: float | None = None,
        gpus: int | None = None,
    ) -> QuotaView:
        """Set an organisation's quotas (admin): queued tasks, and cores and GPUs of its queued
        and running tasks together; None is no limit (all None removes the quotas)."""
        path = f"/v1/accounts/{_seg(org_id)}/quota"
        body = {"queued": queued, "cores": cores, "gpus": gpus}
        data = self._request("PUT", path, body=body, idempotent=True)
        return self._model(QuotaView, data, f"PUT {path}")

    def bill(self, org_id: str, period: str) -> Bill:
        """An organisation's bill for a month ("2026-12"), itemised per charged attempt."""
        path = f"/v1/accounts/{_seg(org_id)}/bill"
        data = self._request("GET", path, params={"period": period})
        return self._model(Bill, data, f"GET {path}")

    def task_usage(self, task_id: str) -> UsageList:
        """Every signed usage record received about a task's attempts, with its verdict."""
        path = f"/v1/tasks/{_seg(task_id)}/usage"
        return self._model(UsageList, self._request("GET", path), f"GET {path}")

    def site_usage(self, site_id: str, limit: int = 100) -> UsageList:
        """The newest usage records a site's agent sent, with their verdicts (its provider)."""
        path = f"/v1/sites/{_seg(site_id)}/usage"
        data = self._request("GET", path, params={"limit": limit})
        return self._model(UsageList, data, f"GET {path}")

    def post_correction(
        self,
        kind: str,
        debit: str,
        credit: str,
        amount: str,
        *,
        transfer_id: str,
        task_id: str | None = None,
        memo: str = "",
    ) -> Posted:
        """Post a correction (refund, credit or adjust: a new transfer); admin only. The same
        `transfer_id` with the same content is a no-op, with other content a Conflict."""
        body = {
            "id": transfer_id,
            "kind": kind,
            "debit": debit,
            "credit": credit,
            "amount": amount,
            "task_id": task_id,
            "memo": memo,
        }
        data = self._request("POST", "/v1/ledger/transfers", body=body, idempotent=True)
        return self._model(Posted, data, "POST /v1/ledger/transfers")

    def ledger_check(self) -> LedgerCheck:
        """Check the books on the hub; admin only."""
        return self._model(LedgerCheck, self._request("GET", "/v1/ledger/check"), "ledger check")

    # -- admin: organisations, users, tokens ----------------------------------------------------

    def create_org(self, name: str) -> OrgRecord:
        """Create an organisation (a tenant); admin only."""
        data = self._request("POST", "/v1/orgs", body={"name": name})
        return self._model(OrgRecord, data, "POST /v1/orgs")

    def orgs(self) -> list[OrgRecord]:
        """All organisations; admin only."""
        return self._models(OrgRecord, self._request("GET", "/v1/orgs"), "orgs", "GET /v1/orgs")

    def create_user(
        self, org_id: str, name: str, role: str = "user"
    ) -> tuple[UserRecord, IssuedToken]:
        """Create a user in an organisation; returns the user and its first token (shown once)."""
        data = self._request(
            "POST", "/v1/users", body={"org_id": org_id, "name": name, "role": str(role)}
        )
        data = data if isinstance(data, dict) else {}
        user = self._model(UserRecord, data.get("user"), "POST /v1/users")
        token = self._model(IssuedToken, data.get("token"), "POST /v1/users")
        return user, token

    def create_token(self, name: str = "", *, user_id: str | None = None) -> IssuedToken:
        """A new API token for yourself, or (admins) for ``user_id``; the secret is shown once."""
        body: dict[str, Any] = {"name": name}
        if user_id:
            body["user_id"] = user_id
        data = self._request("POST", "/v1/tokens", body=body)
        return self._model(IssuedToken, data, "POST /v1/tokens")

    def tokens(self) -> list[TokenRecord]:
        """The tokens the caller may see (their secrets are never shown again)."""
        data = self._request("GET", "/v1/tokens")
        return self._models(TokenRecord, data, "tokens", "GET /v1/tokens")

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token at once; returns its record with ``revoked_at`` set."""
        data = self._request("DELETE", f"/v1/tokens/{_seg(token_id)}")
        return self._model(TokenRecord, data, "DELETE token")

    # -- admin: providers, sites, pools ---------------------------------------------------------

    def create_provider(self, name: str, *, org_id: str | None = None) -> ProviderRecord:
        """Create a provider (in ``org_id``, or the caller's organisation)."""
        body: dict[str, Any] = {"name": name}
        if org_id:
            body["org_id"] = org_id
        # The hub returns the existing provider of that name: safe to send again.
        data = self._request("POST", "/v1/providers", body=body, idempotent=True)
        return self._model(ProviderRecord, data, "POST /v1/providers")

    def providers(self) -> list[ProviderRecord]:
        """The providers the caller may see."""
        data = self._request("GET", "/v1/providers")
        return self._models(ProviderRecord, data, "providers", "GET /v1/providers")

    def create_site(
        self,
        provider_id: str,
        name: str,
        *,
        type: str = "general",
        region_code: str,
        region_name: str = "",
        lat: float | None = None,
        lon: float | None = None,
    ) -> SiteRecord:
        """Create a site (one scheduler, one agent) under a provider."""
        body: dict[str, Any] = {
            "provider_id": provider_id,
            "name": name,
            "type": str(type),
            "region_code": region_code,
            "region_name": region_name,
        }
        if lat is not None:
            body["lat"] = lat
        if lon is not None:
            body["lon"] = lon
        # The hub returns the provider's existing site of that name: safe to send again.
        data = self._request("POST", "/v1/sites", body=body, idempotent=True)
        return self._model(SiteRecord, data, "POST /v1/sites")

    def sites(self) -> list[SiteRecord]:
        """The sites the caller may see."""
        return self._models(SiteRecord, self._request("GET", "/v1/sites"), "sites", "GET /v1/sites")

    def create_site_token(self, site_id: str, name: str = "") -> IssuedToken:
        """An agent token bound to one site (what `cpnet agent --token` takes); shown once."""
        data = self._request("POST", f"/v1/sites/{_seg(site_id)}/tokens", body={"name": name})
        return self._model(IssuedToken, data, "POST site token")

    def site_certificates(self, site_id: str) -> list[dict]:
        """The client certificates the hub's CA issued to a site's agent (mutual TLS)."""
        data = self._request("GET", f"/v1/sites/{_seg(site_id)}/certificates")
        return list(data["certificates"])  # type: ignore[index]

    def revoke_site(self, site_id: str) -> dict:
        """Revoke a site's client certificates and agent tokens: its agent is refused from the
        next request on, and needs a new token to join again."""
        path = f"/v1/sites/{_seg(site_id)}/certificates/revoke"
        return dict(self._request("POST", path))  # type: ignore[call-overload]

    def retire_pool(self, pool_id: str) -> PoolRecord:
        """Retire a pool for good: it leaves discovery and its id resolves to a tombstone."""
        data = self._request("DELETE", f"/v1/pools/{_seg(pool_id)}")
        return self._model(PoolRecord, data, "DELETE pool")
