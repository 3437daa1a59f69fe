"""The ledger's rules (cpnet.market.ledger): plain transfers, holds, limits; and a Hypothesis
state machine over random holds, settlements, voids, refunds, credits, replays and crashes."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cpnet.errors import Conflict, Invalid, PaymentRequired
from cpnet.market import ledger as L

ORG, PROV = "org_a", "org_p"


def books(credit_limit: int = 0) -> dict[str, L.Account]:
    ids = [
        L.FUNDING,
        L.REVENUE,
        L.SLA,
        L.org_account(ORG),
        L.escrow_account(ORG),
        L.provider_account(PROV),
    ]
    out = {}
    for i in ids:
        k = L.kind_of(i)
        floor = L.default_floor(k)
        if k is L.Kind.ORG:
            floor = -credit_limit
        out[i] = L.Account(i, k, 0, floor)
    return out


def topup(i: str, amount: int) -> L.Transfer:
    return L.Transfer(i, L.FUNDING, L.org_account(ORG), amount, L.TransferKind.TOPUP, 0.0)


def test_kinds_of_account_ids() -> None:
    assert L.kind_of("org:x") is L.Kind.ORG
    assert L.kind_of("escrow:x") is L.Kind.ESCROW
    assert L.kind_of("provider:x") is L.Kind.PROVIDER
    assert L.kind_of(L.REVENUE) is L.Kind.REVENUE
    assert L.kind_of(L.SLA) is L.Kind.SLA
    assert L.kind_of(L.FUNDING) is L.Kind.FUNDING
    for bad in ("platform:other", "org:", "nothing"):
        with pytest.raises(Invalid):
            L.kind_of(bad)


def test_post_moves_money_and_keeps_the_sum_zero() -> None:
    acc = L.post(books(), topup("t1", 500))
    assert acc[L.org_account(ORG)].balance == 500
    assert sum(a.balance for a in acc.values()) == 0


@pytest.mark.parametrize("amount", [0, -1, 1.5])
def test_amounts_are_positive_whole_minor_units(amount) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Invalid):
        L.post(books(), topup("t", amount))


def test_a_debit_below_the_floor_names_the_shortfall() -> None:
    acc = L.post(books(credit_limit=100), topup("t1", 50))
    h = L.Hold("hold:x", ORG, "x", 200)
    (t,) = L.reserve(h, 0.0)
    with pytest.raises(PaymentRequired) as e:
        L.post(acc, t)
    assert e.value.status == 402 and e.value.code == "insufficient_funds"
    assert "short by 0.50 CNY" in e.value.message and "cpnet account topup" in e.value.message
    assert e.value.extra["shortfall_minor"] == 50


def test_replay_is_a_noop_and_other_content_is_refused() -> None:
    t = topup("t1", 500)
    assert not L.is_replay(t, None)
    assert L.is_replay(t, t)
    later = L.Transfer("t1", L.FUNDING, L.org_account(ORG), 500, L.TransferKind.TOPUP, 99.0)
    assert L.is_replay(later, t)  # a retry later is the same transfer
    with pytest.raises(Conflict):
        L.is_replay(topup("t1", 501), t)


def test_settle_pays_provider_and_fee_and_releases_the_rest() -> None:
    h = L.Hold("hold:x", ORG, "x", 1000)
    done, ts = L.settle(h, [L.ChargeLine("att1", PROV, 300)], 500, 1.0)
    by = {t.kind: t.amount for t in ts}
    assert by == {L.TransferKind.PAYOUT: 285, L.TransferKind.FEE: 15, L.TransferKind.RELEASE: 700}
    assert done.state is L.HoldState.POSTED and done.charged == 300
    assert L.settle(done, [L.ChargeLine("att1", PROV, 300)], 500, 2.0) == (done, ())


def test_the_charge_is_capped_at_the_hold() -> None:
    h = L.Hold("hold:x", ORG, "x", 100)
    done, ts = L.settle(h, [L.ChargeLine("a1", PROV, 80), L.ChargeLine("a2", PROV, 80)], 0, 1.0)
    assert done.charged == 100
    assert sum(t.amount for t in ts) == 100
    assert not any(t.kind is L.TransferKind.RELEASE for t in ts)


def test_void_releases_everything() -> None:
    done, ts = L.void(L.Hold("hold:x", ORG, "x", 100), 1.0)
    assert done.state is L.HoldState.VOIDED and done.charged == 0
    assert [(t.kind, t.amount) for t in ts] == [(L.TransferKind.RELEASE, 100)]


def test_period_and_limits() -> None:
    assert L.period_of(1796083200.0) == "2026-12"  # 2026-12-01T00:00:00Z
    assert L.over_limit(None, 10**9, 1) == 0
    assert L.over_limit(1000, 900, 100) == 0
    assert L.over_limit(1000, 900, 150) == 50


# ---- the state machine ----


class LedgerMachine(RuleBasedStateMachine):
    """Random sequences over one org, its escrow, a provider, revenue, SLA and funding.

    Each step is a "transaction": the transfers it asks for are posted to a copy of the books
    and committed only if all land (a refused one rolls the step back whole); `crash` drops a
    step's transfers after computing them, as a killed process drops an uncommitted transaction.
    Every committed transfer is kept by id, so a replay can be checked to change nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accounts = books(credit_limit=300)
        self.written: dict[str, L.Transfer] = {}
        self.holds: dict[str, L.Hold] = {}
        self.n = 0

    def _commit(self, transfers, holds=()) -> bool:  # type: ignore[no-untyped-def]
        acc = dict(self.accounts)
        fresh = []
        try:
            for t in transfers:
                if L.is_replay(t, self.written.get(t.id)):
                    continue
                acc = L.post(acc, t)
                fresh.append(t)
        except PaymentRequired:
            return False  # rolled back: nothing of the step is written
        self.accounts = acc
        self.written.update({t.id: t for t in fresh})
        self.holds.update({h.id: h for h in holds})
        return True

    def _id(self) -> str:
        self.n += 1
        return f"x{self.n}"

    @rule(amount=st.integers(1, 2000))
    def top_up(self, amount: int) -> None:
        self._commit([topup(f"top:{self._id()}", amount)])

    @rule(amount=st.integers(0, 1500))
    def place_hold(self, amount: int) -> None:
        tid = self._id()
        h = L.Hold(L.hold_id(tid), ORG, tid, amount)
        self._commit(L.reserve(h, 0.0), [h])

    def _pending(self) -> list[L.Hold]:
        return [h for h in self.holds.values() if h.state is L.HoldState.PENDING]

    @precondition(lambda self: self._pending())
    @rule(
        data=st.data(), charges=st.lists(st.integers(0, 2000), max_size=3), bps=st.integers(0, 3000)
    )
    def settle_hold(self, data, charges, bps) -> None:  # type: ignore[no-untyped-def]
        h = data.draw(st.sampled_from(self._pending()))
        lines = [L.ChargeLine(f"{h.task_id}-a{i}", PROV, c) for i, c in enumerate(charges)]
        before = self.accounts[L.escrow_account(ORG)].balance
        done, ts = L.settle(h, lines, bps, 1.0)
        assert sum(t.amount for t in ts) == h.amount  # a settlement empties its hold exactly
        assert self._commit(ts, [done])  # never refused: escrow holds it
        assert self.accounts[L.escrow_account(ORG)].balance == before - h.amount

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def cancel_hold(self, data) -> None:  # type: ignore[no-untyped-def]
        h = data.draw(st.sampled_from(self._pending()))
        done, ts = L.void(h, 1.0)
        assert self._commit(ts, [done])

    @rule(amount=st.integers(1, 500), source=st.sampled_from([L.REVENUE, "provider"]))
    def refund(self, amount: int, source: str) -> None:
        src = L.provider_account(PROV) if source == "provider" else source
        t = L.Transfer(
            f"ref:{self._id()}", src, L.org_account(ORG), amount, L.TransferKind.REFUND, 2.0
        )
        self._commit([t])

    @rule(amount=st.integers(1, 500))
    def sla_credit(self, amount: int) -> None:
        t = L.Transfer(
            f"cr:{self._id()}", L.SLA, L.org_account(ORG), amount, L.TransferKind.CREDIT, 2.0
        )
        assert self._commit([t])

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def replay(self, data) -> None:  # type: ignore[no-untyped-def]
        t = data.draw(st.sampled_from(sorted(self.written)))
        before = dict(self.accounts)
        assert self._commit([self.written[t]])
        assert self.accounts == before

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def replay_settlement(self, data) -> None:  # type: ignore[no-untyped-def]
        """Settling a settled hold again (a replayed final report) changes nothing."""
        h = data.draw(st.sampled_from(self._pending()))
        done, ts = L.settle(h, [L.ChargeLine("r", PROV, 1)], 0, 1.0)
        assert self._commit(ts, [done])
        before = dict(self.accounts)
        again, more = L.settle(done, [L.ChargeLine("r", PROV, 1)], 0, 1.0)
        assert more == () and again == done
        assert self._commit([*ts], [done]) and self.accounts == before

    @rule(amount=st.integers(1, 900))
    def crash(self, amount: int) -> None:
        """A hold computed and then lost with its uncommitted transaction: nothing changes."""
        before = dict(self.accounts)
        tid = self._id()
        L.reserve(L.Hold(L.hold_id(tid), ORG, tid, amount), 0.0)  # computed, never committed
        assert self.accounts == before

    @invariant()
    def balanced(self) -> None:
        assert sum(a.balance for a in self.accounts.values()) == 0

    @invariant()
    def no_account_below_its_floor(self) -> None:
        for a in self.accounts.values():
            assert a.floor is None or a.balance >= a.floor, a

    @invariant()
    def each_account_is_the_sum_of_its_postings(self) -> None:
        sums = dict.fromkeys(self.accounts, 0)
        for t in self.written.values():
            sums[t.debit] -= t.amount
            sums[t.credit] += t.amount
        assert sums == {k: a.balance for k, a in self.accounts.items()}

    @invariant()
    def escrow_is_what_pending_holds_hold(self) -> None:
        assert self.accounts[L.escrow_account(ORG)].balance == sum(
            h.amount for h in self._pending()
        )


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_corrections_are_new_transfers_of_known_kinds() -> None:
    def t(kind, debit, credit):  # type: ignore[no-untyped-def]
        return L.Transfer("c1", debit, credit, 100, kind, 0.0)

    org, prov = L.org_account(ORG), L.provider_account(PROV)
    L.check_correction(t(L.TransferKind.REFUND, prov, org))
    L.check_correction(t(L.TransferKind.REFUND, L.REVENUE, org))
    L.check_correction(t(L.TransferKind.CREDIT, L.SLA, org))
    L.check_correction(t(L.TransferKind.ADJUST, org, prov))
    for bad in (
        t(L.TransferKind.REFUND, L.SLA, org),  # a refund does not come from SLA
        t(L.TransferKind.CREDIT, prov, org),  # an SLA credit does
        t(L.TransferKind.ADJUST, L.escrow_account(ORG), org),  # escrow moves only with holds
        t(L.TransferKind.TOPUP, L.FUNDING, org),  # not a correction
    ):
        with pytest.raises(Invalid):
            L.check_correction(bad)
