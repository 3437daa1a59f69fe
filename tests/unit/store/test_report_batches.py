"""An agent's batch of reports applied set-wise (`store.tasks.apply_updates`: usage records
judged together, ended tasks settled together) on SQLite and PostgreSQL must end exactly as the
same reports applied one at a time, each in its own transaction: the same task states, usage
verdicts, transfers and balances; books that check and an audit chain that verifies."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cpnet.auth.model import Principal, Role
from cpnet.ident.keys import SigningKey
from cpnet.market import ledger as L
from cpnet.market import metering
from cpnet.sched import Resources
from cpnet.store import accounts, audit, books, ledger, usage
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, LedgerTransfer, Task
from cpnet.tasks.model import AttemptUpdate, TaskSpec, Usage
from cpnet.tasks.states import State
from tests.unit.store.test_ledger_store import KEY, _world

FORGER = SigningKey.generate()  # not a usage key of the site


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _org(store: Store, name: str) -> Principal:
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, name, now)
        user = accounts.create_user(s, org.id, f"{name}-user", Role.USER, now)
        ledger.topup(s, org.id, 1_000_000, f"top-{name}", now)
    return Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=user.id)


def _started(store: Store, who: Principal, pool: str, site: str, n: int, now: float) -> list[str]:
    """n tasks of `who`, each held 50.00, placed (1 core) and reported RUNNING at now + 1."""
    spec = TaskSpec(executors=[{"command": ["true"]}], resources={"cpu_cores": 1, "ram_gb": 1})
    aids = []
    with store.tx() as s:
        for _ in range(n):
            task, _ = ts.create_task(s, who, spec, now)
            ledger.open_hold(s, who.org_id, who.user_id, task.id, 5_000, 500, now)
            aid = ts.place(s, task, pool, site, Resources(1, 1, 0, 0), now, "test")
            assert aid
            aids.append(aid)
    return aids


def _update(
    store: Store, site: str, aid: str, state: State, at: float, wall: float = 0, key=KEY
) -> AttemptUpdate:
    record = None
    if wall:
        with store.read() as s:
            a = s.get(Attempt, aid)
            assert a is not None
            task_id, pool_id = a.task_id, a.pool_id
        rec = metering.build(
            site_id=site,
            task_id=task_id,
            attempt_id=aid,
            pool_id=pool_id,
            started_at=at - wall,
            ended_at=at,
            wall_s=wall,
            demand={"cpu_cores": 1, "ram_gb": 1},
        )
        record = metering.sign(rec, key)
    return AttemptUpdate(
        attempt_id=aid,
        state=state,
        at=datetime.fromtimestamp(at, UTC),
        usage=Usage(wall_s=wall) if wall else None,
        usage_record=record,
    )


def _scenario(
    store: Store, who: Principal, site: str, pool: str, now: float, apply: Callable
) -> tuple[list[str], list]:
    """Five tasks — completed, failed, canceled, completed with a forged usage record, and
    completed then replayed — plus a report on an attempt the site does not have; `apply`
    applies a list of reports (one batch, or one at a time). Returns the tasks and results."""
    aids = _started(store, who, pool, site, 5, now)
    apply([_update(store, site, a, State.RUNNING, now + 1) for a in aids])
    with store.tx() as s:  # the third is canceled while it runs: its agent must stop it
        third = s.scalar(select(Task).join(Attempt).where(Attempt.id == aids[2]))
        ts.cancel_task(s, third, now + 50)
    end = now + 101
    finals = [
        _update(store, site, aids[0], State.COMPLETE, end, 100.0),
        _update(store, site, aids[1], State.EXECUTOR_ERROR, end, 60.0),
        _update(store, site, aids[2], State.CANCELED, end, 100.0),
        _update(store, site, aids[3], State.COMPLETE, end, 100.0, key=FORGER),
        _update(store, site, aids[4], State.COMPLETE, end, 30.0),
    ]
    finals.append(finals[-1])  # the last one again, in the same batch: a replay
    # on an attempt the site does not have, carrying another record of the first attempt (a
    # conflict), and one naming no attempt of the hub (not ours: read, not loaded by the batch)
    stray = _update(store, site, aids[0], State.COMPLETE, end, 5.0)
    finals.append(stray.model_copy(update={"attempt_id": "att_notours"}))
    body = {**stray.usage_record.record, "attempt_id": "att_nope", "record_id": "att_nope/1"}
    nope = {"record": body, "signature": metering.sign(body, KEY)["signature"]}
    signed = metering.SignedUsage.model_validate(nope)
    finals.append(stray.model_copy(update={"attempt_id": "att_nope", "usage_record": signed}))
    results = apply(finals)
    with store.read() as s:
        tids = [s.get(Attempt, a).task_id for a in aids]
    return tids, results


def _outcome(store: Store, who: Principal, tids: list[str]) -> dict:
    """What the scenario left, free of ids: per task its state, verdicts, transfers and hold."""
    with store.read() as s:
        per_task = []
        for tid in tids:
            task = s.scalar(select(Task).where(Task.id == tid))
            rows = s.scalars(select(LedgerTransfer).where(LedgerTransfer.task_id == tid))
            per_task.append(
                (
                    task.state,
                    [r["verdict"] for r in usage.of_task(s, tid)],
                    sorted((t.kind, int(t.amount)) for t in rows),
                )
            )
        return {
            "tasks": per_task,
            "org": ledger.account(s, L.org_account(who.org_id)).balance,
            "escrow": ledger.account(s, L.escrow_account(who.org_id)).balance,
        }


def test_a_mixed_batch_settles_exactly_as_one_report_at_a_time(store: Store) -> None:
    _who, _host, site, pool = _world(store)
    now = time.time()
    alone, batched = _org(store, "alone"), _org(store, "batched")

    def one_at_a_time(updates: list[AttemptUpdate]) -> list:
        out = []
        for u in updates:
            with store.tx() as s:
                out.append(ts.apply_update(s, site, u, now + 200))
        return out

    def one_batch(updates: list[AttemptUpdate]) -> list:
        with store.tx() as s:
            return ts.apply_updates(s, site, updates, now + 200)

    tids_a, res_a = _scenario(store, alone, site, pool, now, one_at_a_time)
    tids_b, res_b = _scenario(store, batched, site, pool, now, one_batch)

    def shape(rs: list) -> list:
        return [(r.status, r.cancel, r.released, r.usage and r.usage.verdict) for r in rs]

    assert shape(res_b) == shape(res_a)
    got, want = _outcome(store, batched, tids_b), _outcome(store, alone, tids_a)
    assert got == want
    # and what that is: the forged record refused (charged the observed span), the replay a
    # duplicate, the stray record kept as not_ours; every hold settled, nothing left in escrow
    verdicts = [v for _state, v, _t in got["tasks"]]
    assert verdicts == [
        ["accepted", "conflict"],
        ["accepted"],
        ["accepted"],
        ["bad_signature"],
        ["accepted"],
    ]
    assert [st for st, _v, _t in got["tasks"]] == [
        "COMPLETE",
        "EXECUTOR_ERROR",
        "CANCELED",
        "COMPLETE",
        "COMPLETE",
    ]
    assert got["escrow"] == 0 and all(t for _s, _v, t in got["tasks"])
    assert [r.usage.verdict.value for r in res_b[-3:]] == ["duplicate", "conflict", "not_ours"]
    assert [r.status for r in res_b[-2:]] == ["rejected", "rejected"]
    with store.read() as s:
        check = books.check(s)
        assert check.ok, check.problems
        assert audit.verify(s).ok
    with store.read() as s:  # the stray records are kept as evidence, once per organisation
        kept = s.scalars(select(usage.UsageRecord.verdict)).all()
    assert sorted(kept).count("not_ours") == 2
    # a replay of the final reports changes nothing
    states = [State.COMPLETE, State.EXECUTOR_ERROR, State.CANCELED, State.COMPLETE, State.COMPLETE]
    walls = [100.0, 60.0, 100.0, 100.0, 30.0]
    keys = [KEY, KEY, KEY, FORGER, KEY]
    with store.read() as s:
        aids = _aids(s, tids_b)
    replay = [
        _update(store, site, a, st, now + 101, w, k)
        for a, st, w, k in zip(aids, states, walls, keys, strict=True)
    ]
    with store.tx() as s:
        again = ts.apply_updates(s, site, replay, now + 300)
    assert {r.status for r in again} == {"duplicate"}, again
    assert _outcome(store, batched, tids_b) == got


def _aids(s, tids: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.scalar(select(Attempt.id).where(Attempt.task_id == t)) for t in tids]


def test_a_record_for_a_task_ended_earlier_in_the_batch_is_judged_after_it_settled(
    store: Store,
) -> None:
    """A final report without a record, then the same report with one, in one batch: one at a
    time the task settles on the span the hub observed before the record arrives; the batch
    must settle it the same way (the record is still judged and kept)."""
    _who, _host, site, pool = _world(store)
    now = time.time()
    alone, batched = _org(store, "alone"), _org(store, "batched")
    outcomes = []
    for who, batch in ((alone, False), (batched, True)):
        (aid,) = _started(store, who, pool, site, 1, now)
        running = _update(store, site, aid, State.RUNNING, now + 1)
        bare = _update(store, site, aid, State.COMPLETE, now + 101)
        signed = _update(store, site, aid, State.COMPLETE, now + 101, 10.0)
        updates = [running, bare, signed]
        if batch:
            with store.tx() as s:
                ts.apply_updates(s, site, updates, now + 200)
        else:
            for u in updates:
                with store.tx() as s:
                    ts.apply_update(s, site, u, now + 200)
        with store.read() as s:
            tid = s.get(Attempt, aid).task_id
        outcomes.append(_outcome(store, who, [tid]))
    assert outcomes[1] == outcomes[0]
    assert outcomes[0]["tasks"][0][1] == ["accepted"]
