"""The expected-start model, load, normalisation and rank keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cpnet.sched import PoolView, Price, Resources, TaskRequest, Weights, expected_start_s
from cpnet.sched.score import DEFAULT_WEIGHTS, load_fraction, normalise, rank_key, scores

POOL = PoolView(
    id="p1",
    site_id="site-1",
    provider_id="prov-a",
    name="pool one",
    type="general",
    region_code="440300",
    labels=(),
    total=Resources(8, 32, 100, 0),
    available=Resources(8, 32, 100, 0),
    gpu_model=None,
    queue_length=0,
    running=0,
    price=Price("CNY", 0.1, 0.01),
)
TASK = TaskRequest(id="t1", demand=Resources(4, 8), expected_runtime_s=600.0)


def test_default_weights():
    assert (DEFAULT_WEIGHTS.start, DEFAULT_WEIGHTS.price) == (0.6, 0.4)
    assert DEFAULT_WEIGHTS.spread == pytest.approx(0.05)


def test_start_is_zero_when_it_fits_and_the_queue_is_empty():
    assert expected_start_s(TASK, POOL) == 0.0
    assert expected_start_s(TASK, replace(POOL, running=7)) == 0.0


def test_queue_drains_at_the_running_rate():
    # 4 queued tasks of ~600 s each, 20 running side by side: 4 * 600 / 20.
    assert expected_start_s(TASK, replace(POOL, queue_length=4, running=20)) == 120.0
    # Nothing running: assume one at a time.
    assert expected_start_s(TASK, replace(POOL, queue_length=4)) == 2400.0


def test_start_grows_with_queue_length():
    starts = [expected_start_s(TASK, replace(POOL, queue_length=q, running=3)) for q in range(6)]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)


def test_not_fitting_waits_for_running_tasks_and_grows_with_them():
    full = replace(POOL, available=Resources(0, 0, 0, 0))
    starts = [expected_start_s(TASK, replace(full, running=r)) for r in range(1, 6)]
    # The last of r running tasks ends after T * r / (r + 1) on average.
    assert starts == [pytest.approx(600 * r / (r + 1)) for r in range(1, 6)]
    assert starts == sorted(starts)
    # Even with nothing reported running, waiting for room is not free.
    assert expected_start_s(TASK, full) == 300.0
    # Queue and waiting for room add up.
    assert expected_start_s(TASK, replace(full, running=2, queue_length=4)) == pytest.approx(
        4 * 600 / 2 + 600 * 2 / 3
    )


def test_fits_now_can_be_given():
    assert expected_start_s(TASK, POOL, fits_now=False) == 300.0


def test_start_scales_with_runtime():
    pool = replace(POOL, queue_length=2, running=1)
    short = expected_start_s(replace(TASK, expected_runtime_s=60), pool)
    long = expected_start_s(replace(TASK, expected_runtime_s=600), pool)
    assert long == pytest.approx(10 * short)


def test_load_fraction_is_the_dominant_used_share():
    assert load_fraction(POOL) == 0.0
    assert load_fraction(replace(POOL, available=Resources(6, 8, 100, 0))) == 0.75
    gpus = replace(POOL, total=Resources(8, 32, 100, 4), available=Resources(8, 32, 100, 0))
    assert load_fraction(gpus) == 1.0
    empty = replace(POOL, total=Resources(), available=Resources())
    assert load_fraction(empty) == 0.0


def test_normalise_maps_onto_unit_interval():
    assert normalise([10, 20, 30]) == [0.0, 0.5, 1.0]
    assert normalise([5, 5]) == [0.0, 0.0]
    assert normalise([]) == []


def test_scores_weigh_normalised_terms():
    result = scores([0, 100], [2.0, 1.0], [0.0, 0.5], Weights(start=0.6, price=0.4, spread=0.1))
    assert result == [pytest.approx(0.4), pytest.approx(0.6 + 0.05)]


def test_rank_key_puts_avoided_last_then_score_then_id():
    keys = [
        rank_key("b", 0.5, False),
        rank_key("a", 0.5, False),
        rank_key("z", 0.0, True),
        rank_key("c", 0.1, False),
    ]
    assert [key[2] for key in sorted(keys)] == ["c", "a", "b", "z"]
