"""Operators' view of a real hub and agent: JSON logs whose ids follow one task through both
processes, and Prometheus metrics from each (docs/operations.md, "Metrics" and "Logs")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prom_text import samples
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _lines(log: Path, strict: bool = True) -> list[dict]:
    """The lines of a JSON log, parsed: every one (`strict`: one that is not a JSON object fails
    the test), or those that are (an agent's stderr also holds what its runners print there)."""
    out = []
    for line in log.read_text().splitlines():
        if strict or line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_and_metrics_follow_a_task_through_hub_and_agent(tmp_path: Path, agents):
    from services import free_port

    hub = HubProc(tmp_path / "hub", free_port())
    hub.env = {"CPNET_LOG_FORMAT": "json", "CPNET_ACCESS_LOG": "1"}
    hub.data_dir.mkdir()
    hub.init()
    hub.start()
    try:
        world = make_world(hub, {"a": ("general", "440100")})
        metrics_port = free_port()
        agent = AgentProc(
            hub,
            world.site_tokens["a"],
            tmp_path / "agent",
            [pool("cpu", cores=2)],
            config={"metrics_listen": f"127.0.0.1:{metrics_port}", "log_format": "json"},
        )
        agent.start()
        agents.append(agent)
        user = hub.client(world.user_token)
        wait_until(lambda: user.pools(), 30, "pool online")

        auth = {"authorization": f"Bearer {world.user_token}"}
        spec = {"executors": [{"command": ["sh", "-c", "echo traced"]}]}
        r = httpx.post(f"{hub.url}/v1/tasks", json=spec, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        trace, task_id = r.headers["x-request-id"], r.json()["id"]
        final = user.wait(task_id, timeout=60)
        assert final.state.value == "COMPLETE", final.reason
        attempt_id = final.attempts[0].attempt_id

        # The hub: every line is JSON; the task's lines carry the submission's request id as
        # their trace id, from its creation through its placement to its end.
        def hub_says() -> dict[str, dict]:
            about = [x for x in _lines(hub.log) if x.get("trace_id") == trace]
            return {x["msg"].split(":")[0].split(" on ")[0]: x for x in about}

        said = wait_until(
            lambda: (s := hub_says()) and "attempt ended" in s and s, 30, "the hub's lines"
        )
        assert said["task created"]["task_id"] == task_id
        assert said["task created"]["request_id"] == trace  # written in that request
        assert said["task placed"]["attempt_id"] == attempt_id
        assert said["task placed"]["site_id"] == world.site_ids["a"]
        assert said["attempt ended"]["state"] == "COMPLETE"
        assert said["attempt ended"]["task_id"] == task_id
        # ... and in another request: the agent's report, with an id of its own.
        assert said["attempt ended"]["request_id"] not in (None, trace)
        access = [
            x
            for x in _lines(hub.log)
            if x["logger"] == "cpnet.access" and x.get("request_id") == trace
        ]
        assert len(access) == 1, access
        assert (access[0]["method"], access[0]["route"], access[0]["status"]) == (
            "POST",
            "/v1/tasks",
            201,
        )
        assert access[0]["duration_ms"] > 0
        assert {x["level"] for x in _lines(hub.log)} <= {"debug", "info", "warning", "error"}

        # The agent: the same trace id on its lines about the attempt.
        assert agent.log is not None
        mine = [x for x in _lines(agent.log, strict=False) if x.get("trace_id") == trace]
        assert [x["msg"].split(" on ")[0].split(":")[0] for x in mine] == [
            "attempt accepted",
            "attempt ended",
        ]
        assert all(x["attempt_id"] == attempt_id and x["task_id"] == task_id for x in mine)
        assert mine[1]["state"] == "COMPLETE"

        # The hub's metrics: an admin's token, not a user's, not none.
        assert httpx.get(f"{hub.url}/metrics", headers=auth).status_code == 403
        assert httpx.get(f"{hub.url}/metrics").status_code == 401
        admin = {"authorization": f"Bearer {hub.admin_token}"}

        def hub_metrics() -> dict:
            got = httpx.get(f"{hub.url}/metrics", headers=admin, timeout=30)
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
            return samples(got.text)

        m = wait_until(
            lambda: (
                (x := hub_metrics())
                and x.get(("cpnet_attempts_ended_total", (("state", "COMPLETE"),)))
                and x
            ),
            30,
            "the hub's count of ended attempts",
        )
        posted = ("method", "POST"), ("route", "/v1/tasks"), ("status", "201")
        assert m[("cpnet_http_requests_total", posted)] == 1
        assert m[("cpnet_http_request_duration_seconds_count", posted[:2])] >= 1
        assert m[("cpnet_attempts_ended_total", (("state", "COMPLETE"),))] == 1
        assert m[("cpnet_scheduler_placements_total", ())] == 1
        assert m[("cpnet_scheduler_pass_duration_seconds_count", ())] >= 1
        assert m[("cpnet_tasks", (("state", "QUEUED"),))] == 0
        assert m[("cpnet_sites", (("online", "true"),))] == 1
        assert m[("cpnet_pools", (("online", "true"),))] == 1
        assert m[("cpnet_pool_cpu_cores", (("kind", "total"), ("online", "true")))] == 2
        assert m[("cpnet_ledger_transfers_total", ())] >= 1  # the world's funds, at least
        assert m[("cpnet_sites_lost_total", ())] == 0
        # A route template, never a path with an id in it.
        routes = {dict(k[1]).get("route") for k in m if k[0] == "cpnet_http_requests_total"}
        assert "/v1/tasks/{task_id}" in routes and not any(task_id in r for r in routes if r)

        # The agent's metrics, on its own port, no token.
        got = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        assert got.status_code == 200
        a = samples(got.text)
        assert a[("cpnet_agent_attempts_accepted_total", ())] == 1
        assert a[("cpnet_agent_attempts_ended_total", (("state", "COMPLETE"),))] == 1
        assert a[("cpnet_agent_updates_sent_total", ())] >= 2
        assert ("cpnet_agent_backend_errors_total", (("op", "submit"),)) not in a
        assert a[("process_resident_memory_bytes", ())] > 0

        # Every metric the sample Grafana dashboard asks for is one of these two processes'.
        families = {
            f.name
            for text in (httpx.get(f"{hub.url}/metrics", headers=admin).text, got.text)
            for f in text_string_to_metric_families(text)
        }
        board = json.loads((DOCS / "grafana" / "cpnet-hub.json").read_text())
        asked = {
            re.sub(r"_(total|bucket|count|sum)$", "", name)
            for panel in board["panels"]
            for target in panel["targets"]
            for name in re.findall(r"\b((?:cpnet|process)_[a-z_]+)", target["expr"])
        }
        assert asked and asked <= families, asked - families
    finally:
        hub.kill()
