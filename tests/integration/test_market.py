"""Price books and binding quotes through a real hub, agent and the `cpnet` CLI."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from typer.testing import CliRunner

from cpnet.cli.main import app
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration
runner = CliRunner()


def cpnet(hub: HubProc, token: str, *args: str):
    return runner.invoke(app, ["--hub", hub.url, "--token", token, *args])


def test_price_books_quotes_and_quoted_tasks_end_to_end(hub: HubProc, agents, tmp_path):
    world = make_world(hub, {"sz": ("general", "440300")})
    start_agent(
        hub,
        agents,
        tmp_path,
        world,
        "sz",
        [pool("cheap", cores=2, price=0.01), pool("dear", cores=2, price=1.0)],
    )
    user = hub.client(world.user_token)
    pools = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 30, "two live pools")
    ids = {p.name: p.id for p in pools}
    dear = ids["dear"]

    # The provider reprices `dear` twice; both entries are kept, the newer one is in force.
    out = cpnet(hub, world.padmin_token, "prices", "set", dear, "--cpu-core-hour", "0.5")
    assert out.exit_code == 0, out.output
    out = cpnet(
        hub,
        world.padmin_token,
        "prices",
        "set",
        dear,
        "--cpu-core-hour",
        "0.002",
        "--spot",
        "--currency",
        "CNY",
    )
    assert out.exit_code == 0, out.output
    out = cpnet(hub, world.padmin_token, "prices", "set", dear, "--cpu-core-hour", "0.004")
    assert out.exit_code == 0, out.output
    out = cpnet(hub, world.user_token, "prices", dear, "--history", "--json")
    assert out.exit_code == 0, out.output
    book = json.loads(out.output)
    assert [e["cpu_core_hour"] for e in book["entries"]] == [0.5, 0.002, 0.004]
    assert [e["kind"] for e in book["entries"] if e["in_force"]] == ["spot", "on_demand"]
    assert book["on_demand"]["cpu_core_hour"] == 0.004 and book["on_demand"]["source"] == "book"
    out = cpnet(hub, world.user_token, "prices", dear, "--history")
    assert out.exit_code == 0 and "0.5/core" in out.output and "0.004/core" in out.output
    out = cpnet(hub, world.user_token, "prices")
    assert out.exit_code == 0 and dear in out.output and "(declared)" in out.output

    # Bad price input: a 4xx naming the field, through the CLI and the API.
    out = cpnet(
        hub,
        world.padmin_token,
        "prices",
        "set",
        dear,
        "--cpu-core-hour",
        "1",
        "--dynamic",
        "target=0.5,k=1,floor=0.8,cap=5",
    )
    assert out.exit_code == 1 and "dynamic.cap" in out.output
    r = httpx.post(
        f"{hub.url}/v1/pools/{dear}/prices",
        json={"entries": [{"cpu_core_hour": -1}]},
        headers={"Authorization": f"Bearer {world.padmin_token}"},
    )
    assert r.status_code == 422 and "cpu_core_hour" in r.text
    r = httpx.post(
        f"{hub.url}/v1/pools/{dear}/prices",
        json={"entries": [{"cpu_core_hour": 1}]},
        headers={"Authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 403

    # A quote for the cheapest placement now ranks the repriced pool first.
    spec_file = tmp_path / "job.json"
    spec_file.write_text(
        json.dumps(
            {"executors": [{"command": ["true"]}], "objective": "cheapest", "expected_runtime_s": 5}
        )
    )
    out = cpnet(hub, world.user_token, "quote", str(spec_file), "--json")
    assert out.exit_code == 0, out.output
    q = json.loads(out.output)
    assert [o["pool_id"] for o in q["options"]] == [dear, ids["cheap"]]
    assert q["fee_bps"] == 500 and "overrun" in q["overruns"]
    table = cpnet(hub, world.user_token, "quote", str(spec_file))
    assert table.exit_code == 0 and "max charge" in table.output and "--quote" in table.output

    # Submitted with option 2, the task runs on option 2's pool, whatever is cheapest.
    out = cpnet(
        hub,
        world.user_token,
        "submit",
        str(spec_file),
        "--quote",
        q["id"],
        "--option",
        "2",
        "--wait",
        "--timeout",
        "60",
    )
    assert out.exit_code == 0, out.output
    task_id = out.output.split()[0]
    done = user.task(task_id)
    assert done.state is State.COMPLETE and done.pool_id == ids["cheap"]
    assert user.get_quote(q["id"]).used_by_task == task_id

    # Reused: refused naming quote_id, saying to ask for a new quote.
    out = cpnet(hub, world.user_token, "submit", str(spec_file), "--quote", q["id"])
    assert out.exit_code == 1
    assert "quote_id" in out.output or "new quote" in out.output
    r = httpx.post(
        f"{hub.url}/v1/tasks",
        json={
            "executors": [{"command": ["true"]}],
            "objective": "cheapest",
            "expected_runtime_s": 5,
            "quote_id": q["id"],
        },
        headers={"Authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 409
    assert r.json()["error"]["field"] == "quote_id" and r.json()["error"]["code"] == "quote_used"
    # A different spec under a fresh quote: 400 naming quote_id.
    q2 = user.quote({"executors": [{"command": ["true"]}]})
    r = httpx.post(
        f"{hub.url}/v1/tasks",
        json={"executors": [{"command": ["false"]}], "quote_id": q2.id},
        headers={"Authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 400 and r.json()["error"]["field"] == "quote_id"


def test_an_expired_quote_is_refused_naming_quote_id(tmp_path, agents):
    hub = HubProc(tmp_path / "hub", free_port(), env={"CPNET_QUOTE_TTL_S": "0.5"})
    hub.data_dir.mkdir()
    hub.init()
    hub.start()
    try:
        world = make_world(hub, {"sz": ("general", "440300")})
        start_agent(hub, agents, tmp_path, world, "sz", [pool("cpu", cores=2)])
        user = hub.client(world.user_token)
        wait_until(lambda: user.pools(), 30, "a live pool")
        spec = {"executors": [{"command": ["true"]}]}
        q = user.quote(spec)
        assert q.valid_until.timestamp() - q.created_at.timestamp() == pytest.approx(0.5)
        wait_until(lambda: time.time() > q.valid_until.timestamp() + 0.2, 5, "expiry")
        r = httpx.post(
            f"{hub.url}/v1/tasks",
            json={**spec, "quote_id": q.id},
            headers={"Authorization": f"Bearer {world.user_token}"},
        )
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["field"] == "quote_id" and err["code"] == "quote_expired"
        assert "new quote" in err["message"]
    finally:
        hub.kill()
