"""Resumable downloads against a real HTTP server (on 127.0.0.1) that drops connections.

The server counts the body bytes it actually wrote, so "resumed" is asserted by what went over
the wire, not by what the client says.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cpnet.agent.staging import StagingError, Transfer, stage_in
from cpnet.tasks.model import Input

BODY = bytes(range(256)) * 4096  # 1 MiB, every byte position distinguishable
SHA = hashlib.sha256(BODY).hexdigest()


@dataclass
class Flaky:
    """What the server serves and what it did."""

    body: bytes = BODY
    etag: str = '"v1"'
    drops: list[int] = field(default_factory=list)  # per request: body bytes before hanging up
    ranges: list[str | None] = field(default_factory=list)  # the Range header of each request
    sent: int = 0  # body bytes written, over all requests
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        st: Flaky = self.server.state  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        with st.lock:
            st.ranges.append(header)
            drop = st.drops.pop(0) if st.drops else None
        start = 0
        if header and (self.headers.get("If-Range") in (None, st.etag)):
            start = int(header.removeprefix("bytes=").split("-")[0])
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(st.body) - 1}/{len(st.body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(st.body) - start))
        self.send_header("ETag", st.etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        chunk = st.body[start:] if drop is None else st.body[start : start + drop]
        self.wfile.write(chunk)
        self.wfile.flush()
        with st.lock:
            st.sent += len(chunk)
        if drop is not None:
            self.close_connection = True  # hang up mid-body: the client sees a short read

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def flaky() -> Iterator[tuple[str, Flaky]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = Flaky()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/data.bin", server.state  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_dropped_download_resumes_with_a_range_request(
    flaky: tuple[str, Flaky], tmp_path: Path
) -> None:
    url, st = flaky
    st.drops = [300_000]  # the first response stops after 300 000 bytes
    records: list[Transfer] = []
    n = stage_in(
        [Input(path="d/data.bin", url=url, sha256=SHA)],
        tmp_path,
        max_bytes=10 * len(BODY),
        on_transfer=records.append,
    )
    assert (tmp_path / "d" / "data.bin").read_bytes() == BODY
    assert n == len(BODY)
    assert st.ranges == [None, "bytes=300000-"]
    assert st.sent == len(BODY)  # nothing was sent twice
    assert records[0].resumed_from == 300_000 and records[0].sha256 == SHA
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["data.bin"]  # no .part left


def test_a_later_call_resumes_the_part_file_an_earlier_one_left(
    flaky: tuple[str, Flaky], tmp_path: Path
) -> None:
    url, st = flaky
    st.drops = [123_457]
    inputs = [Input(path="data.bin", url=url, sha256=SHA)]
    with pytest.raises(StagingError, match=r"gave up after 1 tries; 123457 bytes kept"):
        stage_in(inputs, tmp_path, max_bytes=10 * len(BODY), retries=0)
    assert (tmp_path / ".data.bin.part").stat().st_size == 123_457
    assert not (tmp_path / "data.bin").exists()

    records: list[Transfer] = []
    stage_in(inputs, tmp_path, max_bytes=10 * len(BODY), retries=0, on_transfer=records.append)
    assert (tmp_path / "data.bin").read_bytes() == BODY
    assert st.ranges == [None, "bytes=123457-"]
    assert st.sent == len(BODY)
    assert records[0].resumed_from == 123_457


def test_a_changed_source_is_fetched_again_not_spliced(
    flaky: tuple[str, Flaky], tmp_path: Path
) -> None:
    """The part file's ETag goes out as If-Range; the server has a new version and sends it all."""
    url, st = flaky
    st.drops = [100_000]
    with pytest.raises(StagingError, match="kept"):
        stage_in([Input(path="x", url=url)], tmp_path, max_bytes=10 * len(BODY), retries=0)
    st.body, st.etag = b"N" * 200_000, '"v2"'
    st.sent = 0
    stage_in([Input(path="x", url=url)], tmp_path, max_bytes=10 * len(BODY), retries=0)
    assert (tmp_path / "x").read_bytes() == b"N" * 200_000
    assert st.ranges == [None, "bytes=100000-"] and st.sent == 200_000


def test_a_limit_during_download_removes_the_part(flaky: tuple[str, Flaky], tmp_path: Path) -> None:
    url, _st = flaky
    with pytest.raises(StagingError, match=r"over the per-file limit of 1000 bytes"):
        stage_in(
            [Input(path="x", url=url)], tmp_path, max_bytes=10 * len(BODY), max_file_bytes=1000
        )
    assert list(tmp_path.iterdir()) == []
