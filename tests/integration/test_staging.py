"""Data staging end to end: hub → agent (local backend) → runner, with a real S3 server
(SeaweedFS) and the hub's own blob store."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cpnet.client import NotFound
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.s3]
MiB = 1024 * 1024
KEYS = {"s3_access_key_id": "cpnet-agent", "s3_secret_access_key": "cpnet-agent-secret"}


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="cpnet-test",
        aws_secret_access_key="cpnet-test-secret",
    )


def test_s3_and_blob_inputs_and_outputs(
    hub: HubProc, agents: list, tmp_path: Path, s3_endpoint: str
) -> None:
    s3 = _s3(s3_endpoint)
    bucket = f"cpnet-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    reads = b"ACGT" * 100_000  # 400 000 bytes
    s3.put_object(Bucket=bucket, Key="in/reads.txt", Body=reads)

    world = make_world(hub, {"gz": ("general", "440100")})
    # The S3 settings come from the agent's options (its environment has no AWS_* keys).
    agent = AgentProc(
        hub,
        world.site_tokens["gz"],
        tmp_path / "agent",
        [pool("cpu", cores=2)],
        options={"s3_endpoint": s3_endpoint, **KEYS},
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool to appear")

    # A user puts a small input in the hub's blob store and refers to it by URL.
    params = b"threshold=7\n"
    blob_url = user.put_blob(params)
    assert blob_url == "cpnet://blobs/" + hashlib.sha256(params).hexdigest()

    script = (
        "import hashlib\n"
        "reads = open('data/reads.txt', 'rb').read()\n"
        "params = open('params.txt', 'rb').read()\n"
        "open('out/summary.txt', 'wb').write(params + hashlib.sha256(reads).hexdigest().encode())\n"
        "open('small.txt', 'wb').write(b'small result')\n"
    )
    task = user.submit(
        {
            "name": "staged",
            "inputs": [
                {
                    "path": "/data/reads.txt",
                    "url": f"s3://{bucket}/in/reads.txt",
                    "sha256": hashlib.sha256(reads).hexdigest(),
                },
                {"path": "params.txt", "url": blob_url},
            ],
            "outputs": [
                {"path": "out/summary.txt", "url": f"s3://{bucket}/out/summary.txt"},
                {"path": "small.txt", "url": "cpnet://blobs/"},
            ],
            "executors": [
                {"command": ["mkdir", "-p", "out"]},
                {"command": [sys.executable, "-c", script]},
            ],
            "max_attempts": 1,
        }
    )
    done = user.wait(task.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)

    summary = params + hashlib.sha256(reads).hexdigest().encode()
    stored = s3.get_object(Bucket=bucket, Key="out/summary.txt")["Body"].read()
    assert stored == summary
    attempt = done.attempts[-1]
    outs = {o.path: o for o in attempt.outputs}
    assert outs["out/summary.txt"].sha256 == hashlib.sha256(stored).hexdigest()
    assert outs["out/summary.txt"].size_bytes == len(summary)
    small_sha = hashlib.sha256(b"small result").hexdigest()
    assert outs["small.txt"].url == f"cpnet://blobs/{small_sha}"
    assert user.get_blob(outs["small.txt"].url) == b"small result"

    assert attempt.usage is not None
    assert attempt.usage.bytes_in == len(reads) + len(params)
    assert attempt.usage.bytes_out == len(summary) + len(b"small result")
    logs = "\n".join(attempt.system_logs)
    assert f"staged in /data/reads.txt from s3://{bucket}/in/reads.txt: 400000 bytes" in logs
    assert f"staged out small.txt to cpnet://blobs/{small_sha}: 12 bytes" in logs

    # A checksum that does not match fails the task with the reason, and nothing runs.
    bad = user.submit(
        {
            "inputs": [
                {"path": "r", "url": f"s3://{bucket}/in/reads.txt", "sha256": "0" * 64},
            ],
            "executors": [{"command": ["touch", "ran"]}],
            "max_attempts": 1,
        }
    )
    failed = user.wait(bad.id, timeout=60)
    assert failed.state is State.SYSTEM_ERROR
    assert failed.reason is not None
    assert f"input 'r': sha256 mismatch: expected {'0' * 64}" in failed.reason
    assert failed.attempts[-1].executor_logs == []

    # A blob of another organisation is not readable by a task of this one, even on a site
    # that runs it: the hub answers 404 and the reason says so.
    other = make_world(hub, {"bj": ("general", "110000")}, org="globex")
    foreign = hub.client(other.user_token).put_blob(b"globex secret")
    stolen = user.submit(
        {
            "inputs": [{"path": "s", "url": foreign}],
            "executors": [{"command": ["true"]}],
            "max_attempts": 1,
        }
    )
    denied = user.wait(stolen.id, timeout=60)
    assert denied.state is State.SYSTEM_ERROR
    assert "HTTP 404: no blob" in (denied.reason or ""), denied.reason
    assert "that this token may read" in (denied.reason or "")

    # An executor plants a symlink where an output should be: refused, nothing uploaded.
    planted = user.submit(
        {
            "outputs": [{"path": "secret.txt", "url": f"s3://{bucket}/out/secret.txt"}],
            "executors": [{"command": ["ln", "-s", "/etc/hostname", "secret.txt"]}],
            "max_attempts": 1,
        }
    )
    refused = user.wait(planted.id, timeout=60)
    assert refused.state is State.SYSTEM_ERROR
    assert "output 'secret.txt'" in (refused.reason or "")
    assert "outside the task's work dir" in (refused.reason or "")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["out/summary.txt"]


def test_blob_api(hub: HubProc) -> None:
    world = make_world(hub, {"gz": ("general", "440100")})
    user = hub.client(world.user_token)
    base = f"{hub.url}/v1/blobs"
    auth = {"authorization": f"Bearer {world.user_token}"}
    data = bytes(range(256)) * 1000
    sha = hashlib.sha256(data).hexdigest()

    assert httpx.put(base, content=b"x").status_code == 401
    r = httpx.post(base, content=data, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "sha256": sha,
        "digest": f"sha256:{sha}",
        "url": f"cpnet://blobs/{sha}",
        "size_bytes": len(data),
        "created": True,
    }
    again = httpx.put(base, content=data, headers=auth)
    assert again.status_code == 200 and again.json()["created"] is False

    # A Range request gets the tail only.
    got = httpx.get(f"{base}/{sha}", headers={**auth, "range": "bytes=1000-"})
    assert got.status_code == 206 and got.content == data[1000:]
    assert httpx.get(f"{base}/{sha}").status_code == 401
    assert user.get_blob(sha) == data

    # Tenant isolation: another organisation's user, and an agent whose site runs nothing of
    # this organisation, get the same 404 as for a blob that does not exist.
    other = make_world(hub, {"bj": ("general", "110000")}, org="globex")
    for token in (other.user_token, world.site_tokens["gz"]):
        hidden = httpx.get(f"{base}/{sha}", headers={"authorization": f"Bearer {token}"})
        assert hidden.status_code == 404, hidden.text
        assert "no blob" in hidden.json()["error"]["message"]
    # ...until they store the same bytes themselves (which proves nothing they did not have).
    other_auth = {"authorization": f"Bearer {other.user_token}"}
    assert httpx.put(base, content=data, headers=other_auth).json()["created"] is False
    assert httpx.get(f"{base}/{sha}", headers=other_auth).content == data
    # Agents store blobs only as an attempt's output.
    agent_put = httpx.put(
        base, content=b"x", headers={"authorization": f"Bearer {world.site_tokens['gz']}"}
    )
    assert agent_put.status_code == 400 and agent_put.json()["error"]["field"] == "attempt_id"
    with pytest.raises(NotFound, match="no blob"):
        user.get_blob("f" * 64)
    bad = httpx.get(f"{base}/not-a-hash", headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "sha256"
    wrong = httpx.put(f"{base}?sha256={'a' * 64}", content=b"abc", headers=auth)
    assert wrong.status_code == 400 and "hashes to sha256" in wrong.json()["error"]["message"]

    # Over the limit (16 MiB by default): 413 naming it, announced or streamed.
    limit = 16 * MiB
    big = httpx.put(base, content=b"z" * (limit + 1), headers=auth)
    assert big.status_code == 413
    assert f"limit of {limit} bytes" in big.json()["error"]["message"]

    def chunks():
        for _ in range(17):
            yield b"y" * MiB

    streamed = httpx.put(base, content=chunks(), headers=auth)
    assert streamed.status_code == 413 and streamed.json()["error"]["limit"] == limit
    # The CLI round trip: put prints the URL alone on stdout, get writes the bytes.
    src = hub.data_dir.parent / "params.txt"
    src.write_bytes(b"alpha=0.5\n")
    cli = [sys.executable, "-m", "cpnet", "--hub", hub.url, "--token", world.user_token, "blob"]
    put = subprocess.run([*cli, "put", str(src)], capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    url = put.stdout.strip()
    assert url == "cpnet://blobs/" + hashlib.sha256(b"alpha=0.5\n").hexdigest()
    dest = hub.data_dir.parent / "copy.txt"
    got_cli = subprocess.run([*cli, "get", url, "-o", str(dest)], capture_output=True, timeout=60)
    assert got_cli.returncode == 0 and dest.read_bytes() == b"alpha=0.5\n"

    # What was refused left nothing behind.
    tmp = hub.data_dir / "blobs" / "tmp"
    assert list(tmp.iterdir()) == []
