"""``http://`` and ``https://`` URLs: a streamed GET in (resumable), a PUT out.

Downloads go through download.py's part file: a dropped connection is continued with ``Range``
and ``If-Range`` (a strong ETag, else Last-Modified), so a changed source starts over instead of
being spliced. Uploads are one PUT with an explicit ``Content-Length`` (pre-signed URLs refuse
chunked ones). httpx is imported only when a transfer runs: the runner must start fast.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from cpnet.agent.jobfile import OutputFileLog
from cpnet.agent.staging.download import Body, Opener, Restart, Transient, content_range, fetch
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.landing import CHUNK_BYTES, measured
from cpnet.agent.staging.records import sent_progress
from cpnet.agent.staging.scheme import Scheme
from cpnet.agent.staging.urls import shown

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from typing import Any

    from cpnet.agent.staging.context import Context

MAX_REDIRECTS = 5


class Http(Scheme):
    """Plain HTTP(S) URLs, pre-signed ones included: one file each, no directories."""

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        return get(url, {}, dest, what, sha, self.ctx)

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        size, sha = measured(src, what, self.ctx.budget)
        send(src, url, size, self.ctx.timeout_s, {}, sent_progress(self.ctx.progress, what, size))
        self.ctx.budget.add(size)
        return OutputFileLog(url=url, path=what, size_bytes=size, sha256=sha)


def get(
    url: str, headers: dict[str, str], dest: Path, what: str, sha: str | None, ctx: Context
) -> tuple[int, str, int]:
    """Download `url` (sending `headers`) to `dest`, resumably; (size, sha256, resumed from)."""
    return fetch(_opener(url, ctx.timeout_s, headers), url, dest, what, sha, ctx)


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
) -> Any:
    """PUT the file at `url` (with an explicit length: pre-signed URLs refuse chunked uploads);
    return the response."""
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.put(
                url, content=_chunks(src, sent), headers={**headers, "Content-Length": str(size)}
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
