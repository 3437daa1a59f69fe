"""The pure network map: fallback order and sources, smoothing, monotonicity, places."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.network import geo
from cpnet.network.model import (
    DEFAULT_MBPS,
    DEFAULT_RTT_MS,
    HALF_LIFE_S,
    HUB,
    MAX_AGE_S,
    Link,
    NetworkMap,
    Path,
    Sample,
    check_place,
    smooth,
    url_place,
)

NOW = 1_000_000.0
A, B = "site:a", "site:b"
GZ, SH = "440100", "310000"  # Guangzhou, Shanghai (in the shipped table)

rates = st.floats(min_value=0.01, max_value=1e6, allow_nan=False)
rtts = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False)
sizes = st.integers(min_value=0, max_value=10**15)


@given(rtt=rtts, slow=rates, fast=rates, n=sizes)
def test_more_bandwidth_never_increases_the_transfer_time(rtt, slow, fast, n) -> None:
    slow, fast = min(slow, fast), max(slow, fast)
    p = [Path(rtt, mbps, 0.0, "declared", "declared", "") for mbps in (slow, fast)]
    assert p[1].seconds(n) <= p[0].seconds(n)
    # ... and through the map, whichever source carries it.
    for source in ("measured", "declared"):
        maps = [_map_with(source, rtt, mbps) for mbps in (slow, fast)]
        assert maps[1].transfer_s(A, B, n) <= maps[0].transfer_s(A, B, n)


@given(n1=sizes, n2=sizes)
def test_more_bytes_never_take_less_time(n1, n2) -> None:
    m = _map_with("declared", 20.0, 100.0)
    lo, hi = sorted((n1, n2))
    assert m.transfer_s(A, B, lo) <= m.transfer_s(A, B, hi)


def _map_with(source: str, rtt: float, mbps: float) -> NetworkMap:
    if source == "measured":
        return NetworkMap.build([Sample(A, B, NOW - 1, rtt, mbps)], now=NOW)
    return NetworkMap.build(links=[Link(A, B, rtt, mbps)], now=NOW)


@given(measured=st.booleans(), declared=st.booleans(), placed=st.booleans(), rtt=rtts, mbps=rates)
def test_fallback_order_is_measured_declared_geo_default_and_names_its_source(
    measured, declared, placed, rtt, mbps
) -> None:
    samples = [Sample(A, B, NOW - 10, rtt, mbps)] if measured else []
    links = [Link(B, A, rtt + 1, mbps * 2)] if declared else []
    regions = {A: GZ, B: SH} if placed else {}
    p = NetworkMap.build(samples, links, regions, NOW, geo.shipped()).path(A, B)
    want_rtt = (
        "measured" if measured else "declared" if declared else "geo" if placed else "default"
    )
    assert p.rtt_source == want_rtt
    # No bandwidth between cities is in the data: geo gives none for two different cities.
    want_mbps = "measured" if measured else "declared" if declared else "default"
    assert p.mbps_source == want_mbps
    assert p.source in ("measured", "declared", "geo", "default")
    assert p.detail or want_rtt == "default"  # every non-default figure says where it came from
    if want_rtt == "measured":
        assert p.rtt_ms == rtt
    elif want_rtt == "declared":
        assert p.rtt_ms == rtt + 1
    elif want_rtt == "default":
        assert p.rtt_ms == DEFAULT_RTT_MS
    if want_mbps == "default":
        assert p.mbps == DEFAULT_MBPS


def test_geo_rtt_follows_the_fitted_distance_model() -> None:
    m = NetworkMap.build(regions={A: GZ, B: SH}, now=NOW, geo=geo.shipped())
    p = m.path(A, B)
    g = geo.shipped()
    km = geo.distance_km(g.city(GZ), g.city(SH))  # type: ignore[arg-type]
    assert 1100 < km < 1300
    assert p.rtt_ms == pytest.approx(geo.RTT_FLOOR_MS + geo.RTT_MS_PER_KM * km)
    assert "km" in p.detail and p.source == "default"  # the bandwidth is still the default
    same = NetworkMap.build(regions={A: GZ, B: "440106"}, now=NOW, geo=g).path(A, B)
    assert (same.rtt_source, same.mbps_source) == ("geo", "geo")


def test_a_declared_figure_fills_in_what_measurement_lacks() -> None:
    m = NetworkMap.build(
        [Sample(A, B, NOW - 5, 12.0, None)], [Link(A, B, 99.0, 250.0, egress_per_gb=0.4)], now=NOW
    )
    p = m.path(B, A)  # either direction
    assert (p.rtt_ms, p.rtt_source, p.mbps, p.mbps_source) == (12.0, "measured", 250.0, "declared")
    assert p.source == "declared"
    assert p.egress(2 * 10**9) == pytest.approx(0.8)


def test_a_wildcard_link_covers_every_path_from_a_place() -> None:
    m = NetworkMap.build(links=[Link("url:https://x.org", "*", 80.0, 50.0)], now=NOW)
    assert m.path("url:https://x.org", A).mbps_source == "declared"
    assert (HUB, "url:https://x.org") not in m.pairs() and m.pairs() == []


def test_smoothing_ignores_stale_samples_and_one_outlier() -> None:
    fresh = [Sample(A, B, NOW - 60 * i, 20.0 + i * 0.1, 100.0 + i) for i in range(5)]
    outlier = Sample(A, B, NOW - 1, 5000.0, 0.5)  # one probe that hit a busy moment
    stale = Sample(A, B, NOW - MAX_AGE_S - 1, 1.0, 99_999.0)
    s = smooth([*fresh, outlier, stale], NOW)
    assert s.samples == 6
    assert 20.0 <= s.rtt_ms <= 20.5  # type: ignore[operator]
    assert 100.0 <= s.mbps <= 104.0  # type: ignore[operator]
    assert s.newest == NOW
    only_stale = smooth([stale], NOW)
    assert only_stale.samples == 0 and only_stale.rtt_ms is None
    m = NetworkMap.build([stale], now=NOW)
    assert m.path(A, B).source == "default"


def test_recent_samples_outweigh_old_ones() -> None:
    old = [Sample(A, B, NOW - 4 * HALF_LIFE_S, 50.0, 10.0) for _ in range(3)]
    new = [Sample(A, B, NOW - 1, 10.0, 200.0) for _ in range(2)]
    s = smooth([*old, *new], NOW)
    assert (s.rtt_ms, s.mbps) == (10.0, 200.0)


def test_throughput_only_samples_keep_the_rtt_from_elsewhere() -> None:
    s = smooth([Sample(A, B, NOW - 1, None, 300.0)], NOW)
    assert s.rtt_ms is None and s.mbps == 300.0
    p = NetworkMap.build([Sample(A, B, NOW - 1, None, 300.0)], now=NOW).path(A, B)
    assert (p.rtt_source, p.mbps_source) == ("default", "measured")


def test_pairs_lists_measured_declared_and_hub_to_each_placed_site() -> None:
    m = NetworkMap.build(
        [Sample(B, HUB, NOW - 1, 3.0, 10.0)],
        [Link(A, "url:https://x.org", 9.0)],
        {A: GZ, B: SH, HUB: GZ},
        NOW,
    )
    assert m.pairs() == [(HUB, A), (HUB, B), (A, "url:https://x.org")]


def test_a_place_to_itself() -> None:
    p = NetworkMap.build(now=NOW).path(A, A)
    assert p.source == "same place" and p.seconds(0) < 0.001


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("hub", "hub"),
        (" HUB ", "hub"),
        ("site:CN.dev.Acme.gz", "site:cn.dev.acme.gz"),
        ("url:HTTPS://Data.Example.org:8443/a/b?c=d", "url:https://data.example.org:8443"),
        ("url:s3://bucket/key", "url:s3://bucket"),
        ("region:440300", "region:440300"),
    ],
)
def test_places_have_one_spelling(text: str, place: str) -> None:
    assert check_place(text) == place


@pytest.mark.parametrize(
    "text", ["", "moon", "site:", "site:a b", "url:nohost", "region:gz", "x" * 400]
)
def test_a_bad_place_says_what_a_place_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"hub, site:<site id>, url:|at most"):
        check_place(text)


def test_url_place_drops_credentials_paths_and_queries() -> None:
    assert url_place("https://user:pw@h.org/x?sig=1") == "url:https://h.org"
    assert url_place("data.txt") is None


def test_peers_due_are_the_unmeasured_then_the_longest_ago_and_bounded() -> None:
    from cpnet.network.model import PEER_PROBE_EVERY_S, peers_due

    peers = {f"site:{c}": f"http://{c}:1" for c in "abcd"}
    newest = {"site:a": NOW - 10, "site:b": NOW - PEER_PROBE_EVERY_S - 5, "site:c": NOW - 9999}
    assert peers_due(peers, newest, NOW, limit=2) == {
        "site:d": "http://d:1",
        "site:c": "http://c:1",
    }
    assert peers_due(peers, newest, NOW, limit=9) == {
        "site:d": "http://d:1",
        "site:c": "http://c:1",
        "site:b": "http://b:1",
    }
    assert peers_due({}, {}, NOW) == {}
