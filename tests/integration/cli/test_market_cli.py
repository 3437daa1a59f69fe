"""`cpnet account`, `cpnet bill` and a 402 at `cpnet submit`, against the shared real hub."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpnet.cli import output
from cpnet.cli.config import CliState
from cpnet.cli.main import app
from cpnet.market import ledger as L
from cpnet.tasks.states import State

from .conftest import Tenant

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(output.console, "_width", 200)
    monkeypatch.setattr(output.errors, "_width", 200)


def cpnet(tenant: Tenant, *args: str, token: str | None = None):  # type: ignore[no-untyped-def]
    prefix = ["--hub", tenant.url, "--token", token or tenant.token]
    return runner.invoke(app, [*prefix, *args], obj=CliState())


def test_account_bill_and_a_402(tenant: Tenant, tmp_path: Path) -> None:
    org = tenant.world.org_id
    admin = tenant.net.hub.admin_token
    shown = cpnet(tenant, "account", "show", "--json")  # your own organisation
    assert shown.exit_code == 0, shown.output
    before = json.loads(shown.output)
    assert before["balance"] == 100_000_000 and before["held"] == 0

    r = cpnet(tenant, "submit", "--wait", "--cpus", "1", "--", "sleep", "1")
    assert r.exit_code == 0, r.output
    with tenant.client() as c:
        (task,) = list(c.iter_tasks())
        assert task.state is State.COMPLETE
    period = L.period_of(time.time())
    out_csv, out_html = tmp_path / "bill.csv", tmp_path / "bill.html"
    r = cpnet(
        tenant, "bill", org, "--period", period, "--csv", str(out_csv), "--html", str(out_html)
    )
    assert r.exit_code == 0, r.output
    assert "payouts" in r.output and "fees" in r.output
    rows = list(csv.DictReader(out_csv.open()))
    # 1 core × 0.10 CNY/h × ~1 s rounds to 0 fen: no charged line, a zero total
    # (tests/integration/test_ledger.py bills a priced pool to the fen)
    assert rows[-1]["task_id"] == "TOTAL" and rows[-1]["charge"] == "0.00"
    assert "<table>" in out_html.read_text()
    after = json.loads(cpnet(tenant, "account", "show", org, "--json").output)
    assert after["held"] == 0 and after["balance"] == before["balance"]
    own = cpnet(tenant, "bill", "--json")  # your own organisation, this month
    assert own.exit_code == 0, own.output
    assert json.loads(own.output)["org_id"] == org

    # a user may not fund itself; an admin may, and may set a monthly limit
    r = cpnet(tenant, "account", "topup", org, "5.00")
    assert r.exit_code == 1 and "admin" in r.output.lower()
    r = cpnet(tenant, "account", "limit", org, "--monthly", "0.01", token=admin)
    assert r.exit_code == 0, r.output
    assert "monthly limit" in r.output
    r = cpnet(tenant, "submit", "--cpus", "1", "--", "true")
    assert r.exit_code == 1
    assert "short by" in r.output and "spending limit" in r.output
    r = cpnet(tenant, "account", "limit", org, "--remove-monthly", token=admin)
    assert r.exit_code == 0, r.output
    r = cpnet(tenant, "account", "topup", org, "1.234", token=admin)
    assert r.exit_code == 1 and "digits after the point" in r.output


def test_usage_shows_a_tasks_signed_records_with_their_verdicts(tenant: Tenant) -> None:
    r = cpnet(tenant, "submit", "--wait", "--cpus", "1", "--", "sleep", "1")
    assert r.exit_code == 0, r.output
    with tenant.client() as c:
        task = next(t for t in c.iter_tasks() if t.state is State.COMPLETE)
        (att,) = c.task(task.id).attempts
    shown = cpnet(tenant, "usage", task.id)
    assert shown.exit_code == 0, shown.output
    assert att.attempt_id in shown.output and "accepted" in shown.output
    as_json = cpnet(tenant, "usage", task.id, "--json")
    assert as_json.exit_code == 0, as_json.output
    (rec,) = json.loads(as_json.output)["records"]
    assert rec["verdict"] == "accepted" and rec["envelope"]["record"]["task_id"] == task.id
    assert rec["wall_s"] == rec["envelope"]["record"]["wall_s"] >= 1.0
    r = cpnet(tenant, "usage")  # neither a task nor --site
    assert r.exit_code != 0
    r = cpnet(tenant, "usage", "tsk_nope0000000000")
    assert r.exit_code == 1 and "tsk_nope" in r.output
