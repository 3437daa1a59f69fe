"""A Hypothesis state machine over the real store (SQLite): random holds, settlements, cancels,
refunds, SLA credits, credit-limit changes, replays and crashes (a transaction that dies before
COMMIT). After every step `books.check` finds nothing: the books balance, every account equals
the sum of its postings and none is below its floor, escrow is exactly the pending holds; and
replaying a written transfer changes no balance."""

from __future__ import annotations

import shutil
import tempfile
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from cpnet.errors import Conflict, PaymentRequired
from cpnet.market import ledger as L
from cpnet.store import accounts, books
from cpnet.store import ledger as sl
from cpnet.store.db import Store
from cpnet.store.tables import LedgerAccount, LedgerTransfer

NOW = 1_796_083_200.0  # 2026-12-01


class Crash(Exception):
    """The process died before COMMIT."""


class StoreLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="cpnet-ledger-machine-")
        self.store = Store(f"sqlite:///{self.dir}/cpnet.db")
        self.store.migrate()
        with self.store.tx() as s:
            self.org = accounts.create_org(s, "buyer", NOW).id
            self.host = accounts.create_org(s, "host", NOW).id
        self.pending: list[str] = []  # task ids with a pending hold
        self.n = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _id(self) -> str:
        self.n += 1
        return f"x{self.n}"

    def _balances(self) -> dict[str, int]:
        with self.store.read() as s:
            return {i: b for i, b in s.execute(select(LedgerAccount.id, LedgerAccount.balance))}

    @rule(amount=st.integers(1, 5_000))
    def top_up(self, amount: int) -> None:
        with self.store.tx() as s:
            assert sl.topup(s, self.org, amount, f"top:{self._id()}", NOW)

    @rule(limit=st.integers(0, 3_000))
    def credit_limit(self, limit: int) -> None:
        try:
            with self.store.tx() as s:
                sl.set_credit_limit(s, self.org, limit, NOW)
        except Conflict:
            pass  # below the credit in use: refused, nothing changed

    @rule(amount=st.integers(0, 4_000))
    def hold(self, amount: int) -> None:
        tid = self._id()
        try:
            with self.store.tx() as s:
                sl.open_hold(s, self.org, None, tid, amount, 500, NOW)
        except PaymentRequired as exc:
            assert exc.extra["shortfall_minor"] > 0
            return
        self.pending.append(tid)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), charges=st.lists(st.integers(0, 5_000), max_size=3))
    def settle(self, data, charges) -> None:  # type: ignore[no-untyped-def]
        tid = data.draw(st.sampled_from(self.pending))
        lines = [
            sl.Metered(f"{tid}-a{i}", "pool", self.host, 60.0, "1", c)
            for i, c in enumerate(charges)
        ]
        with self.store.tx() as s:
            assert sl.settle_hold(s, tid, lines, NOW) is not None
        with self.store.tx() as s:  # a replayed settlement: nothing
            assert sl.settle_hold(s, tid, lines, NOW) is None
        self.pending.remove(tid)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data) -> None:  # type: ignore[no-untyped-def]
        tid = data.draw(st.sampled_from(self.pending))
        with self.store.tx() as s:
            done = sl.settle_hold(s, tid, [], NOW)
        assert done is not None and done.state is L.HoldState.VOIDED
        self.pending.remove(tid)

    @rule(amount=st.integers(1, 800), source=st.sampled_from(["provider", "revenue"]))
    def refund(self, amount: int, source: str) -> None:
        src = L.provider_account(self.host) if source == "provider" else L.REVENUE
        t = L.Transfer(
            f"ref:{self._id()}", src, L.org_account(self.org), amount, L.TransferKind.REFUND, NOW
        )
        try:
            with self.store.tx() as s:
                sl.post(s, t)
        except PaymentRequired:
            pass  # more than was earned: refused whole

    @rule(amount=st.integers(1, 800))
    def sla_credit(self, amount: int) -> None:
        t = L.Transfer(
            f"cr:{self._id()}", L.SLA, L.org_account(self.org), amount, L.TransferKind.CREDIT, NOW
        )
        with self.store.tx() as s:
            assert sl.post(s, t)

    @rule()
    def replay(self) -> None:
        with self.store.read() as s:
            written = [
                L.Transfer(
                    r.id,
                    r.debit,
                    r.credit,
                    r.amount,
                    L.TransferKind(r.kind),
                    time.time(),
                    task_id=r.task_id,
                    hold_id=r.hold_id,
                    attempt_id=r.attempt_id,
                )
                for r in s.scalars(select(LedgerTransfer).limit(50))
            ]
        before = self._balances()
        for t in written:
            with self.store.tx() as s:
                assert sl.post(s, t) is False
        assert self._balances() == before

    @rule(amount=st.integers(1, 4_000))
    def crash(self, amount: int) -> None:
        before = self._balances()
        tid = self._id()
        try:
            with self.store.tx() as s:
                sl.open_hold(s, self.org, None, tid, amount, 500, NOW)
                raise Crash
        except (Crash, PaymentRequired):
            pass
        assert self._balances() == before

    @invariant()
    def books_check(self) -> None:
        with self.store.read() as s:
            c = books.check(s)
        assert c.ok, c.problems
        assert c.total == 0


TestStoreLedger = StoreLedger.TestCase
TestStoreLedger.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
