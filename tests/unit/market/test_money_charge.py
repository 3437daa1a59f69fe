"""Money in minor units and the charge arithmetic (cpnet.market.money, cpnet.market.charge)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.errors import Invalid
from cpnet.market import charge, money


def test_parse_and_format_round_trip() -> None:
    assert money.parse("12.34") == 1234
    assert money.parse("100") == 10000
    assert money.fmt(1234) == "12.34 CNY"
    assert money.fmt(-5) == "-0.05 CNY"
    assert money.major(7) == "0.07"


@pytest.mark.parametrize("bad", ["1.234", "abc", "nan", ""])
def test_parse_refuses_what_is_not_an_amount(bad: str) -> None:
    with pytest.raises(Invalid) as e:
        money.parse(bad, field="amount")
    assert e.value.field == "amount"


def test_usage_charge_is_exact_and_rounds_half_even() -> None:
    price = {"cpu_core_hour": 0.1, "ram_gb_hour": 0.01, "gpu_hour": 20}
    # 2 cores × 0.1 + 4 GB × 0.01 = 0.24/h; one hour = 24 fen
    assert charge.usage_charge(price, {"cpu_cores": 2, "ram_gb": 4}, 3600) == 24
    # 1 GPU for 90 s: 20/h × 90/3600 = 0.5 = 50 fen
    assert charge.usage_charge(price, {"gpus": 1}, 90) == 50
    # 0.1/h × 18 s = 0.0005 = 0.05 fen → 0 (half-even); × 54 s = 0.15 fen → 0; 90 s = .25 → 0
    assert charge.usage_charge({"cpu_core_hour": 0.1}, {"cpu_cores": 1}, 18) == 0
    assert charge.usage_charge({"cpu_core_hour": 1}, {"cpu_cores": 1}, 54) == 2  # 1.5 → 2
    assert charge.usage_charge({"cpu_core_hour": 1}, {"cpu_cores": 1}, 90) == 2  # 2.5 → 2
    assert charge.usage_charge(price, {"cpu_cores": 2}, 0) == 0


@given(st.integers(0, 10**12), st.integers(0, 10_000))
def test_split_adds_up_to_the_charge(c: int, bps: int) -> None:
    payout, fee = charge.split(c, bps)
    assert payout + fee == c and 0 <= fee <= c


def test_split_rounds_the_fee_half_even() -> None:
    assert charge.split(10, 500) == (10, 0)  # 0.5 → 0
    assert charge.split(30, 500) == (28, 2)  # 1.5 → 2
    assert charge.split(1000, 500) == (950, 50)


def test_hold_amount() -> None:
    assert charge.hold_amount([0.1, 0.3], 1.5, 0) == 45  # 0.3 × 1.5 = 0.45 CNY
    assert charge.hold_amount([], 1.5, 10) == 10
    assert charge.hold_amount([5.0], 1.5, 0, budget=2.5) == 250  # a budget is the cap itself


def test_the_worked_example_in_docs_market_md() -> None:
    from cpnet.market import ledger as L

    price = {"cpu_core_hour": 1.25, "ram_gb_hour": 0.05}
    demand = {"cpu_cores": 2, "ram_gb": 4}
    hold = charge.hold_amount([float(charge.hourly(price, demand)) * 600 / 3600], 1.5, 0)
    assert hold == 68
    assert charge.usage_charge(price, demand, 1000) == 75
    _, ts = L.settle(L.Hold("hold:t", "o", "t", hold), [L.ChargeLine("a", "p", 75)], 500, 0.0)
    assert [(t.kind, t.amount) for t in ts] == [
        (L.TransferKind.PAYOUT, 65),
        (L.TransferKind.FEE, 3),
    ]
    c = charge.usage_charge(price, demand, 500)
    assert c == 38 and charge.split(c, 500) == (36, 2)


def test_an_attempt_price_is_scu_priced_only_when_the_pool_prices_the_tasks_profile() -> None:
    from cpnet.sched.snapshot import Price

    price = Price(cpu_core_hour=2.0, ram_gb_hour=0.1, scu_hour=(("hpc", 0.5),))
    plain = charge.attempt_price(price)
    assert plain == {"currency": "CNY", "cpu_core_hour": 2.0, "ram_gb_hour": 0.1, "gpu_hour": 0.0}
    assert charge.attempt_price(price, profile="ai", work_scu_h=3.0) == plain  # not priced
    scu = charge.attempt_price(price, profile="hpc", work_scu_h=3.0, scu_rate=6.0)
    assert scu["per_scu_hour"] == 0.5 and scu["scu_rate"] == 6.0
    # 600 s at 6 SCU/h = 1 SCU-hour at 0.5/SCU-h = 0.50 CNY, whatever the demand.
    assert charge.scu_hours(scu, 600) == pytest.approx(1.0)
    assert charge.usage_charge(scu, {"cpu_cores": 64}, 600) == 50
    assert charge.hourly(scu, {"cpu_cores": 64}) == 3  # 0.5 × 6 per hour
    # The pool's rate unknown: the work the task stated is what it did.
    blind = charge.attempt_price(price, profile="hpc", work_scu_h=3.0, scu_rate=0.0)
    assert blind["scu_rate"] is None and charge.usage_charge(blind, {}, 10) == 150
    assert charge.scu_hours(plain, 600) is None


def test_the_quoted_cap_adds_the_overrun_rate_past_the_stated_work() -> None:
    # Within the stated 600 s: the max charge.
    assert charge.quoted_cap(1.0, 3.6, "hour", stated_s=600, used_s=300) == 100
    # 100 s over at 3.60 per hour = 0.10 more.
    assert charge.quoted_cap(1.0, 3.6, "hour", stated_s=600, used_s=700) == 110
    # SCU-priced: per extra SCU-hour of work.
    cap = charge.quoted_cap(
        2.0, 0.5, "SCU-hour", stated_s=60, used_s=9_999, stated_scu_h=4, used_scu_h=5
    )
    assert cap == 250


@given(st.lists(st.integers(0, 10_000), max_size=6), st.integers(0, 30_000))
def test_cap_lines_never_pass_the_cap_and_pay_in_order(charges: list[int], cap: int) -> None:
    cut = charge.cap_lines(charges, cap)
    assert sum(cut) == min(sum(charges), cap)
    assert all(0 <= c <= o for c, o in zip(cut, charges, strict=True))
    # The first attempts are paid in full before a later one gets anything.
    for i, c in enumerate(cut):
        if c < charges[i]:
            assert all(x == 0 for x in cut[i + 1 :])
