"""The audit chain in the store (cpnet.store.audit) on SQLite and PostgreSQL: records appended in
the caller's transaction (and only if it commits), chained in commit order by concurrent
writers, signed checkpoints, and tampering in SQL caught by verification, naming the record."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import delete, select, text, update

from cpnet.auth.model import Role
from cpnet.ident import SigningKey
from cpnet.store import accounts, audit
from cpnet.store.db import Store
from cpnet.store.tables import AuditRecord

KEY = SigningKey.generate()


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    with s.tx() as sess:
        from cpnet.hub.keys import add_key

        add_key(sess, KEY, time.time())
    yield s
    s.close()


def _verify(store: Store) -> audit.Verdict:
    with store.read() as s:
        return audit.verify(s)


def _append_n(store: Store, n: int, action: str = "test.event") -> None:
    with store.tx() as s:
        for i in range(n):
            audit.append(s, action, time.time(), org_id="org_a", object_id=f"obj{i}")


def test_records_are_written_only_when_the_transaction_commits(store: Store) -> None:
    _append_n(store, 2)
    with pytest.raises(RuntimeError), store.tx() as s:
        audit.append(s, "test.lost", time.time())
        raise RuntimeError("rolled back")
    v = _verify(store)
    assert v.ok and v.records == 2 and v.head[0] == 2
    with store.read() as s:
        assert [r.entry.action for r in audit.records(s)] == ["test.event"] * 2


def test_a_token_change_writes_a_record_without_the_secret(store: Store) -> None:
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        tok, secret = accounts.issue_token(s, role=Role.ADMIN, org_id=org.id, now=now)
    with store.tx() as s:
        accounts.revoke_token(s, tok.id, now)
    with store.read() as s:
        recs = list(audit.records(s))
    assert [(r.entry.action, r.entry.object_id) for r in recs] == [
        ("token.issued", tok.id),
        ("token.revoked", tok.id),
    ]
    assert all(secret not in repr(r) and tok.hash not in repr(r) for r in recs)


def test_concurrent_writers_keep_one_valid_chain_in_commit_order(store: Store) -> None:
    threads, per_thread = 8, 15
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(per_thread):
                with store.tx() as s:
                    audit.append(s, f"writer{k}", time.time(), object_id=str(i))
                    audit.append(s, f"writer{k}", time.time(), object_id=f"{i}b")
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    v = _verify(store)
    assert v.ok, v.problems
    assert v.records == threads * per_thread * 2
    with store.read() as s:
        recs = list(audit.records(s))
    assert [r.seq for r in recs] == list(range(1, v.records + 1))
    # one transaction's two records are adjacent: the chain's order is the order of commit
    for a, b in zip(recs[::2], recs[1::2], strict=True):
        assert a.entry.action == b.entry.action and b.entry.object_id == a.entry.object_id + "b"


def test_checkpoints_sign_the_head_and_catch_a_rewrite_or_truncation(store: Store) -> None:
    _append_n(store, 5)
    with store.tx() as s:
        c = audit.checkpoint(s, KEY, time.time())
    assert c is not None and c.seq == 5
    with store.tx() as s:  # the head did not move: nothing new to sign
        assert audit.checkpoint(s, KEY, time.time()) is None
    assert _verify(store).ok and _verify(store).checkpoints == 1
    # delete the tail and move the head back, as someone covering their tracks would
    with store.tx() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq >= 4))
        row = s.scalar(select(AuditRecord).where(AuditRecord.seq == 3))
        s.execute(text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": row.hash})
    v = _verify(store)
    assert [(p.seq, p.kind) for p in v.problems] == [(5, "truncated")]


@pytest.mark.parametrize("how", ["edit", "delete", "swap"])
def test_tampering_in_sql_is_caught_naming_the_record(store: Store, how: str) -> None:
    _append_n(store, 6)
    assert _verify(store).ok
    with store.tx() as s:
        if how == "edit":
            s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(object_id="forged"))
        elif how == "delete":
            s.execute(delete(AuditRecord).where(AuditRecord.seq == 3))
        else:
            a, b = (s.get(AuditRecord, n) for n in (2, 5))
            va, vb = a.object_id, b.object_id
            s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(object_id=vb))
            s.execute(update(AuditRecord).where(AuditRecord.seq == 5).values(object_id=va))
    v = _verify(store)
    assert not v.ok
    first = v.problems[0]
    expected = {"edit": (3, "edited"), "delete": (3, "missing"), "swap": (2, "edited")}[how]
    assert (first.seq, first.kind) == expected
    if how == "swap":
        assert (5, "edited") in [(p.seq, p.kind) for p in v.problems]
