"""The network map's wire models: what agents report, what operators declare, what anyone reads.

Agents' models (``ProbeSample``, ``ProbeSamples``) are also named in ``cpnet.agent.protocol``, so
both sides of the agent API import them from one place. Light: only pydantic models, no I/O.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from cpnet.network.model import NetworkMap, check_place

MAX_SAMPLES = 200  # samples in one POST .../network/samples
MAX_RTT_MS = 600_000.0  # ten minutes: anything slower is a broken probe, not a figure
MAX_MBPS = 10_000_000.0  # 10 Tbit/s
MAX_PROBE_BYTES = 8 * 1024 * 1024  # GET /v1/network/probe?bytes= at most this
MAX_ESTIMATE_BYTES = 10**18  # one exabyte: an estimate's size at most this

Place = Annotated[str, Field(min_length=1, max_length=320)]


def _place(v: str) -> str:
    return check_place(v)  # ValueError → 422 naming the field


def _place_or_any(v: str) -> str:
    return v if v == "*" else check_place(v)  # "*": a declared link from one place to all


class ProbeSample(BaseModel):
    """One probe result from the reporting site to ``dst``: round trip and/or throughput."""

    dst: Place
    at: float = Field(ge=0, description="unix time of the probe")
    rtt_ms: float | None = Field(default=None, ge=0, le=MAX_RTT_MS)
    mbps: float | None = Field(default=None, gt=0, le=MAX_MBPS)

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        return _place(v)


class ProbeSamples(BaseModel):
    """Samples one agent reports at once (bounded)."""

    samples: list[ProbeSample] = Field(max_length=MAX_SAMPLES)


class LinkDecl(BaseModel):
    """What an operator declares about the link between two places (PUT /v1/network/links)."""

    a: Place
    b: Place
    rtt_ms: float | None = Field(default=None, ge=0, le=MAX_RTT_MS)
    mbps: float | None = Field(default=None, gt=0, le=MAX_MBPS)
    egress_per_gb: float = Field(default=0.0, ge=0, le=1e6)
    currency: str = Field(default="CNY", max_length=3, pattern=r"^[A-Z]{3}$")

    @field_validator("a", "b")
    @classmethod
    def _ends(cls, v: str) -> str:
        return _place_or_any(v)


class LinkRecord(LinkDecl):
    set_by: str = ""
    set_at: float = 0.0


class PathRecord(BaseModel):
    """The figures of one path and the source of each (measured, declared, geo, default)."""

    a: str
    b: str
    rtt_ms: float
    mbps: float
    egress_per_gb: float
    rtt_source: str
    mbps_source: str
    source: str  # the weaker of the two: what an estimate along the path rests on
    detail: str
    samples: int = 0  # measured samples within the map's window
    age_s: float | None = None  # age of the newest measured sample


class NetworkRecord(BaseModel):
    """The map as the API shows it (GET /v1/network)."""

    at: float
    paths: list[PathRecord]
    links: list[LinkRecord]


class EstimateRecord(BaseModel):
    """How long ``bytes`` take from ``src`` to ``dst`` (GET /v1/network/estimate)."""

    src: str
    dst: str
    bytes: int
    seconds: float
    egress: float
    currency: str
    path: PathRecord


def path_record(m: NetworkMap, a: str, b: str) -> PathRecord:
    """One path of the map as the API shows it."""
    p = m.path(a, b)
    got = m.measured_between(a, b)
    return PathRecord(
        a=a,
        b=b,
        rtt_ms=round(p.rtt_ms, 3),
        mbps=round(p.mbps, 3),
        egress_per_gb=p.egress_per_gb,
        rtt_source=p.rtt_source,
        mbps_source=p.mbps_source,
        source=p.source,
        detail=p.detail,
        samples=got.samples if got else 0,
        age_s=round(m.now - got.newest, 1) if got else None,
    )


def network_record(m: NetworkMap, links: list[LinkRecord]) -> NetworkRecord:
    """The whole map: every pair it knows something about, and the declared links."""
    return NetworkRecord(at=m.now, paths=[path_record(m, a, b) for a, b in m.pairs()], links=links)


def estimate_record(
    m: NetworkMap, src: str, dst: str, nbytes: int, currency: str
) -> EstimateRecord:
    """The transfer time (and egress price) of ``nbytes`` from ``src`` to ``dst``."""
    p = m.path(src, dst)
    return EstimateRecord(
        src=src,
        dst=dst,
        bytes=nbytes,
        seconds=p.seconds(nbytes),
        egress=p.egress(nbytes),
        currency=currency,
        path=path_record(m, src, dst),
    )
