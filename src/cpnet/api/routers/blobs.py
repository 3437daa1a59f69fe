"""The hub's blob store: ``PUT``/``POST /v1/blobs`` (store bytes, get their sha256) and
``GET /v1/blobs/{sha256}``.

Who may do what (store/blobs.py has the rule): every valid token may store a blob; storing grants
the uploader's organisation the right to read it. An agent stores a task's output with
``?attempt_id=`` (an attempt on its own site), which grants the task's organisation. Reading needs
a grant (users), an unfinished attempt on the agent's site of a granted organisation's task
(agents), or the admin role; anything else is the same 404 as a missing blob, so a hash reveals
nothing. Sizes are capped by the hub's ``max_blob_bytes`` (413 names the limit).

Blobs are encrypted on disk (hub/blobs.py): a GET verifies the whole blob, then streams the
decrypted bytes. One byte range is served (``Range: bytes=a-b``, ``a-``, ``-n``, guarded by
``If-Range`` with the ETag), as agents resume downloads with; several ranges get the whole blob.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from cpnet.api.deps import caller, hub
from cpnet.api.errors import error_body
from cpnet.api.limits import TooLarge
from cpnet.auth.model import Principal, Role
from cpnet.errors import DomainError, Invalid, NotFound
from cpnet.hub.blobs import (
    BLOB_URL_PREFIX,
    SHA_RE,
    BlobCorrupt,
    BlobKeyMismatch,
    BlobStore,
    BlobTooLarge,
)
from cpnet.hub.service import Hub
from cpnet.store import blobs as grants

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


def store(request: Request) -> BlobStore:
    return request.app.state.blobs


class WrongKey(DomainError):
    """The hub's key file is not the one its blobs were written with: a configuration fault,
    not the caller's (the blob is kept)."""

    status = 500
    code = "blob_key_mismatch"


RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """A Range that starts at or past the end of the blob (416)."""


def byte_range(
    range_: str | None, if_range: str | None, etag: str, size: int
) -> tuple[int, int] | None:
    """The one byte range [start, end) the request asks for, or None for the whole blob (no
    Range, an If-Range that is not our ETag, several ranges or a malformed one: RFC 9110 lets a
    server answer those with the whole representation). Raises Unsatisfiable."""
    if range_ is None or (if_range is not None and if_range.strip() != etag):
        return None
    m = RANGE_RE.match(range_.strip().replace(" ", ""))
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(size - n, 0), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, size if last == "" else min(int(last) + 1, size)


def too_large(limit: int) -> TooLarge:
    message = (
        f"blob over the hub's limit of {limit} bytes (max_blob_bytes); put larger files in "
        "object storage (s3://) and pass their URL"
    )
    return TooLarge(limit, message)  # read reliably by a client still sending (api/limits.py)


def _grantee(h: Hub, who: Principal, attempt_id: str | None) -> str:
    """The organisation an upload by `who` is granted to."""
    if who.role is not Role.AGENT:
        return who.org_id
    if not attempt_id:
        raise Invalid(
            "an agent stores a blob for an attempt: add ?attempt_id=<the attempt's id>",
            field="attempt_id",
        )
    with h.store.read() as s:
        org = grants.attempt_org(s, attempt_id, who.site_id or "")
    if org is None:
        raise NotFound(f"no attempt {attempt_id} on this agent's site", field="attempt_id")
    return org


# The query parameters of PUT/POST (declared, so unknown ones are refused: api/query.py).
Sha256 = Annotated[str | None, Query(description="refuse (400) a body hashing to anything else")]
AttemptId = Annotated[str | None, Query(description="agents: the attempt the blob is output of")]


async def _put(
    request: Request,
    who: Principal,
    h: Hub,
    blobs: BlobStore,
    expected: str | None,
    attempt_id: str | None,
) -> Response:
    if expected is not None and not SHA_RE.match(expected.lower()):
        raise Invalid("sha256 must be 64 hex digits", field="sha256")
    org = await to_thread.run_sync(_grantee, h, who, attempt_id)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > blobs.max_bytes:
        return too_large(blobs.max_bytes)
    writer = await to_thread.run_sync(blobs.writer)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
        sha, new = await to_thread.run_sync(writer.commit)
    except BlobTooLarge:
        writer.abort()
        return too_large(blobs.max_bytes)
    except BaseException:
        writer.abort()
        raise
    if expected is not None and expected.lower() != sha:
        raise Invalid(
            f"the body hashes to sha256 {sha}, not {expected.lower()} (the stored blob is kept "
            "under its real hash)",
            field="sha256",
        )

    def record() -> None:
        with h.store.tx() as s:
            grants.grant(s, sha, org, time.time())

    await to_thread.run_sync(record)
    body = {
        "sha256": sha,
        "digest": f"sha256:{sha}",
        "url": BLOB_URL_PREFIX + sha,
        "size_bytes": writer.size,
        "created": new,
    }
    return JSONResponse(body, status_code=201 if new else 200)


@router.put("", status_code=201)
async def put_blob(
    request: Request,
    sha256: Sha256 = None,
    attempt_id: AttemptId = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
    blobs: BlobStore = Depends(store),
) -> Response:
    """Store the request body as a blob; answers its sha256 and ``cpnet://blobs/`` URL.

    Optional ``?sha256=<hex>``: refuse (400) if the body hashes to something else. Agents add
    ``?attempt_id=`` (the blob is a task's output; the task's organisation may read it).
    """
    return await _put(request, who, h, blobs, sha256, attempt_id)


@router.post("", status_code=201)
async def post_blob(
    request: Request,
    sha256: Sha256 = None,
    attempt_id: AttemptId = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
    blobs: BlobStore = Depends(store),
) -> Response:
    """The same as ``PUT /v1/blobs``."""
    return await _put(request, who, h, blobs, sha256, attempt_id)


@router.get("/{sha256}")
async def get_blob(
    sha256: str,
    request: Request,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
    blobs: BlobStore = Depends(store),
) -> Response:
    """The blob's bytes (Range requests work); 404 when the hub has no such blob, or none this
    token may read."""
    sha = sha256.lower().removeprefix("sha256:")
    if not SHA_RE.match(sha):
        raise Invalid("a blob is named by 64 hex digits of its sha256", field="sha256")

    def allowed() -> bool:
        with h.store.read() as s:
            return grants.may_read(s, who, sha)

    if not await to_thread.run_sync(allowed):
        raise NotFound(
            f"no blob {sha} that this token may read (upload it with PUT /v1/blobs)",
            field="sha256",
        )
    try:  # decrypts and hashes the whole blob before a byte of it is sent
        blob = await to_thread.run_sync(blobs.open, sha)
    except BlobCorrupt:
        raise NotFound(
            f"blob {sha} was damaged on the hub's disk and has been removed; upload it again",
            field="sha256",
        ) from None
    except BlobKeyMismatch:
        raise WrongKey(
            f"blob {sha} was stored under another key than this hub's key file "
            "(CPNET_SECRETS_KEY_FILE or DATA_DIR/secrets.key must be the key the blob store "
            "was written with); the blob is kept"
        ) from None
    if blob is None:
        raise NotFound(
            f"no blob {sha} that this token may read (upload it with PUT /v1/blobs)",
            field="sha256",
        )
    etag = f'"{sha}"'
    headers = {
        "etag": etag,
        "cache-control": "private, max-age=31536000, immutable",
        "accept-ranges": "bytes",
        "last-modified": formatdate(blob.mtime, usegmt=True),
    }
    try:
        wanted = byte_range(
            request.headers.get("range"), request.headers.get("if-range"), etag, blob.size
        )
    except Unsatisfiable:
        blob.close()
        return JSONResponse(
            error_body("range_not_satisfiable", f"the blob has {blob.size} bytes"),
            status_code=416,
            headers={"content-range": f"bytes */{blob.size}"},
        )
    start, end, status = 0, blob.size, 200
    if wanted is not None:
        start, end, status = *wanted, 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{blob.size}"
    headers["content-length"] = str(end - start)
    # The body decrypts again as it goes (a sync iterator: Starlette runs it in a thread) and
    # closes the file at its end; the background task closes it too if the body never started.
    return StreamingResponse(
        blob.stream(start, end),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
        background=BackgroundTask(blob.close),
    )
