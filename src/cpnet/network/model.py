"""The network map: how long N bytes take between two places, and where that figure came from.

Pure: built from plain data (measured samples, declared links, where places lie) and asked with
``now`` passed in. A *place* is a string naming one end of a path:

    ``hub``                      the hub
    ``site:<site id>``           a provider site (where its agent and pools are)
    ``url:<scheme>://<host>``    a data location, the origin of the URLs a task stages from
    ``region:<code>``            a city by its GB/T 2260 code (where users or devices are)

Each estimate says which source it used, in order of preference: a recent ``measured`` sample
(smoothed), a ``declared`` link from an operator, the ``geo`` model from the real distance between
the two places' cities (``network.geo``), else ``default`` figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cpnet.network import geo as geo_mod

HUB = "hub"
REGION_PREFIX = "region:"  # a place named by its region code: a city, for latency bounds

# Fallbacks, stated so every estimate can say what it assumed.
DEFAULT_RTT_MS = 30.0  # no location known for one end: a typical in-country RTT (RIPE CN-CN 24.5)
DEFAULT_MBPS = 1000.0  # no measured or declared bandwidth between two cities (none in the data)
SAME_CITY_MBPS = 10_000.0  # both ends in one city: a data-centre interconnect
SAME_PLACE_RTT_MS = 0.1  # a place to itself (loopback, one site's local storage)
SAME_PLACE_MBPS = 10_000.0
MAX_AGE_S = 3600.0  # measured samples older than this are not used
PEER_PROBE_EVERY_S = 600.0  # a site is asked to probe a peer when its newest sample is older
PEER_PROBES_PER_HEARTBEAT = 2  # peers one heartbeat reply asks for, at most
HALF_LIFE_S = 600.0  # a sample's weight halves every this many seconds of age


PLACE_MAX_CHARS = 300


def check_place(text: str) -> str:
    """``text`` as a place in its canonical form; ValueError saying what a place looks like.

    ``hub``, ``site:<id>`` (lower case), ``url:<scheme>://<host>[:port]`` (a full URL is cut
    to its origin) or ``region:<code>``, so that one place has one spelling in the store and
    the map.
    """
    t = (text or "").strip()
    if t.lower() == HUB:
        return HUB
    if len(t) > PLACE_MAX_CHARS:
        raise ValueError(f"a place is at most {PLACE_MAX_CHARS} characters")
    if t.lower().startswith("site:") and len(t) > 5 and " " not in t:
        return "site:" + t[5:].lower()
    if t.lower().startswith("url:"):
        origin = url_place(t[4:])
        if origin is not None:
            return origin
    code = t[len(REGION_PREFIX) :]
    if t.lower().startswith(REGION_PREFIX) and code.isdigit() and 2 <= len(code) <= 12:
        return REGION_PREFIX + code
    raise ValueError(
        f"{text!r} is not a place: use hub, site:<site id>, url:<scheme>://<host>[:port] "
        "or region:<region code>"
    )


def site_place(site_id: str) -> str:
    """The place of a provider site."""
    return f"site:{site_id}"


def url_place(url: str) -> str | None:
    """The place a URL's data lives at (its origin), or None for inline or unparseable data."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname.lower()
    return f"url:{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe result from ``src`` to ``dst``: round trip, and throughput when bytes moved."""

    src: str
    dst: str
    at: float  # unix time of the probe
    rtt_ms: float | None  # None: a throughput-only figure (e.g. from a staged transfer)
    mbps: float | None = None  # megabits per second moved; None for a latency-only probe


@dataclass(frozen=True, slots=True)
class Link:
    """What is known of the path between two places (either direction)."""

    a: str
    b: str
    rtt_ms: float | None = None
    mbps: float | None = None
    egress_per_gb: float = 0.0  # price of moving one GB out of ``a`` towards ``b``
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class Path:
    """The figures used for one path, and the source of each."""

    rtt_ms: float
    mbps: float
    egress_per_gb: float
    rtt_source: str  # "measured" | "declared" | "geo" | "default" | "same place"
    mbps_source: str
    detail: str  # a human sentence: "measured 12 samples, newest 40 s ago"

    @property
    def source(self) -> str:
        """The weaker of the two sources (what the estimate rests on)."""
        order = ("same place", "measured", "declared", "geo", "default")
        return max(self.rtt_source, self.mbps_source, key=order.index)

    def seconds(self, nbytes: int) -> float:
        """Time to move ``nbytes``: one round trip to start, then the bytes at the bandwidth."""
        return self.rtt_ms / 1000.0 + (max(0, nbytes) * 8.0) / (self.mbps * 1e6)

    def egress(self, nbytes: int) -> float:
        """Price of moving ``nbytes`` along the path."""
        return max(0, nbytes) / 1e9 * self.egress_per_gb


@dataclass(frozen=True, slots=True)
class Smoothed:
    """Samples of one direction folded into one figure each."""

    rtt_ms: float | None
    mbps: float | None
    samples: int
    newest: float


def smooth(samples: Iterable[Sample], now: float, half_life_s: float = HALF_LIFE_S) -> Smoothed:
    """Fold samples into time-weighted medians (robust to one outlier; recent ones count more).

    Samples older than ``MAX_AGE_S`` are ignored; a weighted median rather than a mean so one
    probe that hit a busy moment does not move the figure.
    """
    fresh = [s for s in samples if 0 <= now - s.at <= MAX_AGE_S]
    if not fresh:
        return Smoothed(None, None, 0, 0.0)

    def weight(s: Sample) -> float:
        return 0.5 ** ((now - s.at) / half_life_s)

    rtts = [(s.rtt_ms, weight(s)) for s in fresh if s.rtt_ms is not None and s.rtt_ms >= 0]
    rtt = _weighted_median(rtts) if rtts else None  # type: ignore[arg-type]
    rates = [(s.mbps, weight(s)) for s in fresh if s.mbps is not None and s.mbps > 0]
    mbps = _weighted_median(rates) if rates else None  # type: ignore[arg-type]
    return Smoothed(rtt, mbps, len(fresh), max(s.at for s in fresh))


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    pairs = sorted(pairs)
    half = sum(w for _, w in pairs) / 2.0
    run = 0.0
    for value, w in pairs:
        run += w
        if run >= half:
            return value
    return pairs[-1][0]


@dataclass(frozen=True)
class NetworkMap:
    """Everything known about the network at one moment, and estimates from it.

    ``measured`` holds smoothed figures per direction (``smooth``); ``links`` the operators'
    declared links; ``regions`` where places lie (a region code, e.g. a site's "440300").
    """

    measured: Mapping[tuple[str, str], Smoothed] = field(default_factory=dict)
    links: Mapping[tuple[str, str], Link] = field(default_factory=dict)
    regions: Mapping[str, str] = field(default_factory=dict)
    geo: geo_mod.Geo | None = None  # None: no distance model, only measured/declared/default
    now: float = 0.0

    @classmethod
    def build(
        cls,
        samples: Iterable[Sample] = (),
        links: Iterable[Link] = (),
        regions: Mapping[str, str] | None = None,
        now: float = 0.0,
        geo: geo_mod.Geo | None = None,
    ) -> NetworkMap:
        """Build a map from raw samples and declared links (the pure constructor)."""
        by_pair: dict[tuple[str, str], list[Sample]] = {}
        for s in samples:
            by_pair.setdefault((s.src, s.dst), []).append(s)
        measured = {pair: smooth(group, now) for pair, group in by_pair.items()}
        return cls(
            measured={k: v for k, v in measured.items() if v.samples},
            links={(link.a, link.b): link for link in links},
            regions=dict(regions or {}),
            geo=geo,
            now=now,
        )

    def _measured(self, a: str, b: str) -> Smoothed | None:
        return self.measured.get((a, b)) or self.measured.get((b, a))

    def _declared(self, a: str, b: str) -> Link | None:
        return (
            self.links.get((a, b))
            or self.links.get((b, a))
            or self.links.get((a, "*"))
            or self.links.get(("*", b))
        )

    def path(self, a: str, b: str) -> Path:
        """The figures for the path between ``a`` and ``b``, each with its source."""
        if a == b:
            return Path(SAME_PLACE_RTT_MS, SAME_PLACE_MBPS, 0.0, "same place", "same place", "")
        m = self._measured(a, b)
        d = self._declared(a, b)
        egress = d.egress_per_gb if d is not None else 0.0
        details: list[str] = []
        rtt = mbps = None
        rtt_src = mbps_src = ""
        if m is not None:
            age = round(self.now - m.newest)
            details.append(f"measured {m.samples} samples, newest {age} s ago")
            if m.rtt_ms is not None:
                rtt, rtt_src = m.rtt_ms, "measured"
            if m.mbps is not None:
                mbps, mbps_src = m.mbps, "measured"
        if d is not None:
            if rtt is None and d.rtt_ms is not None:
                rtt, rtt_src = d.rtt_ms, "declared"
            if mbps is None and d.mbps is not None:
                mbps, mbps_src = d.mbps, "declared"
            if rtt_src == "declared" or mbps_src == "declared":
                details.append(f"declared link {d.a}↔{d.b}")
        if rtt is None or mbps is None:
            g_rtt, g_mbps, g_detail = self._geo(a, b)
            if rtt is None:
                rtt, rtt_src = (g_rtt, "geo") if g_rtt is not None else (DEFAULT_RTT_MS, "default")
            if mbps is None:
                mbps, mbps_src = (
                    (g_mbps, "geo") if g_mbps is not None else (DEFAULT_MBPS, "default")
                )
            if g_detail:
                details.append(g_detail)
        return Path(rtt, mbps, egress, rtt_src, mbps_src, "; ".join(details))

    def _geo(self, a: str, b: str) -> tuple[float | None, float | None, str]:
        """Distance-model figures, when both places lie in known cities."""
        if self.geo is None:
            return None, None, ""
        ca = self.geo.city(self.region_of(a))
        cb = self.geo.city(self.region_of(b))
        if ca is None or cb is None:
            return None, None, ""
        if ca.admin_code == cb.admin_code:
            return geo_mod.RTT_FLOOR_MS, SAME_CITY_MBPS, f"both in {ca.name}"
        km = geo_mod.distance_km(ca, cb)
        return geo_mod.default_rtt_ms(km), None, f"{ca.name}–{cb.name} {round(km)} km"

    def pairs(self) -> list[tuple[str, str]]:
        """Every pair the map knows something about (measured, declared, or the hub and each
        placed site), each once as (a, b) with a < b, sorted."""
        seen: set[tuple[str, str]] = set()
        known = [*self.measured, *self.links]
        known += [(HUB, p) for p in self.regions if p.startswith("site:")]
        for a, b in known:
            if a != b and "*" not in (a, b):
                seen.add((min(a, b), max(a, b)))
        return sorted(seen)

    def measured_between(self, a: str, b: str) -> Smoothed | None:
        """The smoothed measurements between two places (either direction), if any."""
        return self._measured(a, b)

    def region_of(self, place: str) -> str:
        """The region code a place lies in ("" when unknown); ``region:<code>`` names its own."""
        if place.startswith(REGION_PREFIX):
            return place[len(REGION_PREFIX) :]
        return self.regions.get(place, "")

    def transfer_s(self, a: str, b: str, nbytes: int) -> float:
        """Seconds to move ``nbytes`` from ``a`` to ``b``."""
        return self.path(a, b).seconds(nbytes)


def peers_due(
    peers: Mapping[str, str],
    newest: Mapping[str, float],
    now: float,
    every_s: float = PEER_PROBE_EVERY_S,
    limit: int = PEER_PROBES_PER_HEARTBEAT,
) -> dict[str, str]:
    """Which peers (place -> probe URL) a site should probe now: those it has no sample of
    within ``every_s``, never-measured first, then the longest ago; at most ``limit``."""
    due = [(newest.get(p, -1.0), p) for p in peers if now - newest.get(p, -1e18) >= every_s]
    return {p: peers[p] for _, p in sorted(due)[:limit]}
