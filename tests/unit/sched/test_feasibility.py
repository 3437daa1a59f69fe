"""Each feasibility rule and the reason it gives."""

from __future__ import annotations

from dataclasses import replace

from cpnet.sched import PoolView, Price, Resources, TaskRequest, check
from cpnet.sched.feasibility import constraint_reasons, signature, size_reasons

BASE = PoolView(
    id="p1",
    site_id="site-1",
    provider_id="prov-a",
    name="pool one",
    type="general",
    region_code="440300",
    labels=(("arch", "x86_64"), ("zone", "a")),
    total=Resources(8, 32, 100, 2),
    available=Resources(8, 32, 100, 2),
    gpu_model="NVIDIA H100 80GB",
    queue_length=0,
    running=0,
    price=Price("CNY", 0.1, 0.01, 10.0),
)
TASK = TaskRequest(id="t1", demand=Resources(2, 4))


def test_plain_task_on_plain_pool_is_feasible():
    assert check(TASK, BASE) == ()


def test_offline_pool_is_infeasible():
    assert check(TASK, replace(BASE, online=False)) == ("pool is offline",)


def test_demand_above_total_names_each_short_resource():
    task = replace(TASK, demand=Resources(16, 32, 200, 4))
    assert check(task, BASE) == (
        "larger than the whole pool: needs 16 cpu_cores, 8 in total",
        "larger than the whole pool: needs 200 disk_gb, 100 in total",
        "larger than the whole pool: needs 4 gpus, 2 in total",
    )


def test_shortfall_of_available_capacity_is_not_infeasibility():
    busy = replace(BASE, available=Resources(0, 0, 0, 0))
    assert check(replace(TASK, demand=Resources(8, 32, 100, 2)), busy) == ()


def test_gpu_model_is_a_case_insensitive_substring():
    assert check(replace(TASK, gpu_model="h100"), BASE) == ()
    assert check(replace(TASK, gpu_model="NVIDIA H100 80GB"), BASE) == ()


def test_gpu_model_mismatch_and_missing():
    assert check(replace(TASK, gpu_model="A100"), BASE) == (
        "needs GPU model 'A100', pool has 'NVIDIA H100 80GB'",
    )
    no_gpu = replace(BASE, gpu_model=None, total=Resources(8, 32, 100, 0))
    assert check(replace(TASK, gpu_model="A100"), no_gpu) == (
        "needs GPU model 'A100', pool has no GPUs",
    )


def test_region_is_a_prefix_match():
    assert check(replace(TASK, regions=("44",)), BASE) == ()
    assert check(replace(TASK, regions=("440300",)), BASE) == ()
    assert check(replace(TASK, regions=("11", "4403")), BASE) == ()
    assert check(replace(TASK, regions=("11", "31")), BASE) == (
        "region 440300 not allowed (allowed: 11, 31)",
    )
    # A longer code than the pool's is not a prefix of it.
    assert check(replace(TASK, regions=("4403001",)), BASE) != ()


def test_provider_must_be_allowed():
    assert check(replace(TASK, providers=("prov-a", "prov-b")), BASE) == ()
    assert check(replace(TASK, providers=("prov-b",)), BASE) == (
        "provider prov-a not allowed (allowed: prov-b)",
    )


def test_pool_type_must_be_allowed():
    assert check(replace(TASK, pool_types=("general",)), BASE) == ()
    assert check(replace(TASK, pool_types=("supercomputing", "intelligent")), BASE) == (
        "pool type general not allowed (allowed: supercomputing, intelligent)",
    )


def test_every_label_must_be_present_with_the_same_value():
    assert check(replace(TASK, labels=(("zone", "a"),)), BASE) == ()
    assert check(replace(TASK, labels=(("arch", "x86_64"), ("zone", "a"))), BASE) == ()
    assert check(replace(TASK, labels=(("zone", "b"), ("disk", "ssd"))), BASE) == (
        "label zone=a, needs zone=b",
        "missing label disk=ssd",
    )


def test_all_reasons_are_listed_together():
    task = TaskRequest(
        id="t",
        demand=Resources(16),
        gpu_model="A100",
        regions=("11",),
        providers=("prov-b",),
        pool_types=("edge",),
        labels=(("zone", "b"),),
    )
    reasons = check(task, replace(BASE, online=False))
    assert reasons == (
        "pool is offline",
        "needs GPU model 'A100', pool has 'NVIDIA H100 80GB'",
        "region 440300 not allowed (allowed: 11)",
        "provider prov-a not allowed (allowed: prov-b)",
        "pool type general not allowed (allowed: edge)",
        "label zone=a, needs zone=b",
        "larger than the whole pool: needs 16 cpu_cores, 8 in total",
    )
    assert reasons == constraint_reasons(task, replace(BASE, online=False)) + size_reasons(
        task.demand, BASE
    )


def test_signature_ignores_demand_runtime_and_avoidance():
    a = replace(TASK, regions=("44",))
    b = replace(a, id="t2", demand=Resources(1), expected_runtime_s=5, avoid_pools=("p1",))
    assert signature(a) == signature(b)
    assert signature(a) != signature(replace(a, regions=("45",)))


def test_task_with_an_image_needs_a_pool_that_runs_images():
    task = replace(TASK, image="ubuntu:24.04")
    (reason,) = check(task, BASE)
    assert "needs container image 'ubuntu:24.04'" in reason and "runs no images" in reason
    assert check(task, replace(BASE, can_run_images=True)) == ()
    assert check(TASK, BASE) == ()  # no image: any pool
    assert signature(task) != signature(TASK)  # cached reasons must not mix the two
