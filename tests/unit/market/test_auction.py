"""The award rule (cpnet.market.auction): drops, score, ties, first price, bid rules; and
Hypothesis properties: the winner is within the request's max price and scores best, the order
bids arrive in changes nothing, and awards never over-commit a pool with overlapping leases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.errors import Invalid
from cpnet.market import auction as A
from cpnet.sched.snapshot import Resources

NOW = 1_000_000.0


def req(**kw) -> A.Request:  # type: ignore[no-untyped-def]
    d = {
        "id": "auc_1",
        "org_id": "org_u",
        "unit": Resources(2, 4),
        "units": 1,
        "start": NOW + 100,
        "end": NOW + 3700,
        "max_price": 1_000,
        "closes_at": NOW + 100,
    }
    d.update(kw)
    return A.Request(**d)


def cand(pool: str, cores: float = 8, **kw) -> A.Candidate:  # type: ignore[no-untyped-def]
    d = {"pool_id": pool, "provider_id": f"prv_{pool}", "region_code": "440100"}
    d.update(kw)
    return A.Candidate(total=Resources(cores, 32), **d)


def bid(pool: str, price: int, at: float = NOW, i: str | None = None) -> A.Bid:
    return A.Bid(i or f"bid_{pool}", "auc_1", pool, price, at)


def test_the_lowest_score_wins_and_pays_its_own_bid() -> None:
    r = req()
    out = A.award(r, [bid("a", 800), bid("b", 600)], {"a": cand("a"), "b": cand("b")})
    assert out.winner == bid("b", 600)  # first price: the winner's own 600, not a's 800
    assert [w.bid.pool_id for w in out.weighed] == ["b", "a"]


def test_sla_and_reputation_can_beat_a_lower_price() -> None:
    r = req()
    cands = {"cheap": cand("cheap", sla=0.2, reputation=0.2), "good": cand("good", sla=1.0)}
    out = A.award(r, [bid("cheap", 500), bid("good", 600)], cands)
    # cheap: 0.6·0.5 + 0.25·0.8 + 0.15·0.8 = 0.62; good: 0.6·0.6 + 0 + 0.15·0.5 = 0.435
    assert out.winner is not None and out.winner.pool_id == "good"
    assert out.weighed[0].score == pytest.approx(0.435)


def test_ties_go_to_the_earlier_bid_then_the_lower_pool_id() -> None:
    r = req()
    cands = {p: cand(p) for p in "abc"}
    out = A.award(
        r, [bid("c", 500, NOW + 1), bid("b", 500, NOW + 2), bid("a", 500, NOW + 2)], cands
    )
    assert [w.bid.pool_id for w in out.weighed] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("request_kw", "candidate", "price", "why"),
    [
        ({}, cand("a"), 1_001, "over the request's max_price"),
        ({}, cand("a", online=False), 500, "offline"),
        ({"regions": ("11",)}, cand("a"), 500, "not in 11"),
        ({"providers": ("prv_x",)}, cand("a"), 500, "provider is not one"),
        ({"unit": Resources(16, 4)}, cand("a"), 500, "cannot hold"),
        ({"min_sla": 0.9}, cand("a", sla=0.8), 500, "below min_sla"),
        ({"min_sla": 0.9}, cand("a"), 500, "below min_sla"),  # unknown: neutral 0.5
        (
            {"unit": Resources(1, 1, gpus=1), "gpu_model": "H100"},
            cand("a", gpu_model="A100"),
            500,
            "not H100",
        ),
    ],
)
def test_a_bid_that_cannot_win_is_dropped_with_its_reason(request_kw, candidate, price, why):  # type: ignore[no-untyped-def]
    out = A.award(req(**request_kw), [bid("a", price)], {"a": candidate})
    assert out.winner is None
    (w,) = out.weighed
    assert w.score is None and w.dropped is not None and why in w.dropped


def test_existing_leases_count_against_a_pools_room() -> None:
    r = req(unit=Resources(4, 4))
    busy = A.Held(NOW + 3000, NOW + 9000, Resources(6, 4))  # overlaps the window's end
    free = A.Held(NOW + 3700, NOW + 9000, Resources(8, 4))  # starts as the window ends
    assert A.award(r, [bid("a", 500)], {"a": cand("a", leases=(busy,))}).winner is None
    assert A.award(r, [bid("a", 500)], {"a": cand("a", leases=(free,))}).winner is not None


def test_bid_rules_price_the_book_times_the_factor_within_bounds() -> None:
    assert A.rule_price(A.BidRule(0.9), 1_000) == 900
    assert A.rule_price(A.BidRule(0.5, min_price=700), 1_000) == 700
    assert A.rule_price(A.BidRule(2.0, max_price=1_500), 1_000) == 1_500
    with pytest.raises(Invalid) as e:
        A.check_rule(A.BidRule(1.0, min_price=10, max_price=5))
    assert e.value.field == "min_price"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"units": 0}, "units"),
        ({"max_price": 0}, "max_price"),
        ({"max_price": A.MAX_PRICE + 1}, "max_price"),  # would overflow a BIGINT bill later
        ({"end": NOW + 130}, "end"),
        ({"start": NOW - 500, "closes_at": NOW - 500}, "start"),
        ({"closes_at": NOW + 200}, "closes_at"),
        ({"unit": Resources(0, 4)}, "resources.cpu_cores"),
        ({"min_sla": 1.5}, "min_sla"),
    ],
)
def test_a_bad_request_names_its_field(kw, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Invalid) as e:
        A.check_request(req(**kw), NOW)
    assert e.value.field == field


def test_window_cost_rounds_half_even_once() -> None:
    assert A.window_cost(1_000, 3_600) == 1_000
    assert A.window_cost(1_000, 1.8) == 0  # 0.5 → 0 (half-even)
    assert A.window_cost(1_000, 5.4) == 2  # 1.5 → 2


prices = st.integers(1, 3_000)
bids_st = st.lists(
    st.tuples(st.sampled_from("abcdef"), prices, st.integers(0, 50)), min_size=1, max_size=8
)
cands_st = st.fixed_dictionaries(
    {
        p: st.builds(
            cand,
            st.just(p),
            st.sampled_from([2.0, 4.0, 8.0]),
            sla=st.none() | st.floats(0, 1),
            reputation=st.none() | st.floats(0, 1),
            online=st.booleans(),
        )
        for p in "abcdef"
    }
)


@given(raw=bids_st, cands=cands_st, max_price=prices, data=st.data())
def test_the_winner_is_within_max_price_and_scores_best(raw, cands, max_price, data) -> None:  # type: ignore[no-untyped-def]
    r = req(max_price=max_price)
    bids = [bid(p, price, NOW + t, f"bid{n}") for n, (p, price, t) in enumerate(raw)]
    out = A.award(r, bids, cands)
    eligible = [b for b in bids if A.dropped(r, b, cands[b.pool_id]) is None]
    if out.winner is None:
        assert not eligible
        return
    w = out.winner
    assert w.price <= max_price
    c = cands[w.pool_id]
    assert c.online and A.fits(c, r.total, r.start, r.end)
    best = A.score(w.price, max_price, c.sla, c.reputation)
    for b in eligible:
        cb = cands[b.pool_id]
        assert best <= A.score(b.price, max_price, cb.sla, cb.reputation) + 1e-9
    shuffled = data.draw(st.permutations(bids))
    assert A.award(r, shuffled, cands).winner == w  # sealed bids: arrival order is no tiebreak


windows = st.tuples(st.integers(0, 20), st.integers(1, 10), st.integers(1, 8))


@settings(max_examples=200)
@given(asks=st.lists(windows, min_size=1, max_size=12))
def test_awards_never_over_commit_a_pool(asks) -> None:  # type: ignore[no-untyped-def]
    """Requests awarded one after another on one 8-core pool, each weighing the leases of the
    ones before: at no moment do the leases hold more than the pool has."""
    total = Resources(8, 32)
    leases: list[A.Held] = []
    for n, (start, length, cores) in enumerate(asks):
        s0 = NOW + start * 600
        r = req(id=f"auc{n}", unit=Resources(cores, 1), start=s0, end=s0 + length * 600)
        c = A.Candidate("p", "prv", "440100", total, leases=tuple(leases))
        out = A.award(r, [A.Bid(f"b{n}", r.id, "p", 500, NOW)], {"p": c})
        if out.winner is not None:
            leases.append(A.Held(r.start, r.end, r.total))
    moments = {x.start for x in leases} | {x.end - 1 for x in leases}
    for t in moments:
        held = sum((x.resources.cpu_cores for x in leases if x.start <= t < x.end), 0.0)
        assert held <= total.cpu_cores
