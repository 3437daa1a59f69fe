"""Many tasks in one request (``POST /v1/tasks:batch``, SDK ``submit_many``, ``cpnet submit
--array`` / ``--file``) through a real hub and agent: per-item results, one transaction with a
savepoint per item (a refused item leaves nothing; the rest are created), idempotent retries,
and per-index parameters."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration


def test_items_stand_alone_and_a_retry_finds_its_tasks(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100")})
    start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=4)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    ok = {"executors": [{"command": ["true"]}]}
    items = [
        {**ok, "name": "first", "idempotency_key": "k-1"},
        {"executors": []},  # invalid: refused on its own, with its field
        {**ok, "data_key": "[secret]"},  # refused by the hub's own checks
        {**ok, "name": "again", "idempotency_key": "k-1"},  # the same key: the same task
        {**ok, "name": "last"},
    ]
    auth = {"Authorization": f"Bearer {world.user_token}"}
    r = httpx.post(f"{hub.url}/v1/tasks:batch", json={"tasks": items}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == [201, 422, 400, 200, 201]
    assert (body["created"], body["existing"], body["failed"]) == (2, 1, 2)
    res = body["results"]
    assert res[1]["error"]["field"].startswith("tasks.1.executors")
    assert res[2]["error"]["field"] == "tasks.2.data_key"
    assert res[3]["id"] == res[0]["id"]
    created = [res[0]["id"], res[4]["id"]]
    assert sorted(t.id for t in user.tasks().tasks) == sorted(created)  # nothing else was kept
    for tid in created:
        assert user.wait(tid, timeout=60).state is State.COMPLETE

    # The SDK: chunks, indices across them, and a retry that finds every task again.
    specs = [{**ok, "name": f"n{i}", "idempotency_key": f"sdk-{i}"} for i in range(25)]
    specs[7] = {"executors": [{"command": []}]}
    chunks: list[int] = []
    got = user.submit_many(specs, chunk_size=10, on_chunk=chunks.append)
    assert chunks == [10, 10, 5] and [x.index for x in got] == list(range(25))
    assert [x.status for x in got].count(201) == 24 and got[7].status == 422
    again = user.submit_many(specs, chunk_size=10)
    assert [x.id for x in again if x.status == 200] == [x.id for x in got if x.status == 201]

    # A quota refuses the items past it, each with its own 429; the ones before it are created.
    for x in got:
        if x.id is not None:
            assert user.wait(x.id, timeout=60).state is State.COMPLETE
    with hub.client() as admin:
        admin.set_quota(world.org_id, queued=2)  # nothing is queued now
    sleepers = [{"executors": [{"command": ["sleep", "30"]}], "resources": {"cpu_cores": 64}}] * 4
    out = user.submit_many(sleepers)
    assert [x.status for x in out] == [201, 201, 429, 429], out
    assert out[2].error is not None and out[2].error.code == "quota_exceeded"
    # A refused item undone after its task row was written leaves no trace in the audit chain
    # either: the call's record names the task it did create, which exists.
    with hub.client() as admin:
        admin.set_quota(world.org_id, queued=10, cores=130)  # 2 × 64 cores queued now
    small = {"executors": [{"command": ["sleep", "30"]}], "resources": {"cpu_cores": 1}}
    mixed = user.submit_many([sleepers[0], small])
    assert [x.status for x in mixed] == [429, 201], mixed
    with hub.client() as admin:
        calls = [r for r in admin.audit_records(world.org_id) if r.action == "POST /v1/tasks:batch"]
    assert calls[-1].object_id == mixed[1].id and user.task(mixed[1].id).id == mixed[1].id
    for x in [*out[:2], mixed[1]]:
        user.cancel(x.id)


def test_cli_array_and_file(hub: HubProc, agents, tmp_path: Path):
    from typer.testing import CliRunner

    from cpnet.cli.main import app

    world = make_world(hub, {"a": ("general", "440100")})
    start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=4)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    env = {"CPNET_HUB": hub.url, "CPNET_TOKEN": world.user_token, "CPNET_CONFIG_DIR": str(tmp_path)}
    run = CliRunner().invoke
    result = run(
        app,
        ["submit", "--array", "5", "--name", "sweep", "--json", "--", "sh", "-c",
         'echo "i=$CPNET_ARRAY_INDEX n=$CPNET_ARRAY_SIZE"'],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ids = [x["id"] for x in json.loads(result.stdout)["results"]]
    assert len(ids) == 5
    outs = []
    for i, tid in enumerate(ids):
        done = user.wait(tid, timeout=60)
        assert done.state is State.COMPLETE and done.name == f"sweep-{i}"
        assert done.spec.tags["cpnet.array_index"] == str(i)
        outs.append(done.attempts[-1].executor_logs[-1].stdout.strip())
    assert outs == [f"i={i} n=5" for i in range(5)]

    # --wait follows the whole array: exit 0 only if every task ends COMPLETE.
    ok_run = run(
        app, ["submit", "--array", "3", "--wait", "--timeout", "120", "--", "true"], env=env
    )
    assert ok_run.exit_code == 0, ok_run.output
    assert "3 of 3 tasks COMPLETE" in ok_run.output
    script = '[ "$CPNET_ARRAY_INDEX" != 1 ] || exit 3'
    bad_run = run(
        app,
        ["submit", "--array", "3", "--wait", "--timeout", "120", "--", "sh", "-c", script],
        env=env,
    )
    assert bad_run.exit_code == 1, bad_run.output
    assert "2 of 3 tasks COMPLETE" in bad_run.output and "EXECUTOR_ERROR" in bad_run.output
    # --wait --json: one JSON document (the submission and how each task ended), not two.
    json_run = run(
        app,
        ["submit", "--array", "2", "--wait", "--json", "--timeout", "120", "--", "true"],
        env=env,
    )
    assert json_run.exit_code == 0, json_run.output
    doc = json.loads(json_run.stdout)  # raises on a second document
    assert doc["created"] == 2 and len(doc["results"]) == 2
    assert doc["states"] == {r["id"]: "COMPLETE" for r in doc["results"]}

    lines = [json.dumps({"name": f"f{i}", "executors": [{"command": ["true"]}]}) for i in range(3)]
    lines.insert(1, json.dumps({"executors": []}))
    jsonl = tmp_path / "tasks.jsonl"
    jsonl.write_text("\n".join(lines) + "\n\n")
    result = run(app, ["submit", "--file", str(jsonl)], env=env)
    assert result.exit_code == 1, result.output  # one item refused: exit 1, the rest created
    assert "3 created" in result.output and "line 2" in result.output
    assert {t.name for t in user.tasks().tasks} >= {"f0", "f1", "f2"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = run(app, ["submit", "--file", str(bad)], env=env)
    assert result.exit_code != 0 and "line 1" in result.output
