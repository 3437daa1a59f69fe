"""The DNS publisher's lean read of the registry (records.bodies with dns=True) gives the same DNS
profiles as the full records GET /v1/resolve serves, for every kind and for a subset of ids."""

from __future__ import annotations

import time

import pytest

from cpnet.hub import records
from cpnet.ident import dns as idns
from cpnet.registry.model import PoolDescriptor, Region, Registration
from cpnet.store import accounts, registry
from cpnet.store.db import Store


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def test_the_lean_read_gives_the_full_records_dns_profiles(store: Store) -> None:
    now = time.time()
    pools = [
        PoolDescriptor(
            name="gpu",
            type="intelligent",
            hardware={
                "cpu_model": "AMD EPYC 9654",
                "cpu_cores": 96,
                "memory_gb": 1024,
                "disk_gb": 2000.5,
                "accelerators": [{"model": "NVIDIA A100-SXM4-80GB", "count": 4}],
            },
            price={"gpu_hour": 10.0},
        ),
        PoolDescriptor(name="cpu", hardware={"cpu_cores": 8, "memory_gb": 16.5}),
        PoolDescriptor(name="old", hardware={"cpu_cores": 1, "memory_gb": 1}),
    ]
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        prov = registry.create_provider(s, org.id, "ACME", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="s", type="intelligent", region=Region(code="440300", name="SZ"), now=now
        )
        ids = registry.register(
            s, site.id, Registration(endpoint="https://s.acme.example", pools=pools), now
        ).pools
        registry.retire_pool(s, ids["old"], now)
    with store.read() as s:
        full = records.bodies(s, "cn.dev")
        lean = records.bodies(s, "cn.dev", dns=True)
        some = records.bodies(s, "cn.dev", [ids["cpu"]], dns=True)
    assert full.keys() == lean.keys() and len(full) == 5  # provider, site, three pools
    for ident in full:
        assert idns.dns_record(lean[ident]) == idns.dns_record(full[ident]), ident
    assert lean[ids["gpu"]]["capacity"]["accelerators"][0]["count"] == 4
    assert lean[ids["old"]]["kind"] == "tombstone"
    # A pool named brings its site (whose record lists its pools), and the site its pools.
    assert some.keys() == {ids["cpu"], ids["gpu"], ids["old"], site.id}
    assert idns.dns_record(some[ids["cpu"]]) == idns.dns_record(full[ids["cpu"]])
