"""Price books: validity periods, the dynamic rule and its bounds, GPU-model and SCU prices."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.market import prices
from cpnet.market.prices import DynamicRule, Entry, PriceError
from cpnet.sched import Price


def test_the_latest_entry_in_force_wins_and_periods_end() -> None:
    old = Entry(cpu_core_hour=0.10, valid_from=0, seq=1)
    new = Entry(cpu_core_hour=0.20, valid_from=100, valid_until=200, seq=2)
    spot = Entry(kind="spot", cpu_core_hour=0.03, valid_from=0, seq=3)
    book = [old, new, spot]
    assert prices.current(book, 50) is old
    assert prices.current(book, 100) is new  # from is inclusive
    assert prices.current(book, 199.9) is new
    assert prices.current(book, 200) is old  # until is exclusive: the older one applies again
    assert prices.current(book, 50, "spot") is spot
    assert prices.current(book, -1) is None


def test_a_tie_of_valid_from_goes_to_the_later_published() -> None:
    a = Entry(cpu_core_hour=1.0, valid_from=10, seq=1)
    b = Entry(cpu_core_hour=2.0, valid_from=10, seq=2)
    assert prices.current([b, a], 20) is b


def test_without_a_book_the_declared_price_stands() -> None:
    declared = Price("CNY", cpu_core_hour=0.05)
    assert prices.price_at([], 10, 0.5, default=declared) is declared
    entry = prices.from_declared({"currency": "USD", "gpu_hour": 2.0})
    assert entry.kind == "on_demand" and entry.currency == "USD" and entry.gpu_hour == 2.0


def test_gpu_model_prices_and_scu_prices_reach_the_scheduler_price() -> None:
    e = Entry(
        gpu_hour=10.0,
        gpu_models=(("H100", 30.0), ("A100", 20.0)),
        scu_hour=(("hpc", 0.5), ("ai-train", 2.0)),
    )
    p = prices.effective(e, 0.0, "NVIDIA H100 80GB HBM3")
    assert p.gpu_hour == 30.0
    assert prices.effective(e, 0.0, "NVIDIA L4").gpu_hour == 10.0
    assert prices.effective(e, 0.0, None).gpu_hour == 10.0
    assert p.per_scu_hour("hpc") == 0.5 and p.per_scu_hour("general") is None
    assert p.scu_hour == (("ai-train", 2.0), ("hpc", 0.5))


def test_the_dynamic_rule_scales_every_figure() -> None:
    rule = DynamicRule(target=0.5, k=2.0, floor=0.5, cap=2.0)
    e = Entry(cpu_core_hour=1.0, ram_gb_hour=0.1, scu_hour=(("hpc", 1.0),), dynamic=rule)
    busy = prices.effective(e, 1.0)  # 1 + 2 × 0.5 = 2
    assert busy.cpu_core_hour == pytest.approx(2.0)
    assert busy.ram_gb_hour == pytest.approx(0.2)
    assert busy.per_scu_hour("hpc") == pytest.approx(2.0)
    idle = prices.effective(e, 0.0)  # 1 − 1 = 0, floored at 0.5
    assert idle.cpu_core_hour == pytest.approx(0.5)


@given(
    target=st.floats(0, 1),
    k=st.floats(0, prices.MAX_K),
    floor=st.floats(prices.MIN_FLOOR, 1),
    cap=st.floats(1, prices.MAX_CAP),
    u=st.floats(-10, 10, allow_nan=False),
)
def test_a_valid_rule_never_leaves_its_bounds_and_rises_with_load(target, k, floor, cap, u):
    rule = prices.check_rule(DynamicRule(target, k, floor, cap))
    f = rule.factor(u)
    assert prices.MIN_FLOOR <= floor <= f <= cap <= prices.MAX_CAP
    assert rule.factor(min(1.0, max(0.0, u)) + 0.01) >= f - 1e-12  # monotone in utilisation
    assert rule.factor(target) == pytest.approx(min(cap, max(floor, 1.0)))


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (DynamicRule(target=1.5), "dynamic.target"),
        (DynamicRule(k=-1), "dynamic.k"),
        (DynamicRule(k=11), "dynamic.k"),
        (DynamicRule(floor=0.2), "dynamic.floor"),
        (DynamicRule(floor=1.2, cap=1.5), "dynamic.floor"),
        (DynamicRule(cap=3.0), "dynamic.cap"),
        (DynamicRule(cap=0.9), "dynamic.cap"),
    ],
)
def test_rules_out_of_bounds_are_refused_naming_the_field(rule, field) -> None:
    with pytest.raises(PriceError) as err:
        prices.check_rule(rule)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (Entry(kind="reserved"), "kind"),
        (Entry(currency="yuan"), "currency"),
        (Entry(cpu_core_hour=-1), "cpu_core_hour"),
        (Entry(gpu_hour=math.nan), "gpu_hour"),
        (Entry(gpu_models=(("H100", -2.0),)), "gpu_models.H100"),
        (Entry(scu_hour=(("quantum", 1.0),)), "scu_hour.quantum"),
        (Entry(valid_from=10, valid_until=10), "valid_until"),
        (Entry(dynamic=DynamicRule(cap=5)), "dynamic.cap"),
    ],
)
def test_bad_entries_are_refused_naming_the_field(entry, field) -> None:
    with pytest.raises(PriceError) as err:
        prices.check_entry(entry, profiles=("general", "hpc"))
    assert err.value.field == field


@given(
    st.lists(st.tuples(st.floats(0, 1000), st.one_of(st.none(), st.floats(0, 2000))), max_size=8),
    st.floats(0, 2000),
)
def test_the_entry_in_force_is_valid_and_none_newer_is(periods, now) -> None:
    book = [
        Entry(cpu_core_hour=i, valid_from=a, valid_until=b, seq=i)
        for i, (a, b) in enumerate(periods)
        if b is None or b > a
    ]
    chosen = prices.current(book, now)
    in_force = [e for e in book if e.valid_at(now)]
    if chosen is None:
        assert not in_force
        return
    assert chosen.valid_at(now)
    assert all((e.valid_from, e.seq) <= (chosen.valid_from, chosen.seq) for e in in_force)
