"""Batch creation (hub/tasks.submit_many) against a real store: a batch that passes together is
written with a few statements for all its items, and one that does not — money, a spending limit,
a quota — falls back to item by item, so each item is still created or refused on its own, with
exactly the outcome it would have had alone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from cpnet.auth.model import Principal, Role
from cpnet.hub import tasks
from cpnet.hub.service import Hub
from cpnet.limits.quota import Quota
from cpnet.market import ledger as L
from cpnet.store import accounts, ledger
from cpnet.store import quotas as quota_store
from cpnet.store import tasks as task_store
from cpnet.store.tables import AuditRecord, LedgerHold, Task, TaskEvent
from cpnet.tasks.model import TaskSpec
from tests.unit.hub.test_market import make_hub

HOLD = 1_000  # minor units: every task here holds its budget


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return make_hub(tmp_path)


def user(h: Hub, funds: int) -> Principal:
    now = time.time()
    with h.store.tx() as s:
        org = accounts.create_org(s, f"org-{uuid.uuid4().hex[:6]}", now)
        ledger.topup(s, org.id, funds, f"funds-{org.id}", now)
        u = accounts.create_user(s, org.id, "alice", Role.USER, now)
    return Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=u.id)


def spec(**kw: object) -> TaskSpec:
    body = {
        "executors": [{"command": ["true"]}],
        "constraints": {"budget": HOLD / 100},  # major units: the hold is exactly HOLD
        **kw,
    }
    return TaskSpec.model_validate(body)


def balance(h: Hub, org_id: str) -> int:
    with h.store.read() as s:
        return ledger.account(s, L.org_account(org_id)).balance


def test_a_batch_that_fits_is_created_whole_with_its_holds_events_and_audit(hub: Hub) -> None:
    who = user(hub, 100 * HOLD)
    before = balance(hub, who.org_id)
    with hub.store.read() as s:
        audited = s.scalar(select(func.count()).select_from(AuditRecord)) or 0
    out = tasks.submit_many(hub, who, [spec(name=f"t{i}") for i in range(20)])
    assert [x.status for x in out] == [201] * 20
    ids = [x.id for x in out]
    assert len(set(ids)) == 20
    assert balance(hub, who.org_id) == before - 20 * HOLD
    with hub.store.read() as s:
        rows = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ids)))}
        assert [rows[i].name for i in ids] == [f"t{i}" for i in range(20)]
        seqs = [rows[i].seq for i in ids]
        assert seqs == sorted(seqs)  # created in the batch's order: scheduled oldest first
        assert all(rows[i].state == "QUEUED" and rows[i].user_id == who.user_id for i in ids)
        holds = {
            h.task_id: h for h in s.scalars(select(LedgerHold).where(LedgerHold.task_id.in_(ids)))
        }
        assert {i: holds[i].amount for i in ids} == dict.fromkeys(ids, HOLD)
        events = s.execute(
            select(TaskEvent.task_id, TaskEvent.reason).where(TaskEvent.task_id.in_(ids))
        ).all()
        assert sorted(events) == sorted((i, "created") for i in ids)
        # the call's record and one per hold's transfer, in the batch's transaction
        assert (s.scalar(select(func.count()).select_from(AuditRecord)) or 0) >= audited + 20


def test_idempotency_keys_repeat_inside_and_across_batches(hub: Hub) -> None:
    who = user(hub, 100 * HOLD)
    first = tasks.submit_many(hub, who, [spec(idempotency_key="a"), spec(idempotency_key="b")])
    again = tasks.submit_many(
        hub,
        who,
        [spec(idempotency_key="b"), spec(idempotency_key="c"), spec(idempotency_key="c")],
    )
    assert [x.status for x in first] == [201, 201]
    assert [x.status for x in again] == [200, 201, 200]
    assert again[0].id == first[1].id and again[1].id == again[2].id
    assert balance(hub, who.org_id) == 100 * HOLD - 3 * HOLD  # one hold per task made
    with hub.store.read() as s:
        assert (
            s.scalar(select(func.count()).select_from(Task).where(Task.org_id == who.org_id)) == 3
        )


def test_money_for_part_of_a_batch_creates_that_part_and_refuses_the_rest(hub: Hub) -> None:
    who = user(hub, 3 * HOLD)
    out = tasks.submit_many(hub, who, [spec(name=f"t{i}") for i in range(5)])
    assert [x.status for x in out] == [201, 201, 201, 402, 402]
    assert out[3].error is not None and out[3].error.field == "constraints.budget"
    assert balance(hub, who.org_id) == 0
    with hub.store.read() as s:
        names = set(s.scalars(select(Task.name).where(Task.org_id == who.org_id)))
        assert names == {"t0", "t1", "t2"}  # the refused left no task, hold or event behind
        assert s.scalar(select(func.count()).select_from(LedgerHold)) == 3


def test_a_spending_limit_is_checked_item_by_item(hub: Hub) -> None:
    who = user(hub, 100 * HOLD)
    with hub.store.tx() as s:
        ledger.set_spending_limit(s, who.org_id, None, 2 * HOLD, time.time())
    out = tasks.submit_many(hub, who, [spec() for _ in range(4)])
    assert [x.status for x in out] == [201, 201, 402, 402]
    assert balance(hub, who.org_id) == 98 * HOLD


def test_a_quota_refuses_only_the_items_past_it(hub: Hub) -> None:
    who = user(hub, 100 * HOLD)
    with hub.store.tx() as s:
        quota_store.put(s, who.org_id, Quota(queued=3, cores=None, gpus=None), time.time())
    out = tasks.submit_many(hub, who, [spec() for _ in range(5)])
    assert [x.status for x in out] == [201, 201, 201, 429, 429]
    out = tasks.submit_many(hub, who, [spec()])
    assert [x.status for x in out] == [429]
    assert balance(hub, who.org_id) == 97 * HOLD


def test_a_plain_batch_costs_the_same_statements_whatever_its_size(hub: Hub) -> None:
    """The point of the bulk path: the statements do not grow with the batch (the audit chain's
    and the accounts' updates are per batch too)."""
    who = user(hub, 1000 * HOLD)
    tasks.submit_many(hub, who, [spec()])  # accounts opened, caches warm
    counts = []
    for n in (10, 200):
        seen: list[str] = []

        def count(_conn, _cur, statement, *_, seen=seen):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(hub.store.engine, "before_cursor_execute", count)
        try:
            out = tasks.submit_many(hub, who, [spec() for _ in range(n)])
        finally:
            event.remove(hub.store.engine, "before_cursor_execute", count)
        assert [x.status for x in out] == [201] * n
        counts.append(len(seen))
    assert counts[1] == counts[0], counts


def test_a_single_submission_shows_the_task_as_it_reads_back(hub: Hub) -> None:
    """A plain single submission is made the batch's way and shown without reading it back:
    what it shows must be what the store holds; a repeat of its key finds and shows that."""
    who = user(hub, 100 * HOLD)
    first = tasks.submit(hub, who, spec(name="one", tags={"k": "v"}, idempotency_key="once"))
    again = tasks.submit(hub, who, spec(name="one", tags={"k": "v"}, idempotency_key="once"))
    assert first.created and not again.created and again.id == first.id
    with hub.store.read() as s:
        stored = task_store.task_view(s, task_store.task_by_id(s, first.id))
    assert first.view is not None and again.view is not None
    assert first.view.model_dump() == stored.model_dump() == again.view.model_dump()
    assert balance(hub, who.org_id) == 99 * HOLD
