"""Log lines (text and JSON, with the ids of what they are about) and the metrics' registries."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from cpnet.agent.settings import AgentConfigError, AgentSettings
from cpnet.auth.model import Principal, Role
from cpnet.config import HubSettings
from cpnet.store import accounts, audit
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.tasks.model import TaskSpec
from cpnet.telemetry import logs
from cpnet.telemetry.metrics import AgentMetrics, HubMetrics
from prom_text import samples


def _record(msg: str = "placed", **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("cpnet.test", logging.INFO, __file__, 1, msg, None, None)
    r.__dict__.update(extra)
    return r


def test_json_line_holds_the_ids_given_and_the_request_being_served() -> None:
    token = audit.current.set(audit.Call("req_abc"))
    try:
        line = json.loads(logs.JsonFormatter().format(_record(task_id="tsk_1", trace_id="req_x")))
    finally:
        audit.current.reset(token)
    assert line["msg"] == "placed" and line["level"] == "info" and line["logger"] == "cpnet.test"
    assert (line["request_id"], line["trace_id"], line["task_id"]) == ("req_abc", "req_x", "tsk_1")
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-12-07T17:15:06.648Z")
    assert "attempt_id" not in line  # absent, not null
    # Outside a request: no request id.
    assert "request_id" not in json.loads(logs.JsonFormatter().format(_record()))


def test_json_line_carries_the_traceback_and_text_lines_the_ids() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        r = _record(attempt_id="att_1")
        r.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(r))
    assert "RuntimeError: boom" in line["exc"] and line["attempt_id"] == "att_1"
    text = logs.TextFormatter().format(r)
    first = text.splitlines()[0]
    assert first.endswith("cpnet.test: placed [attempt_id=att_1]")
    assert "RuntimeError: boom" in text  # the traceback stays below the line


def test_setup_routes_every_logger_through_one_format() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        logs.setup("json", "info", out)
        logging.getLogger("uvicorn.error").info("started")
        logging.getLogger("cpnet.hub").debug("not at info")
        logging.getLogger("cpnet.hub").warning("careful", extra={"site_id": "s1"})
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        logging.captureWarnings(False)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["logger"], x["msg"]) for x in lines] == [
        ("uvicorn.error", "started"),
        ("cpnet.hub", "careful"),
    ]
    assert lines[1]["site_id"] == "s1" and lines[1]["level"] == "warning"
    with pytest.raises(ValueError, match="log format"):
        logs.setup("xml")


def test_bad_log_settings_are_refused_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPNET_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="CPNET_LOG_FORMAT"):
        HubSettings.from_env()
    monkeypatch.setenv("CPNET_LOG_FORMAT", "JSON")
    monkeypatch.setenv("CPNET_ACCESS_LOG", "yes")
    monkeypatch.setenv("CPNET_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="CPNET_LOG_LEVEL"):
        HubSettings.from_env()
    monkeypatch.setenv("CPNET_LOG_LEVEL", "DEBUG")
    s = HubSettings.from_env()
    assert (s.log_format, s.log_level, s.access_log, s.metrics_public) == (
        "json",
        "debug",
        True,
        False,
    )
    base = {"hub_url": "http://127.0.0.1:8470", "token": "t" * 20}
    with pytest.raises(AgentConfigError, match="metrics_listen"):
        AgentSettings(**base, metrics_listen="9464")
    with pytest.raises(AgentConfigError, match="log_format"):
        AgentSettings(**base, log_format="xml")
    assert AgentSettings(**base, metrics_listen="0.0.0.0:9464").metrics_listen == "0.0.0.0:9464"


def test_hub_metrics_read_the_store_at_each_scrape(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.migrate()
    try:
        now = time.time()
        with store.tx() as s:
            org = accounts.create_org(s, "acme", now)
            user = accounts.create_user(s, org.id, "alice", Role.USER, now)
        who = Principal(role=Role.USER, org_id=org.id, user_id=user.id, token_id="tok_test")
        m = HubMetrics(store)
        first = samples(m.render().decode())
        assert first[("cpnet_tasks", (("state", "QUEUED"),))] == 0
        assert first[("cpnet_sites", (("online", "true"),))] == 0
        with store.tx() as s:
            ts.create_tasks(
                s, who, [TaskSpec.model_validate({"executors": [{"command": ["true"]}]})] * 3, now
            )
        m.requests.labels("POST", "/v1/tasks", "201").inc()
        after = samples(m.render().decode())
        assert after[("cpnet_tasks", (("state", "QUEUED"),))] == 3  # read again, not cached
        assert (
            after[
                (
                    "cpnet_http_requests_total",
                    (("method", "POST"), ("route", "/v1/tasks"), ("status", "201")),
                )
            ]
            == 1
        )
        assert ("cpnet_tasks", (("state", "COMPLETE"),)) not in after  # terminal: not a gauge
        # Two hubs in one process keep apart (their own registries).
        assert (
            "cpnet_http_requests_total",
            (("method", "POST"), ("route", "/v1/tasks"), ("status", "201")),
        ) not in samples(HubMetrics(store).render().decode())
    finally:
        store.close()


def test_agent_metrics_count_held_attempts_when_scraped() -> None:
    held = {"RUNNING": 2}
    m = AgentMetrics(lambda: dict(held))
    m.ended.labels("COMPLETE").inc()
    got = samples(m.render().decode())
    assert got[("cpnet_agent_attempts", (("state", "RUNNING"),))] == 2
    assert got[("cpnet_agent_attempts_ended_total", (("state", "COMPLETE"),))] == 1
    held.clear()
    assert ("cpnet_agent_attempts", (("state", "RUNNING"),)) not in samples(m.render().decode())
