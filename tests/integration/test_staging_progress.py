"""Staging progress and per-transfer records end to end: a real hub, a real agent (local
backend) and real transfers from an HTTP server that holds a download half-way until the test
has seen the hub report it (no timing assertions: the server waits on the test)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.model import MAX_TRANSFERS
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB
HALF = len(BIG) // 2


class StandinThrottledServer:
    """An HTTP file server (test stand-in for a data source) that sends the first half of
    ``/big.bin`` and then waits until `release` is set before sending the rest."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if not self.path.startswith("/big.bin"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BIG)))
                self.end_headers()
                try:
                    self.wfile.write(BIG[:HALF])
                    self.wfile.flush()
                    if owner.release.wait(120):  # never hangs the suite
                        self.wfile.write(BIG[HALF:])
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (a failing test): its assertion says why

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def throttled() -> Iterator[StandinThrottledServer]:
    srv = StandinThrottledServer()
    yield srv
    srv.close()


def _cli(hub: HubProc, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env |= {"CPNET_HUB": hub.url, "CPNET_TOKEN": token, "COLUMNS": "250", "HOME": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-m", "cpnet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_progress_mid_transfer_and_transfer_records(
    hub: HubProc, agents: list, tmp_path: Path, throttled: StandinThrottledServer
) -> None:
    world = make_world(hub, {"gz": ("general", "440100")})
    agent = AgentProc(hub, world.site_tokens["gz"], tmp_path / "agent", [pool("cpu", cores=2)])
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool to appear")

    sha = hashlib.sha256(BIG).hexdigest()
    # Credentials and a query in the URL: they must reach the server, never the hub's records.
    url = f"http://alice:s3cret@127.0.0.1:{throttled.port}/big.bin?token=hunter2"
    out_dir = tmp_path / "results"
    script = (
        "import hashlib\n"
        "data = open('data/big.bin', 'rb').read()\n"
        "open('digest.txt', 'w').write(hashlib.sha256(data).hexdigest())\n"
    )
    task = user.submit(
        {
            "name": "progress",
            "inputs": [
                {"path": "note.txt", "content": "hello"},
                {"path": "data/big.bin", "url": url, "sha256": sha},
            ],
            "outputs": [
                {"path": "digest.txt", "url": f"file://{out_dir}/digest.txt"},
                {"path": "data/big.bin", "url": "cpnet://blobs/"},
            ],
            "executors": [{"command": [sys.executable, "-c", script]}],
            "max_attempts": 1,
        }
    )

    # The server holds the download at half: the hub shows the attempt staging that file.
    def mid_transfer():  # type: ignore[no-untyped-def]
        view = user.task(task.id)
        p = view.attempts[-1].progress if view.attempts else None
        return p if p is not None and p.path == "data/big.bin" and p.file_bytes > 0 else None

    p = wait_until(mid_transfer, 60, "progress of data/big.bin at the hub", every=0.2)
    assert p.phase == "staging_in"
    assert p.items_total == 2 and p.items_done == 1  # the inline note is in, the big file not
    assert 0 < p.file_bytes <= HALF
    assert p.file_total == len(BIG)  # from Content-Length
    assert p.bytes_done == len(b"hello") + p.file_bytes
    assert p.at is not None
    assert user.task(task.id).state in (State.QUEUED, State.INITIALIZING)

    # The same, readable, from the CLI (and in its JSON).
    shown = _cli(hub, world.user_token, "status", task.id)
    assert "staging in 1/2 inputs" in shown, shown
    assert "now data/big.bin:" in shown and "of 4.0 MiB" in shown, shown
    data = json.loads(_cli(hub, world.user_token, "status", task.id, "--json"))
    got = data["task"]["attempts"][-1]["progress"]
    assert got["phase"] == "staging_in" and got["file_total"] == len(BIG)
    assert got["path"] == "data/big.bin" and 0 < got["file_bytes"] <= HALF

    # ...and to GA4GH TES clients, as the attempt's metadata (a map of strings).
    tes_url = f"{hub.url}/ga4gh/tes/v1/tasks/{task.id}"
    auth = {"authorization": f"Bearer {world.user_token}"}
    tes_log = httpx.get(tes_url, params={"view": "BASIC"}, headers=auth).json()["logs"][-1]
    tes_progress = json.loads(tes_log["metadata"]["cpnet.progress"])
    assert tes_progress["path"] == "data/big.bin" and tes_progress["file_total"] == len(BIG)

    throttled.release.set()
    done = user.wait(task.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    assert (out_dir / "digest.txt").read_text() == sha

    basic = done.attempts[-1]
    assert basic.progress is None  # it ended
    assert basic.transfers is None  # the basic view leaves the records out

    full = user.task(task.id, full=True).attempts[-1]
    assert full.transfers is not None
    moved = [(t.direction, t.path) for t in full.transfers]
    assert moved == [
        ("in", "note.txt"),
        ("in", "data/big.bin"),
        ("out", "digest.txt"),
        ("out", "data/big.bin"),
    ]
    note, big_in, digest, big_out = full.transfers
    assert note.url == "(inline content)" and note.size_bytes == 5
    assert note.sha256 == hashlib.sha256(b"hello").hexdigest() and not note.sha256_verified
    assert big_in.size_bytes == len(BIG) and big_in.sha256 == sha and big_in.sha256_verified
    assert big_in.url == f"http://127.0.0.1:{throttled.port}/big.bin"
    assert big_in.seconds > 0
    assert digest.size_bytes == len(sha) and digest.url == f"file://{out_dir}/digest.txt"
    assert digest.sha256 == hashlib.sha256(sha.encode()).hexdigest()
    assert not digest.sha256_verified  # a copy to a path: hashed, checked against nothing
    assert big_out.url == f"cpnet://blobs/{sha}" and big_out.sha256_verified  # the hub agreed
    assert full.transfers_omitted is None
    assert full.usage is not None
    assert full.usage.bytes_in == sum(t.size_bytes for t in full.transfers if t.direction == "in")
    assert full.usage.bytes_out == sum(t.size_bytes for t in full.transfers if t.direction == "out")
    assert throttled.requests == ["/big.bin?token=hunter2"]  # one download, not resumed

    # `cpnet status` lists them; --json has them all.
    shown = _cli(hub, world.user_token, "status", task.id)
    assert "transfers" in shown and "verified" in shown and "4.0 MiB" in shown, shown
    data = json.loads(_cli(hub, world.user_token, "status", task.id, "--json"))
    assert [t["path"] for t in data["task"]["attempts"][-1]["transfers"]] == [
        "note.txt",
        "data/big.bin",
        "digest.txt",
        "data/big.bin",
    ]
    tes_full = httpx.get(tes_url, params={"view": "FULL"}, headers=auth).json()["logs"][-1]
    assert "cpnet.progress" not in tes_full["metadata"]  # it ended
    tes_moved = json.loads(tes_full["metadata"]["cpnet.transfers"])
    assert [(t["path"], t["size_bytes"]) for t in tes_moved][1] == ("data/big.bin", len(BIG))
    tes_basic = httpx.get(tes_url, params={"view": "BASIC"}, headers=auth).json()["logs"][-1]
    assert "cpnet.transfers" not in tes_basic["metadata"]
    everything = json.dumps(data["task"]["attempts"])  # (the spec has the URL as given)
    assert "s3cret" not in everything and "hunter2" not in everything

    _hostile_updates(hub, world.site_ids["gz"], world.site_tokens["gz"], basic.attempt_id)
    # None of it reached the attempt: its records are still those the agent sent.
    after = user.task(task.id, full=True).attempts[-1]
    assert after.transfers == full.transfers and after.progress is None


def _hostile_updates(hub: HubProc, site_id: str, token: str, attempt_id: str) -> None:
    """What an agent may send is bounded: bad values get a 4xx naming the field."""
    url = f"{hub.url}/v1/sites/{site_id}/updates"
    auth = {"authorization": f"Bearer {token}"}
    base = {"attempt_id": attempt_id, "state": "COMPLETE", "at": "2026-01-01T00:00:00Z"}
    rec = {"direction": "in", "url": "http://x/y", "path": "a", "size_bytes": 1, "seconds": 0.1}
    cases = {
        "transfers.0.size_bytes": {**base, "transfers": [{**rec, "size_bytes": -1}]},
        "transfers.0.seconds": {**base, "transfers": [{**rec, "seconds": -3}]},
        "transfers.0.path": {**base, "transfers": [{**rec, "path": "p" * 5000}]},
        "transfers.0.url": {**base, "transfers": [{**rec, "url": "http://h/" + "u" * 5000}]},
        "transfers.0.sha256": {**base, "transfers": [{**rec, "sha256": "not hex"}]},
        "transfers.0.direction": {**base, "transfers": [{**rec, "direction": "sideways"}]},
        "transfers": {**base, "transfers": [rec] * (MAX_TRANSFERS + 1)},
        "transfers_omitted": {**base, "transfers_omitted": -5},
        "progress.bytes_done": {
            **base,
            "state": "RUNNING",
            "progress": {"phase": "staging_in", "bytes_done": -1},
        },
        "progress.file_bytes": {
            **base,
            "state": "RUNNING",
            "progress": {"phase": "staging_in", "file_bytes": 2**70},
        },
        "progress.phase": {**base, "state": "RUNNING", "progress": {"phase": "sleeping"}},
        "progress": {  # more done than there is
            **base,
            "state": "RUNNING",
            "progress": {"phase": "staging_out", "items_done": 3, "items_total": 2},
        },
    }
    for field, update in cases.items():
        r = httpx.post(url, json={"updates": [update]}, headers=auth)
        assert r.status_code == 422, (field, r.text)
        err = r.json()["error"]
        assert err["field"] == f"updates.0.{field}", (field, err)
    # A body over the hub's limit is refused before it is read.
    huge = {**base, "transfers": [{**rec, "path": "p" * 4000}] * 300}
    r = httpx.post(url, json={"updates": [huge]}, headers=auth)
    assert r.status_code == 413, r.text


@pytest.mark.s3
def test_s3_transfer_records(hub: HubProc, agents: list, tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="cpnet-test",
        aws_secret_access_key="cpnet-test-secret",
    )
    bucket = f"cpnet-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    data = b"ACGT" * 300_000  # 1.2 MB
    s3.put_object(Bucket=bucket, Key="in/reads.txt", Body=data)
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f"in/dir/{name}.txt", Body=name.encode() * 10)

    world = make_world(hub, {"gz": ("general", "440100")})
    keys = {"s3_access_key_id": "cpnet-agent", "s3_secret_access_key": "cpnet-agent-secret"}
    agent = AgentProc(
        hub,
        world.site_tokens["gz"],
        tmp_path / "agent",
        [pool("cpu", cores=2)],
        options={"s3_endpoint": s3_endpoint, **keys},
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool to appear")
    sha = hashlib.sha256(data).hexdigest()
    task = user.submit(
        {
            "inputs": [
                {"path": "reads.txt", "url": f"s3://{bucket}/in/reads.txt#sha256={sha}"},
                {"path": "dir", "url": f"s3://{bucket}/in/dir", "type": "DIRECTORY"},
            ],
            "outputs": [{"path": "reads.txt", "url": f"s3://{bucket}/out/reads.txt"}],
            "executors": [{"command": ["true"]}],
            "max_attempts": 1,
        }
    )
    done = user.wait(task.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    recs = user.task(task.id, full=True).attempts[-1].transfers or []
    got = [(t.direction, t.url, t.size_bytes, t.files, t.sha256_verified) for t in recs]
    assert got == [
        ("in", f"s3://{bucket}/in/reads.txt", len(data), 1, True),  # the #sha256 fragment
        ("in", f"s3://{bucket}/in/dir", 30, 3, False),
        ("out", f"s3://{bucket}/out/reads.txt", len(data), 1, False),
    ]
    assert recs[0].sha256 == sha and recs[2].sha256 == sha


def progress_on_any_backend(  # type: ignore[no-untyped-def]
    user, source: StandinThrottledServer, pools: int, agent: AgentProc | None = None
) -> None:
    """Submit a task whose input `source` holds half-way; see the hub report that download,
    release it, and see the task complete with its transfer record (any backend whose runner
    writes status.json: the agent's poll reads it the same way)."""
    wait_until(lambda: len(user.pools()) == pools, 60, f"{pools} pools")
    t = user.submit(
        {
            "inputs": [{"path": "big.bin", "url": f"http://127.0.0.1:{source.port}/big.bin"}],
            "executors": [{"command": ["true"]}],
            "max_attempts": 1,
        }
    )

    def mid_transfer():  # type: ignore[no-untyped-def]
        view = user.task(t.id)
        p = view.attempts[-1].progress if view.attempts else None
        return p if p is not None and p.file_bytes > 0 else None

    try:
        p = wait_until(mid_transfer, 90, "progress of big.bin at the hub", every=0.2)
    except AssertionError as exc:  # say where the task got to, and what the agent saw
        view = user.task(t.id, full=True)
        attempts = [(a.state, a.system_logs) for a in view.attempts or []]
        log = agent.log if agent is not None else None
        tail = log.read_text(errors="replace")[-4000:] if log is not None else ""
        raise AssertionError(
            f"{exc}\ntask {view.state}: {attempts}\nsource requests: {source.requests}\n{tail}"
        ) from None
    assert (p.phase, p.path, p.file_total) == ("staging_in", "big.bin", len(BIG))
    assert 0 < p.file_bytes <= HALF
    source.release.set()
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, done.reason
    (rec,) = user.task(t.id, full=True).attempts[-1].transfers or []
    assert (rec.path, rec.size_bytes, rec.sha256_verified) == ("big.bin", len(BIG), False)


@pytest.mark.ray
def test_progress_from_a_ray_job(
    hub: HubProc,
    agents: list,
    tmp_path: Path,
    ray_address: str,
    throttled: StandinThrottledServer,
) -> None:
    world = make_world(hub, {"ai": ("intelligent", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["ai"],
        tmp_path / "agent-ai",
        backend="ray",
        options={"ray_address": ray_address},
        heartbeat_s=3.0,  # a Ray agent's heartbeat asks Ray for its nodes: slow on a busy machine
    )
    agent.start()
    agents.append(agent)
    progress_on_any_backend(hub.client(world.user_token), throttled, pools=2, agent=agent)
