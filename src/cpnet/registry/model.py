"""Typed descriptors of providers, sites and pools, and the agent's registration and heartbeats."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cpnet.market.auction_records import PoolLeases
from cpnet.market.metering import UsageKey
from cpnet.measure.vector import Declared, ProbeReport

Label = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=128)]

# An agent heartbeats every HEARTBEAT_INTERVAL_S by default; a pool is offline after
# MISSED_HEARTBEATS intervals without one.
HEARTBEAT_INTERVAL_S = 5.0
MISSED_HEARTBEATS = 3
MAX_POOLS_PER_SITE = 64


class PoolType(StrEnum):
    GENERAL = "general"
    INTELLIGENT = "intelligent"
    SUPERCOMPUTING = "supercomputing"
    EDGE = "edge"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Region(Strict):
    """Where a site is: an administrative code (e.g. GB/T 2260 "440300"), a name, coordinates."""

    code: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
    name: Annotated[str, Field(max_length=128)] = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class Accelerator(Strict):
    model: Annotated[str, Field(min_length=1, max_length=128)]
    count: int = Field(ge=1, le=1024)
    memory_gb: float = Field(default=0.0, ge=0, le=4096)


class Hardware(Strict):
    """What a pool is made of (declared by its operator or discovered by the agent)."""

    cpu_model: Annotated[str, Field(max_length=256)] = ""
    cpu_cores: float = Field(gt=0, le=10_000_000)
    memory_gb: float = Field(gt=0, le=1_000_000_000)
    disk_gb: float = Field(default=0.0, ge=0, le=1_000_000_000)
    accelerators: list[Accelerator] = Field(default_factory=list, max_length=16)

    @property
    def gpus(self) -> int:
        return sum(a.count for a in self.accelerators)

    @property
    def gpu_model(self) -> str | None:
        return self.accelerators[0].model if self.accelerators else None


class Price(Strict):
    """Price per resource-hour in `currency` (display money; the ledger later uses minor units)."""

    currency: Annotated[str, Field(max_length=3, pattern=r"^[A-Z]{3}$")] = "CNY"
    cpu_core_hour: float = Field(default=0.0, ge=0, le=1_000_000)
    ram_gb_hour: float = Field(default=0.0, ge=0, le=1_000_000)
    gpu_hour: float = Field(default=0.0, ge=0, le=1_000_000)


class SlaTermsIn(Strict):
    """SLA terms a pool declares (docs/market.md, "SLAs and reputation"): at least one of
    availability, max_queue_wait_s, success_rate; judged over every window of window_s."""

    window_s: float = Field(default=86400.0, gt=0, description="window length, seconds")
    credit_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="on a breach: this % of what affected users were charged in the window",
    )
    availability: float | None = Field(default=None, gt=0, le=1, description="share online")
    max_queue_wait_s: float | None = Field(
        default=None, gt=0, description="most seconds placed → started, at the 95th percentile"
    )
    success_rate: float | None = Field(
        default=None, gt=0, le=1, description="least share of ended attempts not lost to the site"
    )


class PoolDescriptor(Strict):
    """A pool as its agent declares it on registration."""

    name: Name
    type: PoolType = PoolType.GENERAL
    hardware: Hardware
    labels: dict[Label, Label] = Field(default_factory=dict, max_length=64)
    price: Price = Field(default_factory=Price)
    can_run_images: bool = False
    # The operator's claims of sustained capacity (checked against the hardware catalogue).
    declared: Declared | None = None
    # SLA terms the agent declares for the pool (a provider admin may set others).
    sla: SlaTermsIn | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 64:
            raise ValueError("at most 64 labels")
        return v


class Registration(Strict):
    """What an agent sends when it starts (idempotent: the same names keep the same ids)."""

    endpoint: Annotated[str, Field(max_length=512)] = ""
    agent_version: Annotated[str, Field(max_length=64)] = ""
    backend: Annotated[str, Field(max_length=64)] = "local"
    heartbeat_interval_s: float = Field(default=HEARTBEAT_INTERVAL_S, ge=0.1, le=3600)
    pools: list[PoolDescriptor] = Field(min_length=1, max_length=MAX_POOLS_PER_SITE)
    # Where other sites' agents can time a download from this one (`cpnet agent --probe-listen`):
    # http://HOST:PORT, serving GET /v1/network/probe?bytes=N (docs/network.md).
    probe_url: Annotated[str, Field(max_length=512, pattern=r"^(https?://[^\s/]+)?$")] = ""
    # The public half of the agent's usage key, which signs its usage records (docs/market.md,
    # "Metering"); registered for this site only. A new key is added, old ones stay valid.
    usage_key: UsageKey | None = None

    @field_validator("pools")
    @classmethod
    def _unique(cls, v: list[PoolDescriptor]) -> list[PoolDescriptor]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("pool names must be unique within a site")
        return v


class Capacity(BaseModel):
    cpu_cores: float = Field(default=0.0, ge=0)
    ram_gb: float = Field(default=0.0, ge=0)
    disk_gb: float = Field(default=0.0, ge=0)
    gpus: int = Field(default=0, ge=0)


class PoolLive(Strict):
    """One pool's live state in a heartbeat."""

    name: Name
    free: Capacity
    queue_length: int = Field(default=0, ge=0, le=10_000_000)
    running: int = Field(default=0, ge=0, le=10_000_000)


class Heartbeat(Strict):
    pools: list[PoolLive] = Field(default_factory=list, max_length=MAX_POOLS_PER_SITE)
    running_attempts: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=100_000
    )


class PoolRecord(BaseModel):
    """A pool as discovery shows it."""

    id: str
    name: str
    site_id: str
    site_name: str
    provider_id: str
    provider_name: str
    type: PoolType
    region: Region
    hardware: Hardware
    labels: dict[str, str]
    price: Price
    can_run_images: bool
    endpoint: str
    total: Capacity
    free: Capacity  # what the backend reports free
    reserved: Capacity  # what the hub has placed there and not yet released
    queue_length: int
    running: int
    online: bool
    last_heartbeat: datetime | None
    created_at: datetime
    # The capacity vector (cpnet.measure.vector.CapacityVector as JSON) and, when discovery was
    # asked for a profile, the pool's SCU rate and price per SCU-hour for it.
    capacity: dict | None = None
    scu_rate: float | None = None
    price_per_scu_hour: float | None = None
    # Prices per SCU-hour by profile the pool's price book publishes (None: none published);
    # price_per_scu_hour is that price for the asked profile when there is one.
    scu_hour_prices: dict[str, float] | None = None
    # The pool's reputation score 0..1 (market/reputation.py; None: not evaluated yet) and
    # whether it declares SLA terms.
    reputation: float | None = None
    sla: bool = False
    # Leases on the pool (docs/market.md, "Auctions and leases"): counts, the resources live
    # leases hold now, and the caller's own leases' ids. None where not asked.
    leases: PoolLeases | None = None


class PoolMeasurement(Strict):
    """One pool's calibration result, as an agent reports it."""

    name: Name
    probe: ProbeReport


class Measurements(Strict):
    pools: list[PoolMeasurement] = Field(min_length=1, max_length=MAX_POOLS_PER_SITE)


class ProviderRecord(BaseModel):
    id: str
    name: str
    org_id: str
    created_at: datetime
    retired: bool = False


class SiteRecord(BaseModel):
    id: str
    name: str
    provider_id: str
    type: PoolType
    region: Region
    endpoint: str
    online: bool
    last_heartbeat: datetime | None
    created_at: datetime
    retired: bool = False
    pools: list[str] = Field(default_factory=list)


class RegisterResult(BaseModel):
    site_id: str
    provider_id: str
    pools: dict[str, str]  # pool name -> identifier
    heartbeat_interval_s: float
    # Per pool, what the hub could not use of its capacity: hardware the catalogue does not know,
    # claims above the catalogue peak (flagged, not priced). Empty when all is well.
    capacity_notes: dict[str, list[str]] = Field(default_factory=dict)
