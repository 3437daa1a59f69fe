"""Resources arithmetic and explanations, prices, and Decision.best."""

from __future__ import annotations

import dataclasses

import pytest

from cpnet.sched import Decision, Placement, Price, Resources
from cpnet.sched.snapshot import amount_text


def placement(pool_id: str, rank: int, fits_now: bool) -> Placement:
    return Placement(
        pool_id=pool_id,
        rank=rank,
        score=0.0,
        expected_start_s=0.0,
        hourly_price=0.0,
        estimated_cost=0.0,
        fits_now=fits_now,
        reasons=(),
    )


def test_fits_in_needs_every_resource():
    room = Resources(4, 16, 100, 1)
    assert Resources(4, 16, 100, 1).fits_in(room)
    assert Resources().fits_in(room)
    assert not Resources(4.5, 1).fits_in(room)
    assert not Resources(1, 17).fits_in(room)
    assert not Resources(1, 1, 101).fits_in(room)
    assert not Resources(1, 1, 1, 2).fits_in(room)


def test_fits_in_absorbs_float_rounding_from_repeated_subtraction():
    room = Resources(1.0)
    for _ in range(9):
        room = room - Resources(0.1)
    # 1.0 - 9 * 0.1 is 0.09999999999999987 in floats; a tenth of a core must still fit.
    assert Resources(0.1).fits_in(room)
    assert not Resources(0.1001).fits_in(room)


def test_add_and_sub_are_fieldwise():
    a = Resources(4, 16, 100, 2)
    b = Resources(1, 2.5, 10, 1)
    assert a + b == Resources(5, 18.5, 110, 3)
    assert a - b == Resources(3, 13.5, 90, 1)
    assert (a - b) + b == a


def test_arithmetic_with_other_types_is_refused():
    with pytest.raises(TypeError):
        Resources(1) + 1  # type: ignore[operator]


def test_shortfall_names_each_short_resource():
    need = Resources(4, 8, 0, 2)
    assert need.shortfall(Resources(2, 8, 0, 1)) == [
        "needs 4 cpu_cores, 2 free",
        "needs 2 gpus, 1 free",
    ]
    assert need.shortfall(Resources(8, 16, 0, 2)) == []
    assert Resources(0, 2.5).shortfall(Resources(0, 1), have="in total") == [
        "needs 2.5 ram_gb, 1 in total"
    ]


def test_amount_text():
    assert amount_text(4.0) == "4"
    assert amount_text(3) == "3"
    assert amount_text(2.5) == "2.5"
    assert amount_text(2.345) == "2.35"
    assert amount_text(0.001) == "0.001"
    assert amount_text(float("inf")) == "inf"


def test_price_hourly_charges_cpu_ram_and_gpu_not_disk():
    price = Price("CNY", cpu_core_hour=0.1, ram_gb_hour=0.01, gpu_hour=10.0)
    assert price.hourly(Resources(4, 16, 500, 1)) == pytest.approx(0.4 + 0.16 + 10.0)
    assert price.hourly(Resources()) == 0.0


def test_data_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Resources(1).cpu_cores = 2  # type: ignore[misc]


def test_best_is_first_placement_that_fits_now():
    decision = Decision(
        "t",
        (placement("a", 1, False), placement("b", 2, True), placement("c", 3, True)),
        (),
    )
    assert decision.best is not None
    assert decision.best.pool_id == "b"
    assert Decision("t", (placement("a", 1, False),), ()).best is None
    assert Decision("t", (), ()).best is None
