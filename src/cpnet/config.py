"""One settings object per process, read from CPNET_* environment variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_PORT = 8470


def default_data_dir() -> Path:
    """Where an embedded hub keeps its SQLite store unless told otherwise."""
    env = os.environ.get("CPNET_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cpnet"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'cpnet.db'}"


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Everything a hub process needs to know."""

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None  # None: SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    authority: str = "cn.dev"  # the identifier prefix this hub issues under
    heartbeat_interval_s: float = 5.0  # what agents are told to use unless they ask otherwise
    missed_heartbeats: int = 3
    schedule_interval_s: float = 1.0  # scheduler wake-up when nothing signals it earlier
    resolve_ttl_s: int = 300
    max_body_bytes: int = 1024 * 1024
    max_blob_bytes: int = 16 * 1024 * 1024  # one blob in the hub's store (PUT /v1/blobs)
    log_level: str = "warning"
    # Place each batch of queued tasks jointly (HiGHS) instead of one by one; see
    # docs/scheduling-joint.md. A 500-task batch takes ~0.1 s either way on 1k pools.
    sched_joint: bool = True
    sched_joint_time_limit_s: float = 0.5  # past it: HiGHS's best so far, else greedy
    region_code: str = ""  # where the hub lies (GB/T 2260), for the network map's geo figures

    @property
    def url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)

    @classmethod
    def from_env(cls, **overrides: object) -> HubSettings:
        """Settings from CPNET_* variables, then explicit overrides (CLI flags) on top."""
        env = os.environ
        s = cls()
        if env.get("CPNET_DATA"):
            s = replace(s, data_dir=Path(env["CPNET_DATA"]))
        if env.get("CPNET_DATABASE_URL"):
            s = replace(s, database_url=env["CPNET_DATABASE_URL"])
        if env.get("CPNET_AUTHORITY"):
            s = replace(s, authority=env["CPNET_AUTHORITY"])
        if env.get("CPNET_HEARTBEAT_INTERVAL"):
            s = replace(s, heartbeat_interval_s=float(env["CPNET_HEARTBEAT_INTERVAL"]))
        if env.get("CPNET_SCHEDULE_INTERVAL"):
            s = replace(s, schedule_interval_s=float(env["CPNET_SCHEDULE_INTERVAL"]))
        if env.get("CPNET_SCHED_JOINT"):
            joint = env["CPNET_SCHED_JOINT"].strip().lower() not in ("0", "false", "no", "off")
            s = replace(s, sched_joint=joint)
        if env.get("CPNET_SCHED_JOINT_TIME_LIMIT"):
            s = replace(s, sched_joint_time_limit_s=float(env["CPNET_SCHED_JOINT_TIME_LIMIT"]))
        if env.get("CPNET_MAX_BLOB_BYTES"):
            s = replace(s, max_blob_bytes=int(env["CPNET_MAX_BLOB_BYTES"]))
        if env.get("CPNET_HUB_REGION"):
            s = replace(s, region_code=env["CPNET_HUB_REGION"].strip())
        return replace(s, **{k: v for k, v in overrides.items() if v is not None})
