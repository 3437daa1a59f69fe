"""The spine end to end on real processes: agents join, pools appear, tasks run and report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cpnet import ident
from cpnet.client import NotFound
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration


def test_join_discover_run_fail_cancel_explain_resolve(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"gz": ("general", "440100"), "ai": ("intelligent", "110000")})
    start_agent(hub, agents, tmp_path, world, "gz", [pool("cpu", cores=4, price=0.05)])
    start_agent(
        hub,
        agents,
        tmp_path,
        world,
        "ai",
        [
            pool(
                "gpu",
                cores=8,
                type="intelligent",
                price=0.2,
                labels={"tier": "gold"},
            )
        ],
    )
    user = hub.client(world.user_token)
    pools = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 30, "two live pools")
    ids = {p.name: p.id for p in pools}
    assert all(ident.is_valid(i) for i in ids.values())
    # Discovery filters.
    assert [p.name for p in user.pools(type="intelligent")] == ["gpu"]
    assert [p.name for p in user.pools(region="44")] == ["cpu"]
    assert [p.name for p in user.pools(labels={"tier": "gold"})] == ["gpu"]
    assert [p.name for p in user.pools(min_cores=6)] == ["gpu"]

    # A two-step task with an inline input and a file:// output.
    out = tmp_path / "result.txt"
    ok = user.submit(
        {
            "name": "pipeline",
            "inputs": [{"path": "in.txt", "content": "a\nb\nc\n"}],
            "outputs": [{"path": "out.txt", "url": f"file://{out}"}],
            "executors": [
                {"command": ["sh", "-c", "wc -l < in.txt > out.txt"]},
                {"command": ["cat", "out.txt"]},
            ],
            "constraints": {"regions": ["44"]},
        }
    )
    failing = user.submit(
        {
            "name": "fails",
            "executors": [{"command": ["sh", "-c", "exit 3"]}, {"command": ["echo", "never"]}],
        }
    )
    sleeper = user.submit({"name": "sleeper", "executors": [{"command": ["sleep", "60"]}]})

    done = user.wait(ok.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    assert done.pool_id == ids["cpu"]  # the region constraint
    logs = done.attempts[-1].executor_logs
    assert [x.exit_code for x in logs] == [0, 0] and logs[1].stdout.strip() == "3"
    assert out.read_text().strip() == "3"
    assert done.attempts[-1].usage is not None and done.attempts[-1].usage.wall_s > 0

    bad = user.wait(failing.id, timeout=60)
    assert bad.state is State.EXECUTOR_ERROR
    assert [x.exit_code for x in bad.attempts[-1].executor_logs] == [3]  # stopped at the first

    wait_until(lambda: user.task(sleeper.id).state is State.RUNNING, 30, "sleeper running")
    user.cancel(sleeper.id)
    assert user.wait(sleeper.id, timeout=30).state is State.CANCELED
    events = [(e.from_state, e.to_state) for e in user.events(sleeper.id)]
    assert (State.RUNNING, State.CANCELING) in events and events[-1][1] is State.CANCELED

    why = user.explain(ok.id)
    ranked = {p["pool_id"] for p in why["placements"]}
    rejected = {r["pool_id"]: r["reasons"] for r in why["rejections"]}
    assert ranked == {ids["cpu"]} and "region" in " ".join(rejected[ids["gpu"]])

    # Resolution: a signed record that verifies offline with the published key.
    env = httpx.get(f"{hub.url}/v1/resolve/{ids['gpu'].upper()}").json()
    jwks = httpx.get(f"{hub.url}/.well-known/cpnet/keys.json").json()
    assert ident.verify_envelope(env, jwks, now=datetime.now(UTC)).ok
    assert env["record"]["id"] == ids["gpu"] and env["record"]["kind"] == "pool"
    env["record"]["price"]["cpu_core_hour"] = 0.0
    assert not ident.verify_envelope(env, jwks).ok


def test_pool_offline_after_missed_heartbeats_and_back(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"edge": ("edge", "320500")})
    a = start_agent(hub, agents, tmp_path, world, "edge", [pool("box", cores=2, type="edge")])
    user = hub.client(world.user_token)
    first = wait_until(lambda: user.pools(), 30, "pool online")[0]
    a.kill()
    wait_until(lambda: user.pools() == [], 10, "pool to leave discovery")
    assert user.pools(online=False)[0].id == first.id
    a.start()  # same site token, same pool name: same identifier
    again = wait_until(lambda: user.pools(), 30, "pool back")[0]
    assert again.id == first.id


def test_agent_killed_mid_task_finishes_elsewhere(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "310000")})
    user = hub.client(world.user_token)
    a = start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    wait_until(lambda: user.pools(), 30, "pool a")
    # The attempt on a sleeps until it is killed (however slow b is to start); the one on b
    # finds the flag the test drops once a runs, and ends at once.
    flag = tmp_path / "a-is-running"
    script = f"test -e {flag} || sleep 120; echo done"
    t = user.submit({"name": "long", "executors": [{"command": ["sh", "-c", script]}]})
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 30, "running on a")
    flag.touch()
    start_agent(hub, agents, tmp_path, world, "b", [pool("cpu", cores=2)])
    wait_until(lambda: len(user.pools()) == 2, 30, "pool b")
    a.kill()  # SIGKILL: no goodbye
    final = user.wait(t.id, timeout=60)
    assert final.state is State.COMPLETE, final.reason
    assert [x.state for x in final.attempts] == [State.SYSTEM_ERROR, State.COMPLETE]
    assert final.attempts[0].site_id == world.site_ids["a"]
    assert final.attempts[1].site_id == world.site_ids["b"]
    assert "lost" in (final.attempts[0].reason or "")
    # The hub's own change is in the audit chain, for the task's organisation.
    with hub.client() as admin:
        lost = [r for r in admin.audit_records(world.org_id) if r.action == "attempt.lost"]
    assert [(r.object_id, r.detail["attempt_id"]) for r in lost] == [
        (t.id, final.attempts[0].attempt_id)
    ]
    assert lost[0].actor.role == "hub" and lost[0].detail["to"] == "SYSTEM_ERROR"
    assert lost[0].detail["site_id"] == world.site_ids["a"] and lost[0].before != lost[0].after


def test_tenant_isolation_and_agent_bound_to_its_site(hub: HubProc, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "310000")})
    other = make_world(hub, {"c": ("general", "110000")}, org="beta")
    mine = hub.client(world.user_token).submit({"executors": [{"command": ["true"]}]})
    stranger = hub.client(other.user_token)
    with pytest.raises(NotFound):
        stranger.task(mine.id)
    with pytest.raises(NotFound):
        stranger.cancel(mine.id)
    assert all(t.id != mine.id for t in stranger.tasks().tasks)
    # An agent token acts for its own site only.
    r = httpx.post(
        f"{hub.url}/v1/sites/{world.site_ids['b']}/heartbeat",
        headers={"authorization": f"Bearer {world.site_tokens['a']}"},
        json={"pools": []},
    )
    assert r.status_code == 403 and r.json()["error"]["field"] == "site_id"
    # Revoked tokens stop working.
    admin = hub.client()
    tok = admin.create_token("temp")
    assert (
        httpx.get(
            f"{hub.url}/v1/whoami", headers={"authorization": f"Bearer {tok.token}"}
        ).status_code
        == 200
    )
    admin.revoke_token(tok.id)
    assert (
        httpx.get(
            f"{hub.url}/v1/whoami", headers={"authorization": f"Bearer {tok.token}"}
        ).status_code
        == 401
    )


def test_bad_input_gets_clear_4xx_never_500(hub: HubProc):
    world = make_world(hub, {"a": ("general", "440100")})
    h = {"authorization": f"Bearer {world.user_token}"}
    u = hub.url
    r = httpx.post(f"{u}/v1/tasks", headers=h, json={"executors": [{"command": []}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "executors.0.command"
    r = httpx.post(
        f"{u}/v1/tasks",
        headers=h,
        json={
            "executors": [{"command": ["x"]}],
            "inputs": [{"path": "../etc/passwd", "content": "x"}],
        },
    )
    assert r.status_code == 422 and "inputs.0.path" in r.json()["error"]["field"]
    r = httpx.post(f"{u}/v1/tasks", headers=h, content=b"{" + b" " * (1 << 21) + b"}")
    assert r.status_code == 413
    r = httpx.get(f"{u}/v1/resolve/cn.dev.acme.x0")
    assert r.status_code == 400 and "expected" in r.json()["error"]["message"]
    good = ident.make(["cn", "dev", "nobody"], "x").text
    assert httpx.get(f"{u}/v1/resolve/{good}").status_code == 404
    assert httpx.get(f"{u}/v1/tasks/tsk_nope", headers=h).status_code == 404
    assert httpx.get(f"{u}/v1/tasks", headers=h, params={"cursor": "%%%"}).status_code == 400
    assert httpx.get(f"{u}/v1/tasks", headers=h, params={"limit": 0}).status_code == 422
    assert httpx.get(f"{u}/v1/pools", headers=h, params={"label": "novalue"}).status_code == 400
    assert httpx.get(f"{u}/v1/tasks").status_code == 401
    for body in (
        b"",
        b"null",
        b"[]",
        b'{"executors": "x"}',
        b"\xff\xfe",
        b'{"executors":[{"command":["a"]}],"resources":{"cpu_cores":-1}}',
    ):
        r = httpx.post(
            f"{u}/v1/tasks", headers={**h, "content-type": "application/json"}, content=body
        )
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert "error" in r.json()
    # Nothing half-written: none of those created a task.
    assert hub.client(world.user_token).tasks().tasks == []


def test_retired_pool_resolves_to_signed_tombstone(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100")})
    start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    padmin = hub.client(world.padmin_token)
    pid = wait_until(lambda: padmin.pools(), 30, "pool online")[0].id
    # A user may not retire a pool; its provider admin may.
    with pytest.raises(Exception) as e:
        hub.client(world.user_token).retire_pool(pid)
    assert getattr(e.value, "status", None) == 403
    padmin.retire_pool(pid)
    assert padmin.pools(online="any") == []
    env = httpx.get(f"{hub.url}/v1/resolve/{pid}").json()
    jwks = httpx.get(f"{hub.url}/.well-known/cpnet/keys.json").json()
    assert env["record"]["retired"] is True and env["record"]["id"] == pid
    assert ident.verify_envelope(env, jwks).ok
    # Its agent re-registering the same pool name does not bring the retired id back.
    r = httpx.post(
        f"{hub.url}/v1/sites/{world.site_ids['a']}/register",
        headers={"authorization": f"Bearer {world.site_tokens['a']}"},
        json={"pools": [{"name": "cpu", "hardware": {"cpu_cores": 2, "memory_gb": 8}}]},
    )
    assert r.status_code == 409 and r.json()["error"]["field"] == "pools"


def test_agent_restart_reattaches_running_task(hub: HubProc, agents, tmp_path: Path):
    """SIGKILL the agent mid-task and restart it before the hub gives up: same attempt finishes."""
    world = make_world(hub, {"a": ("general", "440100")})
    a = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent-a", [pool("cpu", cores=2)])
    a.heartbeat_s = 3.0  # the hub waits 9 s before calling the site lost: a restart fits well
    a.start()
    agents.append(a)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    t = user.submit({"executors": [{"command": ["sh", "-c", "sleep 2; echo survived"]}]})
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 30, "running")
    a.kill()
    a.start()  # within the heartbeat timeout: the hub never noticed
    final = user.wait(t.id, timeout=60)
    assert final.state is State.COMPLETE, final.reason
    assert len(final.attempts) == 1  # re-attached, not re-run
    assert final.attempts[0].executor_logs[0].stdout.strip() == "survived"
