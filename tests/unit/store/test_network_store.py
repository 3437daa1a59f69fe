"""The network map's store (SQLite and a real PostgreSQL): samples bounded per pair and by age,
declared links one per unordered pair, and load_map's regions."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cpnet.errors import NotFound
from cpnet.network.model import HUB, MAX_AGE_S
from cpnet.network.records import LinkDecl, ProbeSample
from cpnet.store import network as net
from cpnet.store.db import Store
from cpnet.store.tables import NetSample
from tests.unit.store.test_store import _world

NOW = 2_000_000_000.0


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def test_samples_are_bounded_per_pair_and_by_age(store: Store) -> None:
    _, (site,) = _world(store)
    many = [ProbeSample(dst="hub", at=NOW - i, rtt_ms=5.0, mbps=100.0) for i in range(80)]
    old = ProbeSample(dst="url:https://x.org", at=NOW - MAX_AGE_S - 5, rtt_ms=1.0)
    with store.tx() as s:
        assert net.record_samples(s, site, [*many, old], NOW) == 81
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(NetSample)) == net.KEEP_PER_PAIR
        newest = s.scalar(select(func.max(NetSample.at)))
        assert newest == NOW
        m = net.load_map(s, NOW)
    got = m.measured_between(HUB, f"site:{site}")
    assert got is not None and got.samples == net.KEEP_PER_PAIR
    assert m.path(f"site:{site}", HUB).source == "measured"
    # the future is now: an agent's clock that runs ahead does not make samples live longer
    with store.tx() as s:
        net.record_samples(s, site, [ProbeSample(dst="hub", at=NOW + 500, rtt_ms=1.0)], NOW)
        assert s.scalar(select(func.max(NetSample.at))) == NOW


def test_a_sample_to_an_unknown_site_names_it(store: Store) -> None:
    _, (site,) = _world(store)
    with store.tx() as s, pytest.raises(NotFound) as err:
        net.record_samples(s, site, [ProbeSample(dst="site:nope", at=NOW, rtt_ms=1.0)], NOW)
    assert err.value.field == "samples.0.dst"


def test_links_are_one_per_pair_and_removable_either_way(store: Store) -> None:
    _, (site,) = _world(store)
    sp = f"site:{site}"
    with store.tx() as s:
        net.set_link(s, LinkDecl(a=sp, b="hub", rtt_ms=30.0), "u1", NOW)
        net.set_link(s, LinkDecl(a="hub", b=sp, mbps=200.0, egress_per_gb=0.3), "u2", NOW + 1)
        (rec,) = net.links(s)
        assert (rec.rtt_ms, rec.mbps, rec.set_by) == (None, 200.0, "u2")  # replaced, not merged
        m = net.load_map(s, NOW + 2)
        assert m.path(sp, HUB).mbps_source == "declared"
        assert m.regions[sp] == "440300"
        assert HUB not in m.regions  # no hub region set
        net.set_hub_region(s, "440300")
        assert net.load_map(s, NOW + 2).path(sp, HUB).rtt_source == "geo"  # one city
        net.remove_link(s, sp, "hub")
        with pytest.raises(NotFound):
            net.remove_link(s, "hub", sp)
