"""``http://`` and ``https://`` URLs: a streamed GET in (resumable), a PUT out.

Downloads go through download.py's part file: a dropped connection is continued with ``Range``
and ``If-Range`` (a strong ETag, else Last-Modified), so a changed source starts over instead of
being spliced. Uploads are one PUT with an explicit ``Content-Length`` (pre-signed URLs refuse
chunked ones). httpx is imported only when a transfer runs: the runner must start fast.

Task URLs go through the SSRF guard (guard.py) when the call has a rule (the agent's runner always
passes one, `Remote.url_rule`): each hop is resolved, checked and connected to by address, and
redirects are followed here, one checked hop at a time. The hub's own blob URLs (blobs.py) are the
operator's, not the task's, and go without it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from cpnet.agent.jobfile import OutputFileLog
from cpnet.agent.staging.download import Body, Opener, Restart, Transient, content_range, fetch
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.guard import Unresolved, location, pin
from cpnet.agent.staging.landing import CHUNK_BYTES, measured
from cpnet.agent.staging.records import sent_progress
from cpnet.agent.staging.scheme import Scheme
from cpnet.agent.staging.urls import shown

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from typing import Any

    from cpnet.agent.staging.context import Context
    from cpnet.limits.ssrf import UrlRule

MAX_REDIRECTS = 5


class Http(Scheme):
    """Plain HTTP(S) URLs, pre-signed ones included: one file each, no directories."""

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        return get(url, {}, dest, what, sha, self.ctx, rule=self.ctx.remote.url_rule)

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        size, sha = measured(src, what, self.ctx.budget)
        sent = sent_progress(self.ctx.progress, what, size)
        send(src, url, size, self.ctx.timeout_s, {}, sent, rule=self.ctx.remote.url_rule)
        self.ctx.budget.add(size)
        return OutputFileLog(url=url, path=what, size_bytes=size, sha256=sha)


def get(
    url: str,
    headers: dict[str, str],
    dest: Path,
    what: str,
    sha: str | None,
    ctx: Context,
    rule: UrlRule | None = None,
) -> tuple[int, str, int]:
    """Download `url` (sending `headers`) to `dest`, resumably; (size, sha256, resumed from).
    With a `rule`, every hop passes the SSRF guard."""
    opener = _opener(url, ctx.timeout_s, headers) if rule is None else _guarded(url, ctx, rule)
    return fetch(opener, url, dest, what, sha, ctx)


def _guarded(url: str, ctx: Context, rule: UrlRule) -> Opener:
    """As _opener, each hop resolved, checked against `rule` and connected to by address."""
    import httpx

    @contextlib.contextmanager
    def open_(offset: int, validator: str | None) -> Iterator[Body]:
        h: dict[str, str] = {}
        if offset:
            h["Range"] = f"bytes={offset}-"
            if validator:
                h["If-Range"] = validator
        current = url
        try:
            with httpx.Client(timeout=ctx.timeout_s, follow_redirects=False) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        p = pin(current, rule, "GET")
                    except Unresolved as exc:
                        raise Transient(str(exc)) from exc
                    request = client.build_request(
                        "GET", p.url, headers={**h, **p.headers}, extensions=p.extensions
                    )
                    resp = client.send(request, stream=True)
                    try:
                        if resp.is_redirect:
                            target = location(current, resp)
                            if not target.lower().startswith(("http://", "https://")):
                                raise StagingError(
                                    f"GET {shown(current)}: redirected to a URL that is not "
                                    f"http(s): {shown(target)}"
                                )
                            current = target
                            continue
                        yield _body(current, offset, resp)
                        return
                    finally:
                        resp.close()
                raise StagingError(f"GET {shown(url)}: more than {MAX_REDIRECTS} redirects")
        except httpx.TransportError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise StagingError(f"GET {shown(current)}: {type(exc).__name__}: {exc}") from exc

    return open_


def _opener(url: str, timeout_s: float, headers: dict[str, str]) -> Opener:
    """How to ask for the bytes of `url` from an offset (a download.Opener)."""
    import httpx  # only tasks with http inputs pay for it: the runner must start fast

    @contextlib.contextmanager
    def open_(offset: int, validator: str | None) -> Iterator[Body]:
        h = dict(headers)
        if offset:
            h["Range"] = f"bytes={offset}-"
            if validator:
                h["If-Range"] = validator
        try:
            with (
                httpx.Client(
                    timeout=timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS
                ) as client,
                client.stream("GET", url, headers=h) as resp,
            ):
                yield _body(url, offset, resp)
        except httpx.TransportError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise StagingError(f"GET {shown(url)}: {type(exc).__name__}: {exc}") from exc

    return open_


def _body(url: str, offset: int, resp: Any) -> Body:
    """The body of a GET from `offset`, or why it is no use."""
    if resp.status_code == 416 and offset:
        raise Restart("the server refused the range (416); starting over")
    if not resp.is_success:
        raise StagingError(f"GET {shown(url)}: HTTP {resp.status_code}{error_detail(resp)}")
    start, total = 0, None
    if resp.status_code == 206:
        parsed = content_range(resp.headers.get("content-range"))
        if parsed is None:
            raise StagingError(f"GET {shown(url)}: 206 without a usable Content-Range")
        start, total = parsed
    else:
        declared = resp.headers.get("content-length")
        total = int(declared) if declared and declared.isdigit() else None
    etag = resp.headers.get("etag")
    strong = etag if etag and not etag.startswith("W/") else None
    return Body(
        start,
        total,
        strong or resp.headers.get("last-modified"),
        # as the network delivers: a sized iterator would lose up to a whole chunk when the
        # connection drops (it buffers before yielding)
        resp.iter_bytes(),
    )


def _chunks(src: Path, sent: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """A PUT body: the file in chunks, each reported to `sent` once it went out."""
    done = 0
    with src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk
            done += len(chunk)  # asked for the next chunk: this one went out
            if sent is not None:
                sent(done)


def send(
    src: Path,
    url: str,
    size: int,
    timeout_s: float,
    headers: dict[str, str],
    sent: Callable[[int], None] | None = None,
    rule: UrlRule | None = None,
) -> Any:
    """PUT the file at `url` (with an explicit length: pre-signed URLs refuse chunked uploads);
    return the response. With a `rule`, the target passes the SSRF guard (a PUT follows no
    redirect)."""
    import httpx

    target, extensions, more = url, {}, {}
    if rule is not None:
        try:
            p = pin(url, rule, "PUT")
        except Unresolved as exc:
            raise StagingError(str(exc)) from exc
        target, extensions, more = p.url, p.extensions, p.headers
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.put(
                target,
                content=_chunks(src, sent),
                headers={**headers, **more, "Content-Length": str(size)},
                extensions=extensions,
            )
    except httpx.HTTPError as exc:
        raise StagingError(f"PUT {shown(url)}: {type(exc).__name__}: {exc}") from exc
    if not resp.is_success:
        raise StagingError(f"PUT {shown(url)}: HTTP {resp.status_code}{error_detail(resp)}")
    return resp


def error_detail(resp: Any) -> str:
    """': <message>' from a cpnet-shaped JSON error body (the hub's), else ''; reads at most
    4 KiB of a streamed body."""
    body = b""
    with contextlib.suppress(Exception):
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > 4096:
                return ""
    if not body:
        with contextlib.suppress(Exception):
            body = resp.content[:4096]
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return ": " + str(json.loads(body)["error"]["message"])[:512]
    return ""
