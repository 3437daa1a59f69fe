"""A lease's money (cpnet.market.lease): held whole at the award, paid period by period as its
window runs, the rest released at the end or on an early cancel; and a Hypothesis state machine
over task holds, bids, awards and leases together — the books always balance, no balance goes
below its floor, replaying a posting changes nothing, no pool is leased beyond its capacity."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from cpnet.market import auction as A
from cpnet.market import lease as M
from cpnet.market import ledger as L
from cpnet.market.charge import split
from cpnet.sched.snapshot import Resources
from tests.unit.market.test_ledger import ORG, PROV, LedgerMachine

START = 1_000_000.0
POOLS = ("pa", "pb")
TOTAL = Resources(8, 64)  # each pool's capacity


def lease(price: int = 1_234, seconds: float = 3_600.0, **kw) -> M.Lease:  # type: ignore[no-untyped-def]
    d = {
        "id": "lse_1",
        "request_id": "auc_1",
        "pool_id": "p",
        "org_id": ORG,
        "provider_org": PROV,
        "resources": Resources(4, 8),
        "start": START,
        "end": START + seconds,
        "price": price,
    }
    d.update(kw)
    return M.Lease(**d)


def _run(x: M.Lease, times, fee_bps: int = 500, cancel_at=None):  # type: ignore[no-untyped-def]
    out = []
    for t in times:
        x, ts, _ = M.settle(x, fee_bps, t)
        out += ts
    if cancel_at is not None:
        x, ts, _ = M.settle(x, fee_bps, cancel_at, cancel=True)
        out += ts
    return x, out


def test_a_lease_pays_its_whole_cost_period_by_period() -> None:
    x = lease()
    assert x.total == 1_234
    done, ts = _run(x, [START + 59, START + 61, START + 61, START + 1_000, START + 3_600])
    assert done.state is M.LeaseState.ENDED and done.charged == 1_234
    paid = [t for t in ts if t.kind in (L.TransferKind.PAYOUT, L.TransferKind.FEE)]
    assert sum(t.amount for t in paid) == 1_234
    assert not [t for t in ts if t.kind is L.TransferKind.RELEASE]
    assert len({t.id for t in ts}) == len(ts)  # one id per part: a replay is a no-op
    assert "lease:lse_1:pay:60s" in {t.id for t in ts}


def test_cancelling_early_pays_what_elapsed_and_releases_the_rest() -> None:
    x = lease(price=3_600)  # 1 fen a second
    done, ts = _run(x, [START + 120], cancel_at=START + 900)
    assert done.state is M.LeaseState.CANCELLED and done.charged == 900
    release = [t for t in ts if t.kind is L.TransferKind.RELEASE]
    assert [t.amount for t in release] == [3_600 - 900]
    payouts = sum(t.amount for t in ts if t.kind is L.TransferKind.PAYOUT)
    fees = sum(t.amount for t in ts if t.kind is L.TransferKind.FEE)
    assert payouts + fees == 900
    assert fees == split(120, 500)[1] + split(780, 500)[1]


def test_cancelled_before_it_starts_releases_everything() -> None:
    done, ts = _run(lease(), [], cancel_at=START - 50)
    assert done.charged == 0 and [t.kind for t in ts] == [L.TransferKind.RELEASE]


def test_a_settled_lease_settles_nothing_again() -> None:
    done, _ = _run(lease(), [START + 3_600])
    again, ts, key = M.settle(done, 500, START + 4_000)
    assert again == done and ts == () and key is None


class LeaseMachine(LedgerMachine):
    """The ledger machine's steps, and auctions beside them: sealed bids awarded by the rule
    into leases (their whole cost held), settled as a clock moves, cancelled, and their
    settlements replayed; no pool is ever leased beyond its capacity."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[str, M.Lease] = {}
        self.now = START

    def _active(self) -> list[M.Lease]:
        return [x for x in self.leases.values() if x.state is M.LeaseState.ACTIVE]

    @rule(
        cores=st.integers(1, 8),
        minutes=st.integers(1, 90),
        delay=st.integers(0, 600),
        max_price=st.integers(1, 5_000),
        bids=st.lists(st.tuples(st.sampled_from(POOLS), st.integers(1, 6_000)), max_size=4),
        sla=st.none() | st.floats(0, 1),
    )
    def auction(self, cores, minutes, delay, max_price, bids, sla) -> None:  # type: ignore[no-untyped-def]
        """A request, sealed bids on two 8-core pools, the award rule weighing the leases the
        pools already hold, and the winner's lease with its whole window held."""
        n = self._id()
        start = self.now + delay
        r = A.Request(
            n, ORG, Resources(cores, 1), 1, start, start + minutes * 60.0, max_price, start
        )
        cands = {
            p: A.Candidate(p, f"prv_{p}", "440300", TOTAL, sla=sla, leases=self._held(p))
            for p in POOLS
        }
        placed = [A.Bid(f"{n}b{i}", n, p, price, self.now + i) for i, (p, price) in enumerate(bids)]
        out = A.award(r, placed, cands)
        if out.winner is None:
            return
        w = out.winner
        assert w.price <= max_price and A.fits(cands[w.pool_id], r.total, r.start, r.end)
        x = lease(w.price, r.end - r.start, id=n, pool_id=w.pool_id, start=r.start)
        x = replace(x, end=r.end, resources=r.total)
        if self._commit(L.reserve(M.hold(x), self.now)):
            self.leases[x.id] = x  # an award whose hold is refused creates no lease

    def _held(self, pool: str) -> tuple[A.Held, ...]:
        return tuple(
            A.Held(x.start, x.end, x.resources) for x in self._active() if x.pool_id == pool
        )

    @invariant()
    def no_pool_is_over_committed(self) -> None:
        for p in POOLS:
            held = self._held(p)
            for t in {x.start for x in held}:
                cores = sum(x.resources.cpu_cores for x in held if x.start <= t < x.end)
                assert cores <= TOTAL.cpu_cores

    @rule(seconds=st.integers(1, 1_800))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @precondition(lambda self: self._active())
    @rule(data=st.data(), bps=st.sampled_from([0, 500, 3_000]))
    def settle_lease(self, data, bps) -> None:  # type: ignore[no-untyped-def]
        x = data.draw(st.sampled_from(self._active()))
        after, ts, _ = M.settle(x, bps, self.now)
        assert self._commit(ts)  # never refused: escrow holds the lease's whole cost
        self.leases[x.id] = after
        assert after.charged <= after.total

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def cancel_lease(self, data) -> None:  # type: ignore[no-untyped-def]
        x = data.draw(st.sampled_from(self._active()))
        after, ts, _ = M.settle(x, 500, self.now, cancel=True)
        assert self._commit(ts)
        self.leases[x.id] = after
        assert after.charged == x.cost_to(max(x.start, self.now))

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def replay_lease_settlement(self, data) -> None:  # type: ignore[no-untyped-def]
        """A settlement posted twice (a hub restarted before it knew it had committed)."""
        x = data.draw(st.sampled_from(self._active()))
        after, ts, _ = M.settle(x, 500, self.now)
        assert self._commit(ts)
        self.leases[x.id] = after
        before = dict(self.accounts)
        assert self._commit(ts) and self.accounts == before

    @invariant()
    def escrow_is_what_pending_holds_hold(self) -> None:
        tasks = sum(h.amount for h in self._pending())
        leases = sum(x.total - x.charged for x in self._active())
        assert self.accounts[L.escrow_account(ORG)].balance == tasks + leases

    @invariant()
    def a_lease_never_charges_more_than_its_window(self) -> None:
        for x in self.leases.values():
            assert 0 <= x.charged <= x.total
            if x.state is not M.LeaseState.ACTIVE:
                paid = sum(
                    t.amount
                    for t in self.written.values()
                    if t.hold_id == x.hold_id and t.kind is not L.TransferKind.RESERVE
                )
                assert paid == x.total  # charged + released: the hold emptied exactly


TestLeaseMachine = LeaseMachine.TestCase
TestLeaseMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
