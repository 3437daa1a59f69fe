"""`cpnet sla set/show`, `cpnet reputation` and the reputation column of `cpnet pools`, against
the shared real hub (the SLA evaluation itself: tests/integration/test_sla.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cpnet.cli import output
from cpnet.cli.config import CliState
from cpnet.cli.main import app

from .conftest import Net, Tenant

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(output.console, "_width", 240)
    monkeypatch.setattr(output.errors, "_width", 240)


def cpnet(net: Net, token: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--hub", net.hub.url, "--token", token, *args], obj=CliState())


def test_declare_show_and_discover_sla_terms(net: Net, tenant: Tenant) -> None:
    cpu = net.pool_ids["cpu"]
    padmin = net.provider.padmin_token
    r = cpnet(net, padmin, "sla", "set", cpu, "--availability", "0.99", "--window", "7200")
    assert r.exit_code == 0, r.output
    assert "availability ≥ 99%" in r.output and "2.0h" in r.output
    r = cpnet(net, padmin, "sla", "set", cpu, "--max-queue-wait", "30", "--credit", "5", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["terms"]["max_queue_wait_s"] == 30 and got["terms"]["credit_percent"] == 5
    assert [h["source"] for h in got["history"]][-2:] == ["admin", "admin"]

    bad = cpnet(net, padmin, "sla", "set", cpu, "--availability", "0.9", "--window", "60")
    assert bad.exit_code != 0 and "window_s must be 3600..2592000" in bad.output
    other = cpnet(net, tenant.token, "sla", "set", cpu, "--availability", "0.9")
    assert other.exit_code != 0  # a user is no provider admin of the pool

    shown = cpnet(net, tenant.token, "sla", "show", cpu)  # anyone may read the terms
    assert shown.exit_code == 0, shown.output
    assert "queue wait ≤ 30 s (p95)" in shown.output and "no window evaluated yet" in shown.output

    pools = cpnet(net, tenant.token, "pools")
    assert pools.exit_code == 0 and "reputation" in pools.output
    row = next(line for line in pools.output.splitlines() if cpu in line)
    assert "SLA" in row
    listed = json.loads(cpnet(net, tenant.token, "pools", "--json").output)["pools"]
    assert {p["id"]: p["sla"] for p in listed}[cpu] is True

    reps = cpnet(net, tenant.token, "reputation", "--json")
    assert reps.exit_code == 0, reps.output
    assert isinstance(json.loads(reps.output)["pools"], list)
