"""Capacity vectors in the store (SQLite and PostgreSQL): built on registration, rebuilt from probe
reports, read by discovery with a profile and by the scheduler's snapshot."""

from __future__ import annotations

import time

import pytest

from cpnet.hub.scheduling import pool_view
from cpnet.registry.model import Measurements, PoolDescriptor, Region, Registration
from cpnet.store import accounts, registry
from cpnet.store.db import Store


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def test_vector_from_catalogue_then_from_a_probe(store: Store) -> None:
    now = time.time()
    gpu = PoolDescriptor(
        name="gpu",
        type="intelligent",
        hardware={
            "cpu_model": "AMD EPYC 9654 96-Core Processor",
            "cpu_cores": 96,
            "memory_gb": 1024,
            "accelerators": [{"model": "NVIDIA A100-SXM4-80GB", "count": 4}],
        },
        price={"gpu_hour": 10.0},
    )
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        prov = registry.create_provider(s, org.id, "ACME", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="s", type="intelligent", region=Region(code="440300"), now=now
        )
        pid = registry.register(s, site.id, Registration(pools=[gpu]), now).pools["gpu"]
    with store.read() as s:
        rec = registry.get_pool(s, pid)
        nominal = rec.capacity["scu"]["ai-train"]
        assert rec.capacity["accelerator"]["catalogue"] == "NVIDIA A100 SXM4 80GB"
        assert nominal > 0
        found = registry.list_pools(s, registry.PoolFilter(profile="ai-train", min_scu=1))
        assert [p.id for p in found] == [pid]
        assert found[0].price_per_scu_hour == pytest.approx(40.0 / nominal, rel=1e-3)
        view = pool_view(*registry.live_pools(s)[0])
        assert view.scu_rate("ai-train") == nominal
    probe = {
        "accelerator_model": "NVIDIA A100-SXM4-80GB",
        "accelerator": {"bf16": 250.0, "mem_bw": 1800.0},
        "host": "node7",
    }
    m = Measurements.model_validate({"pools": [{"name": "gpu", "probe": probe}]})
    with store.tx() as s:
        registry.record_measurements(s, site.id, m, time.time())
    with store.tx() as s:
        # Re-registering keeps the probe: the vector stays measured.
        registry.register(s, site.id, Registration(pools=[gpu]), time.time())
    with store.read() as s:
        cap = registry.get_pool(s, pid).capacity
        bf16 = cap["accelerator"]["figures"]["bf16"]
        assert (bf16["source"], bf16["value"]) == ("measured", 4 * 250.0)
        assert cap["measured_on"] == "node7" and cap["measured_at"] is not None
        # ai-train = min(4 x 250, 128 x 4 x 1800 / 1000) = 921.6 (memory-bound)
        assert cap["scu"]["ai-train"] == pytest.approx(921.6)
        assert pool_view(*registry.live_pools(s)[0]).scu_rate("ai-train") == pytest.approx(921.6)
