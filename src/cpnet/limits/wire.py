"""Organisation quotas on the wire: what an admin sends and what the hub shows."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QuotaUpdate(BaseModel):
    """`PUT /v1/accounts/{org}/quota`: the quotas to set; a null (or left out) one is no limit."""

    model_config = ConfigDict(extra="forbid")

    queued: int | None = Field(default=None, ge=0, le=10_000_000)
    cores: float | None = Field(default=None, ge=0, le=10_000_000)
    gpus: int | None = Field(default=None, ge=0, le=1_000_000)


class QuotaView(BaseModel):
    """An organisation's quotas (null: none) and its use now."""

    org_id: str
    queued: int | None
    cores: float | None
    gpus: int | None
    used_queued: int  # tasks waiting to be placed
    used_cores: float  # asked by its queued and running tasks together
    used_gpus: int
