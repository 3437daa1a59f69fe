"""Signed metering end to end: a real agent signs its attempt's usage record with its site's key,
the hub accepts it and bills by it — payout + fee = charge to the fen — and a forged, replayed
or foreign record is refused with its reason in the answer and kept as evidence."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx
import pytest

from cpnet.ident.keys import SigningKey, verify
from cpnet.market import charge, metering
from cpnet.market import ledger as L
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

PRICE = 360.0  # CNY per core-hour: 0.1 CNY per core-second
CORES = 2
DEMAND = {"cpu_cores": CORES, "ram_gb": 0.5}


def _agent(hub: HubProc, token: str, work: Path, agents: list) -> AgentProc:
    a = AgentProc(hub, token, work, [pool("cpu", cores=4, price=PRICE)])
    a.start()
    agents.append(a)
    return a


def _site_key(agent: AgentProc) -> SigningKey:
    """The usage key the real agent made in its work dir (0600) and registered."""
    path = agent.work_dir / "usage_key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    return SigningKey.from_pem(path.read_bytes())


def _post(hub: HubProc, site_id: str, token: str, envelope: dict) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/v1/sites/{site_id}/usage",
        json=envelope,
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )


def _resign(envelope: dict, key: SigningKey, **change: object) -> dict:
    """A copy of the record with `change`, signed with `key` (a forger's tool, in the test)."""
    body = {k: v for k, v in copy.deepcopy(envelope["record"]).items() if k != "key_id"}
    body.update(change)
    return metering.sign(body, key)


def test_a_signed_record_is_billed_and_forged_or_replayed_ones_are_refused(
    hub: HubProc, agents, tmp_path: Path
) -> None:
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "110000")})
    site_a, site_b = world.site_ids["a"], world.site_ids["b"]
    tok_a, tok_b = world.site_tokens["a"], world.site_tokens["b"]
    agent_a = _agent(hub, tok_a, tmp_path / "agent-a", agents)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online", log=agent_a.log)

    # --- the happy path: the agent's own code signs the record; the bill charges by it ---
    t = user.submit(
        {
            "executors": [{"command": ["sleep", "1"]}],
            "resources": {"cpu_cores": CORES, "ram_gb": 0.5},
            "expected_runtime_s": 60,
        }
    )
    done = user.wait(t.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    (att,) = done.attempts
    assert att.site_id == site_a
    (got,) = user.task_usage(t.id).records
    key_a = _site_key(agent_a)
    assert got.verdict == "accepted" and got.key_id == key_a.key_id, got
    rec = got.envelope["record"]
    assert (rec["attempt_id"], rec["task_id"], rec["site_id"]) == (att.attempt_id, t.id, site_a)
    assert rec["pool_id"] == att.pool_id and rec["record_id"] == f"{att.attempt_id}/1"
    assert 1.0 <= got.wall_s == rec["wall_s"] < 30
    assert rec["resource_s"]["cpu_core_s"] == pytest.approx(CORES * rec["wall_s"], abs=0.002)
    # The signature verifies with the site's key (what an auditor holding the evidence can do).
    data = metering.canonical_json(got.envelope["record"])
    assert verify(key_a.public_key_b64, data, got.envelope["signature"]["value"])

    bill = user.bill(world.org_id, L.period_of(time.time()))
    (line,) = bill.lines
    expected = charge.usage_charge({"cpu_core_hour": PRICE}, DEMAND, got.wall_s)
    assert line.seconds == got.wall_s and line.charge == expected > 0
    payout, fee = charge.split(expected, 500)
    assert (line.payout, line.fee) == (payout, fee)
    assert bill.charged == expected == bill.payouts + bill.fees

    # --- the same record again: a no-op (200), nothing new kept ---
    r = _post(hub, site_a, tok_a, got.envelope)
    assert r.status_code == 200 and r.json()["verdict"] == "duplicate", r.text

    # --- replayed with other content, validly signed with site A's own key: refused ---
    replay = _resign(got.envelope, key_a, wall_s=0.5)
    r = _post(hub, site_a, tok_a, replay)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "conflict" and err["field"] == "record.record_id", err
    assert "accepted" in err["message"]

    # --- signed with another site's key (site B's real agent made and registered it) ---
    agent_b = _agent(hub, tok_b, tmp_path / "agent-b", agents)
    wait_until(
        lambda: (agent_b.work_dir / "usage_key.pem").exists(), 30, "B's key", log=agent_b.log
    )
    wait_until(lambda: len(user.pools()) == 2, 30, "B's pool online", log=agent_b.log)
    key_b = _site_key(agent_b)
    assert key_b.key_id != key_a.key_id
    forged = _resign(got.envelope, key_b, wall_s=0.75, record_id=f"{att.attempt_id}/2")
    r = _post(hub, site_a, tok_a, forged)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_signature" and err["field"] == "record.key_id", err
    assert key_b.key_id in err["message"] and site_a in err["message"]
    # Tampering after signing: site A's key id, but a figure changed.
    tampered = copy.deepcopy(got.envelope)
    tampered["record"]["wall_s"] = 0.25
    r = _post(hub, site_a, tok_a, tampered)
    assert r.status_code == 403 and r.json()["error"]["field"] == "record.signature", r.text

    # --- site B claiming site A's attempt (with B's own valid key): not B's attempt ---
    theirs = _resign(got.envelope, key_b, site_id=site_b)
    r = _post(hub, site_b, tok_b, theirs)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "not_ours" and err["field"] == "record.attempt_id", err
    # An attempt the hub never placed anywhere.
    ghost = _resign(got.envelope, key_a, attempt_id="att_ghost", record_id="att_ghost/1")
    r = _post(hub, site_a, tok_a, ghost)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ours", r.text
    # Another site's token may not send for site A at all.
    assert _post(hub, site_a, tok_b, got.envelope).status_code == 403

    # --- every record received is kept, with its verdict, as evidence ---
    kept = user.task_usage(t.id).records
    assert [k.verdict for k in kept] == [
        "accepted",
        "conflict",
        "bad_signature",
        "bad_signature",
        "not_ours",
    ], [(k.verdict, k.reason) for k in kept]
    assert kept[1].envelope == replay and kept[2].envelope == forged
    assert all(k.wall_s is None for k in kept[1:])
    with hub.client(world.padmin_token) as padmin:  # the site's provider sees its site's records
        from_a = padmin.site_usage(site_a).records
    assert {k.verdict for k in from_a} >= {"accepted", "conflict", "bad_signature", "not_ours"}
    # The refusals changed nothing: the bill is as it was.
    again = user.bill(world.org_id, L.period_of(time.time()))
    assert again.charged == bill.charged and len(again.lines) == 1
