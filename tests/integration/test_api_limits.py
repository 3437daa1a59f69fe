"""A body over the limit gets a 413 that every client reads, against a real hub.

Before, the hub answered 413 and closed while the client was still sending; the unread bytes made
the close a TCP reset, and a client sending `Connection: close` (urllib, for one) often saw
`connection reset` instead of the answer (3 to 23 in 30 requests of 2 MiB, every one of 8 MiB to
the blob route) — and a streamed (chunked) body over the limit got a 400 `There was an error
parsing the body`. Each case here sends REQUESTS bodies of 2 MiB (the limits
are 1 MiB) with a different client and asserts that every one reads the 413 `too_large` body.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from services import free_port
from tests.integration.procs import HubProc, make_world

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
LIMIT = MiB  # max_body_bytes (the default) and, here, max_blob_bytes
BODY = b"{" + b" " * (2 * MiB) + b"}"
REQUESTS = 30
CHUNK = 64 * 1024
# (method, path, body): the body limit with FastAPI parsing the body, the TES route reading it
# itself, and the blob route that enforces its own limit as the body streams in. The blob route
# answers after an authorisation hop, by when 2 MiB fit in the loopback's socket buffers and the
# client is done sending; 8 MiB keep it sending, as on a real network.
ROUTES = {
    "tasks": ("POST", "/v1/tasks", BODY),
    "tes": ("POST", "/ga4gh/tes/v1/tasks", BODY),
    "blobs": ("PUT", "/v1/blobs", b"b" * (8 * MiB)),
}

Outcome = str  # "413 too_large" when right, else what the client got


@pytest.fixture(scope="module")
def limited_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProc, str]]:
    """A hub whose blob limit is 1 MiB too, and a user token."""
    root: Path = tmp_path_factory.mktemp("limits")
    h = HubProc(root / "hub", free_port(), env={"CPNET_MAX_BLOB_BYTES": str(LIMIT)})
    h.data_dir.mkdir()
    h.init()
    h.start()
    try:
        yield h, make_world(h, {}).user_token
    finally:
        h.kill()


def _judge(status: int, body: bytes) -> Outcome:
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} not the error body: {body[:80]!r}"
    if status == 413 and err["code"] == "too_large" and err.get("limit") == LIMIT:
        return "413 too_large"
    return f"{status} {err.get('code')}"


def _chunks(body: bytes) -> Iterator[bytes]:
    for i in range(0, len(body), CHUNK):
        yield body[i : i + CHUNK]


def _raw(
    url: str, token: str, method: str, path: str, body: bytes, chunked: bool, close: bool
) -> Outcome:
    """A client that sends the whole request, body included, before it reads a byte."""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}"]
    head.append("Content-Type: application/json")
    if close:
        head.append("Connection: close")
    if chunked:
        head.append("Transfer-Encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(body)) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        except OSError as exc:
            return f"send: {type(exc).__name__}"
        resp = http.client.HTTPResponse(s)
        try:
            resp.begin()
            return _judge(resp.status, resp.read())
        except (OSError, http.client.HTTPException) as exc:
            return f"read: {type(exc).__name__}"


def _httpx(url: str, token: str, method: str, path: str, body: bytes, streamed: bool) -> Outcome:
    content = _chunks(body) if streamed else body
    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    try:
        r = httpx.request(method, url + path, content=content, headers=auth, timeout=30)
    except httpx.TransportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return _judge(r.status_code, r.content)


def _urllib(url: str, token: str, method: str, path: str, body: bytes) -> Outcome:
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url + path, data=body, headers=auth, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return _judge(r.status, r.read())
    except urllib.error.HTTPError as exc:
        return _judge(exc.code, exc.read())
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(getattr(exc, 'reason', exc)).__name__}"


# Each is called as client(url, token, method, path, body).
CLIENTS: dict[str, Callable[..., Outcome]] = {
    "httpx-length": partial(_httpx, streamed=False),
    "httpx-streamed": partial(_httpx, streamed=True),
    "raw-length": partial(_raw, chunked=False, close=False),
    "raw-length-close": partial(_raw, chunked=False, close=True),
    "raw-chunked": partial(_raw, chunked=True, close=False),
    "raw-chunked-close": partial(_raw, chunked=True, close=True),
    "urllib": _urllib,  # the standard library's client; it sends `Connection: close`
}


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_client_reads_the_413(limited_hub: tuple[HubProc, str], route: str, client: str):
    hub, token = limited_hub
    method, path, body = ROUTES[route]
    send = CLIENTS[client]
    got = Counter(send(hub.url, token, method, path, body) for _ in range(REQUESTS))
    assert got == {"413 too_large": REQUESTS}, dict(got)


def test_the_raw_client_reads_other_answers(limited_hub: tuple[HubProc, str]):
    """The raw client is sound: under the limit the route answers (here a 422 for the body)."""
    hub, token = limited_hub
    small = b'{"executors": []}'
    for chunked in (False, True):
        got = _raw(hub.url, token, "POST", "/v1/tasks", small, chunked, close=True)
        assert got == "422 validation_error", (chunked, got)


def _headers_only(hub: HubProc, token: str, route: str) -> socket.socket:
    """A connection on which a request announcing its body has sent its headers only."""
    method, path, body = ROUTES[route]
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    return s


def _read_413(s: socket.socket) -> http.client.HTTPResponse:
    resp = http.client.HTTPResponse(s)
    resp.begin()
    assert _judge(resp.status, resp.read()) == "413 too_large"
    return resp


def _wait_eof(s: socket.socket, within: float) -> None:
    """Block until the hub closes the connection cleanly (EOF, not a reset), or fail."""
    deadline = time.monotonic() + within
    try:
        while True:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            if not s.recv(65536):
                return
    except TimeoutError:
        pytest.fail(f"the hub kept the connection open for {within}s after the 413")


@pytest.mark.parametrize("route", ["tasks", "blobs"])
def test_the_413_comes_before_the_body_and_the_close_after_it(
    limited_hub: tuple[HubProc, str], route: str
):
    """Answered before a byte of the body is sent; closed (cleanly) once the body has come."""
    hub, token = limited_hub
    with _headers_only(hub, token, route) as s:
        resp = _read_413(s)
        assert resp.getheader("connection") == "close"
        s.sendall(ROUTES[route][2])  # the hub is still reading it: no reset
        _wait_eof(s, 30)


def test_a_client_that_stops_sending_is_let_go(limited_hub: tuple[HubProc, str]):
    """The hub drains a refused body for a bounded time: a client that announced a body and
    sends none is closed on (after the idle bound, 5 s), not held for the keep-alive time."""
    hub, token = limited_hub
    with _headers_only(hub, token, "tasks") as s:
        _read_413(s)
        _wait_eof(s, 30)
