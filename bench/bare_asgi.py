"""The floor of the HTTP stack: a bare ASGI app under uvicorn, served the way the hub is served.

``python bench/bare_asgi.py PORT`` answers every GET with a small fixed JSON body, using the same
uvicorn settings as ``cpnet.api.app.serve`` (auto event loop and HTTP parser, no access log,
75 s keep-alive), but no FastAPI, no routing, no middleware and no store. ``bench/resolve.py``
loads it side by side with the hub: what the hub achieves over this is what FastAPI and cpnet
cost per request.
"""

from __future__ import annotations

import sys

import uvicorn

BODY = b'{"status":"ok","version":"bench","authority":"cn.dev"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Answer every HTTP request with BODY."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
    )
