"""The network map's store: probe samples agents report and links operators declare.

Samples are bounded: at most ``KEEP_PER_PAIR`` per (src, dst), none older than the map's
``MAX_AGE_S`` once pruned; ``load_map`` builds the pure ``NetworkMap`` the scheduler and the API
read.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cpnet.errors import NotFound
from cpnet.network import geo
from cpnet.network.model import (
    HUB,
    MAX_AGE_S,
    Link,
    NetworkMap,
    Sample,
    peers_due,
    site_place,
)
from cpnet.network.records import LinkDecl, LinkRecord, ProbeSample
from cpnet.store.tables import HubMeta, NetLink, NetSample, Site

KEEP_PER_PAIR = 20  # samples kept per (src, dst): more than an hour of 5-minute probes
HUB_REGION_KEY = "hub_region_code"  # hub_meta key: where the hub lies (a region code)


def record_samples(s: Session, site_id: str, samples: list[ProbeSample], now: float) -> int:
    """Store a site's samples (source: the site), keep the newest per pair; how many stored.

    A destination site must exist (``NotFound`` naming the field); samples dated in the future
    are stored as of ``now`` (an agent's clock may run ahead).
    """
    src = site_place(site_id)
    sites = {d.dst[5:] for d in samples if d.dst.startswith("site:")}
    if sites:
        known = set(s.scalars(select(Site.id).where(Site.id.in_(sites))))
        for i, d in enumerate(samples):
            if d.dst.startswith("site:") and d.dst[5:] not in known:
                raise NotFound(
                    f"no site {d.dst[5:]}: probe only sites the hub named",
                    field=f"samples.{i}.dst",
                )
    pairs = set()
    for d in samples:
        if d.rtt_ms is None and d.mbps is None:
            continue
        at = min(d.at, now)
        if now - at > MAX_AGE_S:
            continue  # too old to count
        s.add(NetSample(src=src, dst=d.dst, at=at, rtt_ms=d.rtt_ms, mbps=d.mbps, site_id=site_id))
        pairs.add(d.dst)
    s.flush()
    for dst in pairs:
        keep = select(NetSample.id).where(NetSample.src == src, NetSample.dst == dst)
        keep = keep.order_by(NetSample.at.desc()).limit(KEEP_PER_PAIR)
        ids = list(s.scalars(keep))
        s.execute(
            delete(NetSample).where(
                NetSample.src == src, NetSample.dst == dst, NetSample.id.not_in(ids)
            )
        )
    s.execute(delete(NetSample).where(NetSample.at < now - MAX_AGE_S))
    return sum(1 for d in samples if d.rtt_ms is not None or d.mbps is not None)


def set_link(s: Session, decl: LinkDecl, who: str, now: float) -> LinkRecord:
    """Declare (or replace) the link between two places; one row per unordered pair."""
    a, b = sorted((decl.a, decl.b)) if "*" not in (decl.a, decl.b) else (decl.a, decl.b)
    for row in s.scalars(select(NetLink).where(NetLink.a == b, NetLink.b == a)):
        s.delete(row)  # the same pair spelt the other way round
    s.flush()
    row = s.get(NetLink, (a, b)) or NetLink(a=a, b=b)
    row.rtt_ms, row.mbps = decl.rtt_ms, decl.mbps
    row.egress_per_gb, row.currency = decl.egress_per_gb, decl.currency
    row.set_by, row.set_at = who, now
    s.add(row)
    return _record(row)


def remove_link(s: Session, a: str, b: str) -> LinkRecord:
    """Forget a declared link (either spelling of the pair); ``NotFound`` if there is none."""
    row = s.get(NetLink, (a, b)) or s.get(NetLink, (b, a))
    if row is None:
        raise NotFound(
            f"no declared link between {a} and {b}: `cpnet network` lists the declared links",
            field="b",
        )
    rec = _record(row)
    s.delete(row)
    s.flush()
    return rec


def links(s: Session) -> list[LinkRecord]:
    return [_record(r) for r in s.scalars(select(NetLink).order_by(NetLink.a, NetLink.b))]


def _record(r: NetLink) -> LinkRecord:
    return LinkRecord(
        a=r.a,
        b=r.b,
        rtt_ms=r.rtt_ms,
        mbps=r.mbps,
        egress_per_gb=r.egress_per_gb,
        currency=r.currency,
        set_by=r.set_by,
        set_at=r.set_at,
    )


def load_map(s: Session, now: float) -> NetworkMap:
    """The network map as of ``now``: recent samples, declared links, where sites (and the hub,
    if its region is set) lie, and the shipped geography for the rest."""
    rows = s.execute(
        select(NetSample.src, NetSample.dst, NetSample.at, NetSample.rtt_ms, NetSample.mbps).where(
            NetSample.at >= now - MAX_AGE_S
        )
    )
    samples = [Sample(src, dst, at, rtt, mbps) for src, dst, at, rtt, mbps in rows]
    declared = [
        Link(r.a, r.b, r.rtt_ms, r.mbps, r.egress_per_gb, r.currency)
        for r in s.scalars(select(NetLink))
    ]
    sites = select(Site.id, Site.region_code).where(Site.retired_at.is_(None))
    regions = {site_place(sid): code for sid, code in s.execute(sites)}
    hub_region = s.get(HubMeta, HUB_REGION_KEY)
    if hub_region is not None and hub_region.value:
        regions[HUB] = hub_region.value
    return NetworkMap.build(samples, declared, regions, now, geo.shipped())


def set_hub_region(s: Session, code: str) -> None:
    """Say where the hub lies (a region code), so paths to it get geo figures."""
    row = s.get(HubMeta, HUB_REGION_KEY) or HubMeta(key=HUB_REGION_KEY, value="")
    row.value = code
    s.add(row)


def peers_to_probe(s: Session, site_id: str, now: float) -> dict[str, str]:
    """The peer sites this site's agent should probe now (place -> probe URL): online sites
    whose agents listen for probes, and whose newest sample from here is old or missing."""
    rows = s.execute(
        select(Site.id, Site.agent).where(
            Site.online.is_(True), Site.retired_at.is_(None), Site.id != site_id
        )
    )
    peers = {
        site_place(sid): str(agent["probe_url"])
        for sid, agent in rows
        if isinstance(agent, dict) and agent.get("probe_url")
    }
    if not peers:
        return {}
    src = site_place(site_id)
    newest = dict(
        s.execute(
            select(NetSample.dst, func.max(NetSample.at))
            .where(NetSample.src == src, NetSample.dst.in_(list(peers)))
            .group_by(NetSample.dst)
        ).all()
    )
    return peers_due(peers, newest, now)
