"""Quotes from a scheduler decision: options in rank order, fees, caps, overruns, refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.market import quotes
from cpnet.sched import Price, Resources, TaskRequest, rank
from tests.unit.sched.test_batch import pool

POOLS = [
    pool("cheap", price=Price("CNY", cpu_core_hour=0.05), queue_length=4, running=1),
    pool("quick", price=Price("CNY", cpu_core_hour=0.2)),
    pool(
        "hpc", price=Price("CNY", cpu_core_hour=0.1, scu_hour=(("hpc", 0.4),)), scu=(("hpc", 2.0),)
    ),
]


def quote(task: TaskRequest, fee_bps: int = 500, **kw) -> tuple[quotes.Option, ...]:
    decision = rank(task, POOLS)
    return quotes.options(
        decision,
        {p.id: p for p in POOLS},
        now=1000.0,
        fee_bps=fee_bps,
        work_scu_h=task.work_scu_h,
        profile=task.profile,
        **kw,
    )


def test_options_follow_the_objective_with_fee_cap_and_completion() -> None:
    task = TaskRequest(
        id="q", demand=Resources(2, 4), expected_runtime_s=3600, objective="cheapest"
    )
    opts = quote(task)
    assert [o.pool_id for o in opts][:1] == ["cheap"]
    assert [o.option for o in opts] == [1, 2, 3]
    first = opts[0]
    assert first.cost == pytest.approx(2 * 0.05)
    assert first.fee == pytest.approx(first.cost * 0.05)
    # The price is what the user pays: the fee is the platform's part of it, not added to it.
    assert first.max_charge == pytest.approx(first.cost)
    assert first.overrun_unit == "hour"
    assert first.overrun_rate == pytest.approx(2 * 0.05)
    assert first.completes_at == pytest.approx(1000.0 + first.time_to_result_s)
    fastest = quote(replace(task, objective="fastest"))
    assert fastest[0].pool_id != "cheap"  # the cheap pool has a queue
    assert len(quote(task, limit=1)) == 1


def test_an_scu_priced_option_charges_overruns_per_scu_hour() -> None:
    task = TaskRequest(id="q", demand=Resources(2, 4), profile="hpc", work_scu_h=3.0)
    by_pool = {o.pool_id: o for o in quote(task, fee_bps=0)}
    hpc = by_pool["hpc"]
    assert hpc.price_per_scu_hour == 0.4 and hpc.overrun_unit == "SCU-hour"
    assert hpc.max_charge == pytest.approx(1.2)
    assert "per extra SCU-hour" in quotes.overrun_text(hpc)


def test_the_sla_score_is_the_reputation_the_risk_uses() -> None:
    task = TaskRequest(id="q", demand=Resources(1, 1))
    scored = [
        replace(p, reputation=0.75, failure_rate=0.25) if p.id == "quick" else p for p in POOLS
    ]
    opts = quotes.options(rank(task, scored), {p.id: p for p in scored}, now=0.0, fee_bps=0)
    by_pool = {o.pool_id: o for o in opts}
    assert by_pool["quick"].sla_score == pytest.approx(0.75)
    assert by_pool["cheap"].sla_score is None  # not scored yet
    quick = next(p for p in rank(task, scored).placements if p.pool_id == "quick")
    assert any("reputation 0.75" in r for r in quick.reasons)


@given(st.integers(0, 5000), st.sampled_from(["balanced", "fastest", "cheapest", "greenest"]))
def test_the_cap_is_the_cost_with_the_fee_inside_and_options_keep_rank_order(
    fee_bps, objective
) -> None:
    task = TaskRequest(id="q", demand=Resources(1, 2), objective=objective)
    decision = rank(task, POOLS)
    opts = quote(task, fee_bps=fee_bps)
    assert [o.pool_id for o in opts] == [p.pool_id for p in decision.placements]
    for o in opts:
        assert o.max_charge == pytest.approx(o.cost) and o.cost >= 0
        assert o.fee == pytest.approx(o.max_charge * fee_bps / 10_000)
        assert o.fee <= o.max_charge


def test_the_spec_hash_ignores_only_unpriced_keys() -> None:
    spec = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 2}}
    h = quotes.spec_hash(spec)
    renamed = {**spec, "name": "x", "tags": {"a": "b"}, "idempotency_key": "k", "quote_id": "q"}
    assert quotes.spec_hash(renamed) == h
    assert quotes.spec_hash({**spec, "resources": {"cpu_cores": 4}}) != h


def _use(**kw):
    args = {
        "quote_org": "o",
        "caller_org": "o",
        "valid_until": 100.0,
        "used_by_task": None,
        "quoted_hash": "h",
        "spec_hash_now": "h",
        "options_json": [
            {
                "pool_id": "a",
                "max_charge": 1.0,
                "overrun_rate": 0.5,
                "overrun_unit": "hour",
                "currency": "CNY",
            }
        ],
        "option": 1,
        "now": 50.0,
    }
    return quotes.check_use(**{**args, **kw})


def test_a_valid_use_names_the_pool_and_cap() -> None:
    use = _use()
    assert (use.pool_id, use.max_charge, use.overrun_rate) == ("a", 1.0, 0.5)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"caller_org": "x"}, "not_found", "quote_id"),
        ({"used_by_task": "tsk_1"}, "used", "quote_id"),
        ({"now": 100.0}, "expired", "quote_id"),
        ({"spec_hash_now": "other"}, "mismatch", "quote_id"),
        ({"option": 2}, "bad_option", "quote_option"),
    ],
)
def test_refusals_name_the_field_and_say_what_to_do(change, reason, field) -> None:
    with pytest.raises(quotes.QuoteRefused) as err:
        _use(**change)
    assert err.value.reason == reason and err.value.field == field
    if reason in ("used", "expired", "mismatch"):
        assert "new quote" in err.value.message


@given(
    st.sampled_from(["balanced", "fastest", "cheapest", "greenest"]),
    st.integers(1, 3),
)
def test_options_from_a_kept_ranking_equal_the_full_rankings(objective, keep) -> None:
    task = TaskRequest(id="q", demand=Resources(1, 2), objective=objective)
    by_id = {p.id: p for p in POOLS}
    full = quotes.options(rank(task, POOLS), by_id, now=0.0, fee_bps=500, limit=keep)
    kept = quotes.options(rank(task, POOLS, keep=keep), by_id, now=0.0, fee_bps=500, limit=keep)
    assert kept == full
