"""How far an attempt got, as the local backend's poll reports it (what the agent sends the
hub): the phase, the inputs/executors/outputs done, the file under way; and the per-transfer
records once it ended. An upload is held half-way by the receiving server until the test saw it
(no timing assertions)."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.backends.workdir import progress_from_record
from cpnet.agent.main import TRANSFERS_BUDGET_BYTES, trim_transfers
from cpnet.tasks.model import MAX_TRANSFERS, TransferRecord
from cpnet.tasks.states import State

from .conftest import gate_command, job, wait_final, wait_for

SIZE = 4 * 1024 * 1024


class StandinSlowReceiver:
    """An HTTP server (stand-in for an upload destination) that reads the first MiB of a PUT
    and then waits for `release` before reading the rest."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: dict[str, bytes] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                first = self.rfile.read(min(length, 1024 * 1024))
                owner.release.wait(60)
                owner.got[self.path] = first + self.rfile.read(length - len(first))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[StandinSlowReceiver]:
    r = StandinSlowReceiver()
    yield r
    r.release.set()
    r.server.shutdown()
    r.server.server_close()


def test_phases_and_transfers(
    loopback_backend: LocalBackend, receiver: StandinSlowReceiver, tmp_path: Path
) -> None:
    backend = loopback_backend
    gate = tmp_path / "gate"
    make_big = f"open('big.bin', 'wb').write(bytes(range(256)) * {SIZE // 256})"
    note_sha = hashlib.sha256(b"hello").hexdigest()
    spec = {
        "inputs": [{"path": "note.txt", "content": "hello", "sha256": note_sha}],
        "executors": [
            {"command": [sys.executable, "-c", make_big]},
            {"command": gate_command(gate)},
        ],
        "outputs": [{"path": "big.bin", "url": f"{receiver.url}/up/big.bin?sig=secret"}],
    }
    handle = backend.submit(job(spec))

    def phase(name: str):  # type: ignore[no-untyped-def]
        def check():  # type: ignore[no-untyped-def]
            p = backend.poll(handle).progress
            return p if p is not None and p.phase == name and p.items_done >= 1 else None

        return check

    running = wait_for(phase("running"), what="the first executor to finish")
    assert (running.items_done, running.items_total) == (1, 2)  # the second waits on the gate
    assert running.path is None and running.bytes_done == 0
    assert backend.poll(handle).state is State.RUNNING
    gate.touch()

    def uploading():  # type: ignore[no-untyped-def]
        p = backend.poll(handle).progress
        ok = p is not None and p.phase == "staging_out" and p.file_bytes > 0
        return p if ok else None

    out = wait_for(uploading, what="the upload to be under way")
    assert (out.items_done, out.items_total, out.path) == (0, 1, "big.bin")
    assert out.file_total == SIZE and 0 < out.file_bytes <= SIZE
    assert out.bytes_done == out.file_bytes
    receiver.release.set()

    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assert status.progress is None  # it ended
    big = bytes(range(256)) * (SIZE // 256)
    assert receiver.got["/up/big.bin?sig=secret"] == big
    note, upload = status.transfers
    assert (note.direction, note.path, note.size_bytes) == ("in", "note.txt", 5)
    assert note.sha256 == note_sha and note.sha256_verified  # checked against the given sha256
    assert (upload.direction, upload.path, upload.size_bytes) == ("out", "big.bin", SIZE)
    assert upload.sha256 == hashlib.sha256(big).hexdigest() and not upload.sha256_verified
    assert upload.url == f"{receiver.url}/up/big.bin"  # no query: it may hold a signature


def test_an_executor_cannot_break_the_report_with_a_bad_status_file() -> None:
    record = {"state": "RUNNING", "progress": {"phase": "running", "items_done": -4}}
    assert progress_from_record(record) is None
    record["progress"] = {"phase": "staging_in", "items_total": 2}
    record["staging_progress"] = {"path": "x", "bytes": 7, "total": 9}
    p = progress_from_record(record)
    assert p is not None and (p.path, p.file_bytes, p.file_total, p.bytes_done) == ("x", 7, 9, 7)
    record["state"] = "COMPLETE"
    assert progress_from_record(record) is None


def test_transfer_records_are_trimmed_to_what_one_update_may_carry() -> None:
    def rec(i: int, url_len: int = 20) -> TransferRecord:
        return TransferRecord(
            direction="in", url="http://h/" + "u" * url_len, path=f"f{i}", size_bytes=i, seconds=0
        )

    kept, omitted = trim_transfers([rec(i) for i in range(MAX_TRANSFERS + 5)])
    assert len(kept) == MAX_TRANSFERS and omitted == 5
    long_urls = [rec(i, 4000) for i in range(200)]  # ~800 KiB of JSON
    kept, omitted = trim_transfers(long_urls)
    assert kept == long_urls[: len(kept)] and omitted == 200 - len(kept)
    assert sum(len(r.model_dump_json()) for r in kept) <= TRANSFERS_BUDGET_BYTES
    assert omitted > 0
