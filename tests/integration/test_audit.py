"""The audit chain end to end, against a real hub and agent: submissions, placements, cancels
and token changes write chained records naming who, what and the request; no secret (a task's
env value, a token) appears in any record; the hub signs the head; and `cpnet audit verify`
passes an untampered store (exit 0) and names the record in a copy where one was edited,
deleted or two were swapped (exit 1)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Value-that-must-never-leak-7f1c"


@pytest.fixture
def hub(tmp_path: Path):
    h = HubProc(tmp_path / "hub", free_port(), env={"CPNET_AUDIT_CHECKPOINT_S": "0.5"})
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


def _verify(args: list[str]) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "cpnet", "audit", "verify", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, json.loads(out.stdout)


def _copy(db: Path, to: Path) -> Path:
    """A consistent copy of the hub's SQLite store (its WAL included)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return to


def test_calls_and_events_are_chained_secret_free_and_tampering_is_caught(
    hub: HubProc, agents: list, tmp_path: Path
) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    user = hub.client(world.user_token)
    wait_until(lambda: len(user.pools()) == 1, 30, "the pool")

    done = user.submit(
        {"name": "ok", "executors": [{"command": ["true"], "env": {"API_KEY": SECRET}}]}
    )
    assert user.wait(done.id, timeout=60).state is State.COMPLETE
    sleeper = user.submit({"name": "sleeper", "executors": [{"command": ["sleep", "60"]}]})
    wait_until(lambda: user.task(sleeper.id).state is State.RUNNING, 30, "sleeper running")
    r = httpx.post(
        f"{hub.url}/v1/tasks/{sleeper.id}/cancel",
        headers={"Authorization": f"Bearer {world.user_token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    cancel_rid = r.headers["x-request-id"]
    assert cancel_rid.startswith("req_")
    with hub.client(world.padmin_token) as pa:
        issued = pa.create_token("ci")
        pa.revoke_token(issued.id)
    refused = httpx.post(  # a call that changes nothing is recorded too, with its status
        f"{hub.url}/v1/tasks",
        json={"executors": [], "env_secret": SECRET},
        headers={"Authorization": f"Bearer {world.user_token}"},
        timeout=10,
    )
    assert refused.status_code == 400 or refused.status_code == 422, refused.text

    with hub.client() as admin:
        records = list(admin.audit_records(""))  # an admin's: every organisation's
        own = list(hub.client(world.padmin_token).audit_records())
    actions = [x.action for x in records]
    by_action = {a: [x for x in records if x.action == a] for a in set(actions)}

    # every mutating call, with its route template, principal, status and body digest
    submit = by_action["POST /v1/tasks"]
    assert {x.object_id for x in submit} == {done.id, sleeper.id, None}
    assert sorted(x.status for x in submit) == [201, 201, refused.status_code]
    # a submission's record rides in its transaction, with the hold it placed
    hold = [x for x in records if x.request_id == submit[0].request_id]
    assert [x.action for x in hold] == ["POST /v1/tasks", "ledger.transfer"], hold
    assert [x.seq for x in hold] == [hold[0].seq, hold[0].seq + 1]
    assert all(x.actor.role == "user" and x.actor.org_id == world.org_id for x in submit)
    assert all(x.body and len(x.body) == 64 for x in submit)
    cancel_call = [x for x in records if x.request_id == cancel_rid]
    assert {x.action for x in cancel_call} == {
        "POST /v1/tasks/{task_id}/cancel",
        "task.canceled",
    }, cancel_call
    canceled = by_action["task.canceled"][0]
    assert canceled.object_id == sleeper.id and canceled.before != canceled.after
    assert canceled.detail == {"from": "RUNNING", "to": "CANCELING"}
    placed = {x.object_id for x in by_action["task.placed"]}
    assert placed == {done.id, sleeper.id} and by_action["task.placed"][0].actor.role == "hub"
    assert issued.id in {x.object_id for x in by_action["token.issued"]}
    assert [x.object_id for x in by_action["token.revoked"]] == [issued.id]
    assert by_action["ledger.transfer"], "holds and settlements are audited"
    assert any(a.startswith("POST /v1/sites/{site_id}/") for a in actions)  # the agent's calls
    # a provider admin reads their own organisation's records, no other's
    assert own and all(world.org_id in (x.org_id, x.actor.org_id) for x in own)
    other = httpx.get(
        f"{hub.url}/v1/audit",
        params={"org": "org_someoneelse"},
        headers={"Authorization": f"Bearer {world.padmin_token}"},
        timeout=10,
    )
    assert other.status_code == 404, other.text
    user_read = httpx.get(
        f"{hub.url}/v1/audit", headers={"Authorization": f"Bearer {world.user_token}"}, timeout=10
    )
    assert user_read.status_code == 403

    # no secret in any record: the env value, any token handed out, the admin's token
    dumped = json.dumps([x.model_dump(mode="json") for x in records])
    for secret in (SECRET, issued.token, hub.admin_token, world.user_token, world.padmin_token):
        assert secret not in dumped
        assert secret[4:] not in dumped

    # the hub signs the head; the live chain verifies through the API
    with hub.client() as admin:
        wait_until(lambda: admin.audit_verify().checkpoints > 0, 30, "a signed checkpoint")
        live = admin.audit_verify()
    assert live.ok and live.records >= len(records), live

    user.cancel(done.id)  # a final task: left as it is, the call is still recorded
    hub.kill(signal.SIGTERM)  # a clean stop signs the head once more
    assert hub.log is not None and SECRET not in hub.log.read_text()
    db = hub.data_dir / "cpnet.db"
    rc, intact = _verify(["--data-dir", str(hub.data_dir)])
    assert rc == 0 and intact["ok"] and intact["problems"] == [], intact
    assert intact["checkpoints"] >= 1 and intact["records"] >= len(records)

    def tampered(name: str, sql: list[str]) -> dict:
        copy = _copy(db, tmp_path / f"{name}.db")
        with sqlite3.connect(copy) as c:
            for stmt in sql:
                c.execute(stmt)
        rc, out = _verify(["--database-url", f"sqlite:///{copy}"])
        assert rc == 1, out
        return out

    edited = tampered("edited", ["UPDATE audit_records SET object_id = 'tsk_forged' WHERE seq = 5"])
    assert (edited["problems"][0]["seq"], edited["problems"][0]["kind"]) == (5, "edited")
    deleted = tampered("deleted", ["DELETE FROM audit_records WHERE seq = 7"])
    assert (deleted["problems"][0]["seq"], deleted["problems"][0]["kind"]) == (7, "missing")
    swapped = tampered(
        "swapped",
        [
            "UPDATE audit_records SET seq = -1 WHERE seq = 3",
            "UPDATE audit_records SET seq = 3 WHERE seq = 4",
            "UPDATE audit_records SET seq = 4 WHERE seq = -1",
        ],
    )
    assert swapped["problems"][0]["seq"] in (3, 4), swapped
    cut = tampered(
        "truncated",
        [
            f"DELETE FROM audit_records WHERE seq > {intact['head_seq'] - 2}",
            "UPDATE audit_head SET seq = seq - 2, hash = (SELECT hash FROM audit_records "
            "ORDER BY seq DESC LIMIT 1)",
        ],
    )
    assert any(p["kind"] == "truncated" for p in cut["problems"]), cut
