"""The hub's blob store: ``PUT``/``POST /v1/blobs`` (store bytes, get their sha256) and
``GET /v1/blobs/{sha256}``.

Who may do what: any valid token (a user's, an admin's or an agent's site token) may store a blob
and read one by its sha256. Blobs are addressed by content, not owned: knowing a blob's hash is
what lets one read it, so the store is for task inputs and outputs, not for secrets (see
docs/staging.md). Sizes are capped by the hub's ``max_blob_bytes`` (413 names the limit).
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from cpnet.api.deps import caller
from cpnet.api.errors import error_body
from cpnet.auth.model import Principal
from cpnet.errors import Invalid, NotFound
from cpnet.hub.blobs import BLOB_URL_PREFIX, SHA_RE, BlobCorrupt, BlobStore, BlobTooLarge

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


def store(request: Request) -> BlobStore:
    return request.app.state.blobs


def too_large(limit: int) -> JSONResponse:
    message = (
        f"blob over the hub's limit of {limit} bytes (max_blob_bytes); put larger files in "
        "object storage (s3://) and pass their URL"
    )
    return JSONResponse(error_body("too_large", message, "body", limit=limit), status_code=413)


async def _put(request: Request, blobs: BlobStore) -> JSONResponse:
    expected = request.query_params.get("sha256")
    if expected is not None and not SHA_RE.match(expected.lower()):
        raise Invalid("sha256 must be 64 hex digits", field="sha256")
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
    request: Request, who: Principal = Depends(caller), blobs: BlobStore = Depends(store)
) -> JSONResponse:
    """Store the request body as a blob; answers its sha256 and ``cpnet://blobs/`` URL.

    Optional ``?sha256=<hex>``: refuse (400) if the body hashes to something else.
    """
    return await _put(request, blobs)


@router.post("", status_code=201)
async def post_blob(
    request: Request, who: Principal = Depends(caller), blobs: BlobStore = Depends(store)
) -> JSONResponse:
    """The same as ``PUT /v1/blobs``."""
    return await _put(request, blobs)


@router.get("/{sha256}")
async def get_blob(
    sha256: str, who: Principal = Depends(caller), blobs: BlobStore = Depends(store)
) -> FileResponse:
    """The blob's bytes (Range requests work); 404 when the hub has no such blob."""
    sha = sha256.lower().removeprefix("sha256:")
    if not SHA_RE.match(sha):
        raise Invalid("a blob is named by 64 hex digits of its sha256", field="sha256")
    try:
        path = await to_thread.run_sync(blobs.open_verified, sha)
    except BlobCorrupt:
        raise NotFound(
            f"blob {sha} was damaged on the hub's disk and has been removed; upload it again",
            field="sha256",
        ) from None
    if path is None:
        raise NotFound(f"no blob {sha} on this hub; upload it with PUT /v1/blobs", field="sha256")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"etag": f'"{sha}"', "cache-control": "private, max-age=31536000, immutable"},
    )
