"""TES wildcard outputs end to end: py-tes 1.1 → a real hub → a real agent (local backend) →
the runner, which uploads every matched file to a file:// directory, to S3 (SeaweedFS) and to the
hub's blob store; the attempt's output logs list each file."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until
from tests.integration.test_tes import PYTES11, Raw, load_pytes

pytestmark = [pytest.mark.integration, pytest.mark.s3]
KEYS = {"s3_access_key_id": "cpnet-agent", "s3_secret_access_key": "cpnet-agent-secret"}
FILES = {
    "out/a.txt": b"alpha\n",
    "out/b.txt": b"bravo bravo\n",
    "out/c.txt": b"charlie\n",
    "out/s1/d.txt": b"delta, one level down\n",
    "out/skip.log": b"not matched\n",
    "out/.hidden.txt": b"a leading dot is matched only by a literal dot\n",
}
SCRIPT = "; ".join(
    ["mkdir -p out/s1"]
    + [f"printf '{body.decode()[:-1]}\\n' > {rel}" for rel, body in FILES.items()]
)


@pytest.fixture
def files_root() -> Iterator[Path]:
    """A directory outside /tmp (the attempt's private /tmp would hide /tmp paths) for file://."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-wild-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="cpnet-test",
        aws_secret_access_key="cpnet-test-secret",
    )


def test_wildcard_outputs_through_tes(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, s3_endpoint: str, files_root: Path
) -> None:
    if not PYTES11.is_dir():
        pytest.fail(f"py-tes 1.1 missing at {PYTES11}: run `make venv`")
    tes = load_pytes(PYTES11)
    s3 = _s3(s3_endpoint)
    bucket = f"cpnet-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    world = make_world(hub, {"gz": ("general", "440100")})
    agent = AgentProc(hub, world.site_tokens["gz"], tmp_path / "agent", [pool("cpu", cores=2)])
    agent.options = {
        "s3_endpoint": s3_endpoint,
        **KEYS,
        "file_roots": str(files_root),
        "allow_host_exec": "true",
        "container_runtime": "none",
    }
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool to appear")
    client = tes.HTTPClient(hub.url, token=world.user_token)
    raw = Raw(hub.url, world.user_token)

    # Refused at creation when the prefix can never start a match: 400 naming the field.
    bad = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "outputs": [{"path": "/data/out/*.txt", "path_prefix": "/work/", "url": "s3://b/x/"}],
    }
    r = raw.post("/tasks", bad)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "outputs.0.path_prefix"
    assert "'/work/' is not a prefix of path '/data/out/*.txt'" in r.json()["error"]["message"]
    del bad["outputs"][0]["path_prefix"]
    r = raw.post("/tasks", bad)
    assert r.status_code == 400 and r.json()["error"]["field"] == "outputs.0.path_prefix", r.text
    # the native API refuses the same
    native = {"executors": [{"command": ["true"]}], "outputs": bad["outputs"]}
    r = httpx.post(f"{hub.url}/v1/tasks", json=native, headers=raw.http.headers, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["field"] == "outputs.0.path_prefix", r.text
    assert "required when path contains wildcards" in r.json()["error"]["message"]

    local = files_root / "results"
    created = client.create_task(
        tes.Task(
            name="wildcards",
            volumes=["/data"],
            executors=[
                tes.Executor(image="alpine", command=["sh", "-c", SCRIPT], workdir="/data")
            ],
            outputs=[
                tes.Output(path="/data/out/*.txt", path_prefix="/data/out/",
                           url=f"file://{local}/"),
                # Nextflow's form: the prefix without its trailing '/'
                tes.Output(path="/data/out/*.txt", path_prefix="/data/out",
                           url=f"s3://{bucket}/run1"),
                tes.Output(path="/data/*/s?/*.txt", path_prefix="/data/",
                           url=f"s3://{bucket}/deep/"),
                tes.Output(path="/data/out/*.bam", path_prefix="/data/out/",
                           url=f"s3://{bucket}/none/"),
                tes.Output(path="/data/out/[ab].txt", path_prefix="/data/out/",
                           url="cpnet://blobs/"),
                tes.Output(path="/data/out/s1", url="cpnet://blobs/", type="DIRECTORY"),
            ],
        )
    )  # fmt: skip
    tid = created if isinstance(created, str) else created.id
    t = raw.wait(tid, timeout=120)
    assert t["state"] == "COMPLETE", t

    # file://: exactly the three top-level .txt files (not the .log, not the dotfile)
    assert sorted(p.name for p in local.iterdir()) == ["a.txt", "b.txt", "c.txt"]
    for name in ("a.txt", "b.txt", "c.txt"):
        assert (local / name).read_bytes() == FILES[f"out/{name}"]

    # S3: the same three under run1/, the deeper match with its directories kept
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == [
        "deep/out/s1/d.txt", "run1/a.txt", "run1/b.txt", "run1/c.txt",
    ]  # fmt: skip
    for name in ("a.txt", "b.txt", "c.txt"):
        got = s3.get_object(Bucket=bucket, Key=f"run1/{name}")["Body"].read()
        assert got == FILES[f"out/{name}"]

    # The task's output logs (TES outputs: url, path, size_bytes), through py-tes
    full = client.get_task(tid, view="FULL")
    (log,) = full.logs
    got = sorted((o.url, o.path, int(o.size_bytes)) for o in log.outputs)
    blob = {n: "cpnet://blobs/" + hashlib.sha256(FILES[n]).hexdigest() for n in FILES}
    top = [(f"{n}.txt", len(FILES[f"out/{n}.txt"])) for n in "abc"]
    want = [(f"file://{local}/{n}", f"/data/out/{n}", size) for n, size in top]
    want += [(f"s3://{bucket}/run1/{n}", f"/data/out/{n}", size) for n, size in top]
    want += [(f"s3://{bucket}/deep/out/s1/d.txt", "/data/out/s1/d.txt", 22)]
    want += [(blob[f"out/{n}"], f"/data/out/{n}", size) for n, size in top[:2]]
    want += [(blob["out/s1/d.txt"], "/data/out/s1/d.txt", 22)]
    assert got == sorted(want)

    # blob outputs are readable by the task's owner
    assert user.get_blob(blob["out/a.txt"]) == FILES["out/a.txt"]
    assert user.get_blob(blob["out/s1/d.txt"]) == FILES["out/s1/d.txt"]

    # the output that matched nothing is in the system log, not an error
    logs = "\n".join(log.system_logs)
    assert "staged out nothing for /data/out/*.bam: no file matched the pattern" in logs
    assert "staged 6 outputs (10 files logged), " in logs
    assert f"staged out /data/out/*.txt to s3://{bucket}/run1: 3 files, 26 bytes" in logs

    # the task shows its outputs back as sent
    shown = {(o.path, o.path_prefix, o.url) for o in full.outputs}
    assert ("/data/out/*.txt", "/data/out", f"s3://{bucket}/run1") in shown

    # A prefix the hub cannot judge at creation ('*' may be 'out') fails at the agent, clearly.
    late = client.create_task(
        tes.Task(
            name="late",
            volumes=["/data"],
            executors=[
                tes.Executor(image="alpine", command=["sh", "-c", SCRIPT], workdir="/data")
            ],
            outputs=[
                tes.Output(path="/data/*/a.txt", path_prefix="/data/run1/",
                           url=f"s3://{bucket}/late/"),
            ],
            resources=tes.Resources(backend_parameters={"cpnet.max_attempts": "1"}),
        )
    )  # fmt: skip
    t = raw.wait(late if isinstance(late, str) else late.id, timeout=120)
    assert t["state"] == "SYSTEM_ERROR", t
    reason = t["logs"][-1]["metadata"]["cpnet.reason"]
    assert (
        "stage-out failed: output '/data/*/a.txt': path_prefix '/data/run1/' is not a prefix of "
        "the matched path '/data/out/a.txt'"
    ) in reason, reason
    assert s3.list_objects_v2(Bucket=bucket, Prefix="late/").get("KeyCount", 0) == 0

    # More files than a task may declare outputs (256): each still gets its log at the hub.
    many = client.create_task(
        tes.Task(
            name="many",
            volumes=["/data"],
            executors=[
                tes.Executor(image="alpine", workdir="/data", command=[
                    "sh", "-c", "mkdir -p m; for i in $(seq 1 300); do echo $i > m/f$i.txt; done",
                ])
            ],
            outputs=[
                tes.Output(path="/data/m/f*.txt", path_prefix="/data/m/",
                           url=f"file://{files_root}/many/"),
            ],
        )
    )  # fmt: skip
    t = raw.wait(many if isinstance(many, str) else many.id, timeout=120)
    assert t["state"] == "COMPLETE", t
    outputs = t["logs"][-1]["outputs"]
    assert len(outputs) == 300 and len(list((files_root / "many").iterdir())) == 300
    assert {"url": f"file://{files_root}/many/f300.txt", "path": "/data/m/f300.txt",
            "size_bytes": "4"} in outputs  # fmt: skip
