"""The hub's tables. Times are UTC epoch seconds (float), identical on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT identity.
SeqInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: Json, list[Any]: Json}


class HubKey(Base):
    """The hub's Ed25519 signing keys (the newest active one signs)."""

    __tablename__ = "hub_keys"
    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    private_pem: Mapped[str] = mapped_column(Text)
    public_b64: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class HubMeta(Base):
    """Small facts about this hub (its authority prefix, schema notes)."""

    __tablename__ = "hub_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class OrgQuota(Base):
    """An organisation's quotas (None: no limit); the row is also the lock that serialises the
    organisation's submissions while a quota is set (store/quotas.admit)."""

    __tablename__ = "org_quotas"
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    max_queued: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cores: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    """An API token, stored only as its SHA-256."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(32))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    site_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Provider(Base):
    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("provider_id", "name"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    region_code: Mapped[str] = mapped_column(String(32))
    region_name: Mapped[str] = mapped_column(String(128), default="")
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    endpoint: Mapped[str] = mapped_column(String(512), default="")
    agent: Mapped[dict[str, Any]] = mapped_column(default=dict)
    heartbeat_interval_s: Mapped[float] = mapped_column(Float, default=5.0)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Pool(Base):
    """A pool: its declared descriptor, its capacity, what the hub reserved, its live state."""

    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    descriptor: Mapped[dict[str, Any]] = mapped_column()
    gpu_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    total_cpu: Mapped[float] = mapped_column(Float)
    total_ram: Mapped[float] = mapped_column(Float)
    total_disk: Mapped[float] = mapped_column(Float)
    total_gpus: Mapped[int] = mapped_column(Integer)
    free_cpu: Mapped[float] = mapped_column(Float)
    free_ram: Mapped[float] = mapped_column(Float)
    free_disk: Mapped[float] = mapped_column(Float)
    free_gpus: Mapped[int] = mapped_column(Integer)
    reserved_cpu: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_ram: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_disk: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_gpus: Mapped[int] = mapped_column(Integer, default=0)
    queue_length: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # cpnet.measure (0003_measure): the last probe report and the capacity vector built from it
    # (deferred: loaded only where shown), and the vector's SCU rates alone for the scheduler.
    probe: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True, deferred=True)
    capacity: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True, deferred=True)
    scu: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    measure_requested: Mapped[float | None] = mapped_column(Float, nullable=True)  # when asked


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key"),
        Index("ix_tasks_state_seq", "state", "seq"),
        Index("ix_tasks_org_seq", "org_id", "seq"),
        Index("ix_tasks_org_state", "org_id", "state"),  # quota use (store/quotas.py)
    )
    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    pool_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # what the task asks, copied from spec.resources so organisation quotas sum them in SQL
    cpu_cores: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    gpus: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the hub's id of the request that created the task, on every log line about it
    # (telemetry/logs.py); None for tasks the hub made itself
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Attempt(Base):
    """One try of a task on one pool; every attempt is kept."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("task_id", "n"),
        Index("ix_attempts_site_state", "site_id", "state"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    pool_id: Mapped[str] = mapped_column(String(128), index=True)
    site_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32))
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    released: Mapped[bool] = mapped_column(Boolean, default=False)
    demand: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)
    start_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    executor_logs: Mapped[list[Any]] = mapped_column(default=list)
    outputs: Mapped[list[Any]] = mapped_column(default=list)
    system_logs: Mapped[list[Any]] = mapped_column(default=list)
    usage: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    # The price the attempt is charged at (market/charge.attempt_price), fixed when it was
    # placed; NULL on attempts placed before 0008: the pool's declared price then.
    price: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    # stageprog (0004_stageprog): the latest progress the agent reported (None once it ended),
    # and how many transfer records were over the per-attempt cap (see AttemptTransfer).
    progress: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    transfers_omitted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # auctions (0010_auctions): the lease this attempt ran on (its resources paid by the lease)
    lease_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class TaskEvent(Base):
    """Every state change of a task, with its time and reason."""

    __tablename__ = "task_events"
    # The dashboard's flow chart: moves in a time window, read from the index alone (0017).
    __table_args__ = (Index("ix_task_events_at", "at", "to_state", "from_state"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)


class BlobGrant(Base):
    """An organisation that may read a blob of the hub's blob store (its uploader, or the owner
    of the task whose output it is). The blob's bytes live on disk (hub/blobs.py)."""

    __tablename__ = "blob_grants"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class AttemptTransfer(Base):
    """One input or output a finished attempt moved (stageprog: 0004_stageprog): what, from or
    to where (credentials stripped), how many bytes, how long, whether its sha256 was verified.
    At most MAX_TRANSFERS per attempt; the attempt's transfers_omitted counts the rest."""

    __tablename__ = "attempt_transfers"
    __table_args__ = (UniqueConstraint("attempt_id", "n"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(ForeignKey("attempts.id"), index=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    site_id: Mapped[str] = mapped_column(String(128), index=True)
    n: Mapped[int] = mapped_column(Integer)  # order within the attempt
    direction: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sha256_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    resumed_from: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(Integer, default=1)
    at: Mapped[float] = mapped_column(Float)  # when the hub recorded it


class NetSample(Base):
    """One network probe result an agent reported (store/network.py keeps a bounded number)."""

    __tablename__ = "net_samples"
    __table_args__ = (Index("ix_net_samples_pair_at", "src", "dst", "at"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    src: Mapped[str] = mapped_column(String(320))
    dst: Mapped[str] = mapped_column(String(320))
    at: Mapped[float] = mapped_column(Float, index=True)
    rtt_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    site_id: Mapped[str] = mapped_column(String(128), index=True)  # the reporting agent's site


class NetLink(Base):
    """A link an operator declared between two places (either direction)."""

    __tablename__ = "net_links"
    a: Mapped[str] = mapped_column(String(320), primary_key=True)
    b: Mapped[str] = mapped_column(String(320), primary_key=True)
    rtt_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    egress_per_gb: Mapped[float] = mapped_column(Float, default=0.0)
    currency: Mapped[str] = mapped_column(String(8), default="CNY")
    set_by: Mapped[str] = mapped_column(String(64), default="")
    set_at: Mapped[float] = mapped_column(Float)


# ---- the market's ledger (0007_ledger; rules in cpnet/market/ledger.py) ----


class LedgerAccount(Base):
    """A ledger account: balance = credits − debits in minor units, never below `floor` (NULL:
    no floor). Changed only by store/ledger.py, together with the transfer that moves it."""

    __tablename__ = "ledger_accounts"
    id: Mapped[str] = mapped_column(String(160), primary_key=True)  # "org:org_…", "platform:…"
    kind: Mapped[str] = mapped_column(String(16))
    org_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    currency: Mapped[str] = mapped_column(String(8))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    floor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class LedgerTransfer(Base):
    """One posting, immutable: `amount` minor units from `debit` to `credit`. Its id makes it
    idempotent (unique); corrections are new transfers."""

    __tablename__ = "ledger_transfers"
    __table_args__ = (
        Index("ix_ledger_transfers_debit", "debit"),
        Index("ix_ledger_transfers_credit", "credit"),
    )
    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(160), unique=True)
    debit: Mapped[str] = mapped_column(String(160))
    credit: Mapped[str] = mapped_column(String(160))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float, index=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    hold_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    attempt_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    # what the bill shows of a payout or fee: pool, provider org, seconds, hourly price, charge
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)


class LedgerHold(Base):
    """A task's hold: the maximum charge moved to its organisation's escrow at submission."""

    __tablename__ = "ledger_holds"
    __table_args__ = (Index("ix_ledger_holds_org_period", "org_id", "period"),)
    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # "hold:<task id>"
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_bps: Mapped[int] = mapped_column(Integer)  # the platform's fee when the hold was placed
    state: Mapped[str] = mapped_column(String(16))  # pending | posted | voided
    period: Mapped[str] = mapped_column(String(7))  # "2026-12": the month it counts against
    created_at: Mapped[float] = mapped_column(Float)
    settled_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SpendingLimit(Base):
    """The most an organisation (user_id "") or one of its users may hold and spend per calendar
    month, in minor units."""

    __tablename__ = "spending_limits"
    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "": the whole org
    monthly: Mapped[int] = mapped_column(BigInteger)
    set_at: Mapped[float] = mapped_column(Float)


# ---- the market: price books and quotes (store/prices.py, store/quotes.py) ------------------


class PriceEntry(Base):
    """One price a provider published for a pool, valid for a period. Append-only: a change is a
    new row, so the rows are the pool's price history (market/prices.py picks the one in force)."""

    __tablename__ = "price_entries"
    __table_args__ = (Index("ix_price_entries_pool_from", "pool_id", "valid_from"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(String(128), ForeignKey("pools.id"))
    kind: Mapped[str] = mapped_column(String(16))  # on_demand | spot
    currency: Mapped[str] = mapped_column(String(8))
    cpu_core_hour: Mapped[float] = mapped_column(Float, default=0.0)
    ram_gb_hour: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hour: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_models: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model -> per GPU-hour
    scu_hour: Mapped[dict[str, Any]] = mapped_column(default=dict)  # profile -> per SCU-hour
    dynamic: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    valid_from: Mapped[float] = mapped_column(Float)
    valid_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    set_by: Mapped[str] = mapped_column(String(64), default="")  # the user who published it
    set_at: Mapped[float] = mapped_column(Float)


class Quote(Base):
    """A binding quote: priced options for one task spec, valid until a time, used at most once.

    When a task is submitted with it, ``used_by_task`` and ``used_option`` are set and
    ``charge_cap`` holds the most the task may be charged while it runs as stated (platform fee
    included), ``overrun_rate`` what each extra ``overrun_unit`` costs on top."""

    __tablename__ = "quotes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column()
    objective: Mapped[str] = mapped_column(String(16))
    options: Mapped[list[Any]] = mapped_column()
    fee_bps: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    valid_until: Mapped[float] = mapped_column(Float)
    used_by_task: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    used_option: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    charge_cap: Mapped[float | None] = mapped_column(Float, nullable=True)
    overrun_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    overrun_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(8), nullable=True)


class SiteCert(Base):
    """A client certificate the hub's CA issued to a site's agent (mutual TLS): its serial (as
    decimal text: serials are up to 159 bits), the site it names, and whether it was revoked."""

    __tablename__ = "site_certs"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(128), index=True)
    issued_at: Mapped[float] = mapped_column(Float)
    not_after: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


# ---- signed metering (0009_usage; rules in cpnet/market/metering.py) -------------------------


class SiteKey(Base):
    """A site's Ed25519 usage key, registered by its own agent. The key id (sha256 of the public
    key) is unique across sites, so a key registered by one site is never another's. Keys are
    never deleted: a rotated key's old records still verify."""

    __tablename__ = "site_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # raw 32 bytes, base64url
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)  # last registration that named it


class UsageRecord(Base):
    """Every usage record the hub received, accepted or refused, kept as evidence: the envelope
    as sent (record and signature) and the verdict with its reason. At most one accepted record
    per attempt, and per record id (partial unique indexes); refused ones may repeat."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index(
            "ux_usage_records_accepted_record",
            "record_id",
            unique=True,
            sqlite_where=text("verdict = 'accepted'"),
            postgresql_where=text("verdict = 'accepted'"),
        ),
        Index(
            "ux_usage_records_accepted_attempt",
            "attempt_id",
            unique=True,
            sqlite_where=text("verdict = 'accepted'"),
            postgresql_where=text("verdict = 'accepted'"),
        ),
        Index("ix_usage_records_task", "task_id"),
        Index("ix_usage_records_site_at", "site_id", "received_at"),
    )
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(128))  # the site whose agent sent it
    record_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    attempt_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the hub's, if known
    key_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    verdict: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(64), nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # from an accepted record
    digest: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the envelope
    envelope: Mapped[dict[str, Any]] = mapped_column()  # {"record": …, "signature": …} as sent
    received_at: Mapped[float] = mapped_column(Float)


class TaskSecret(Base):
    """A task's secret env values, sealed with the hub's secrets key (hub/secrets.py); its
    stored spec holds "[secret]" in their place."""

    __tablename__ = "task_secrets"
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


# ---- reservations by auction (store/auctions.py, market/auction.py, market/lease.py) ---------


class AuctionRow(Base):
    """A user's request for capacity, its sealed bids' outcome and the lease it became."""

    __tablename__ = "auctions"
    __table_args__ = (Index("ix_auctions_state_closes", "state", "closes_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column()  # unit, units, gpu_model, regions, ...
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    max_price: Mapped[int] = mapped_column(BigInteger)  # minor units per hour, whole request
    closes_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))  # open | awarded | failed
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    award: Mapped[list[Any] | None] = mapped_column(Json, nullable=True)  # every bid weighed
    created_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuctionBid(Base):
    """A provider's sealed bid on a request, for one of its pools (one per pool: a new bid
    replaces the old one until the close)."""

    __tablename__ = "auction_bids"
    __table_args__ = (UniqueConstraint("auction_id", "pool_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    auction_id: Mapped[str] = mapped_column(String(64), ForeignKey("auctions.id"), index=True)
    pool_id: Mapped[str] = mapped_column(String(128))
    provider_org: Mapped[str] = mapped_column(String(64))
    price: Mapped[int] = mapped_column(BigInteger)  # minor units per hour, whole request
    placed_at: Mapped[float] = mapped_column(Float)
    rule: Mapped[bool] = mapped_column(Boolean, default=False)  # made from the pool's bid rule
    placed_by: Mapped[str] = mapped_column(String(64), default="")


class BidRuleRow(Base):
    """A pool's standing bid: its on-demand price of a request × factor, within bounds."""

    __tablename__ = "bid_rules"
    pool_id: Mapped[str] = mapped_column(String(128), ForeignKey("pools.id"), primary_key=True)
    factor: Mapped[float] = mapped_column(Float)
    min_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    set_by: Mapped[str] = mapped_column(String(64), default="")
    set_at: Mapped[float] = mapped_column(Float)


class LeaseRow(Base):
    """Capacity awarded to an organisation on a pool for a window, paid as it runs."""

    __tablename__ = "leases"
    __table_args__ = (Index("ix_leases_pool_state", "pool_id", "state"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    auction_id: Mapped[str] = mapped_column(String(64), unique=True)
    pool_id: Mapped[str] = mapped_column(String(128), ForeignKey("pools.id"))
    org_id: Mapped[str] = mapped_column(String(64), ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_org: Mapped[str] = mapped_column(String(64))
    cpu_cores: Mapped[float] = mapped_column(Float)
    ram_gb: Mapped[float] = mapped_column(Float)
    disk_gb: Mapped[float] = mapped_column(Float)
    gpus: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    price: Mapped[int] = mapped_column(BigInteger)  # minor units per hour
    fee_bps: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # active | ended | cancelled
    charged: Mapped[int] = mapped_column(BigInteger, default=0)  # settled so far
    paid_to: Mapped[float | None] = mapped_column(Float, nullable=True)  # settled up to
    created_at: Mapped[float] = mapped_column(Float)


# ---- SLAs and reputation (store/sla.py; docs/market.md) --------------------------------------


class PoolLiveness(Base):
    """A pool going online or offline, as the hub saw it (append-only): registration and a
    heartbeat that brings it back write online; the liveness sweep, a re-registration without
    it and retirement write offline. SLA availability is measured from these rows."""

    __tablename__ = "pool_liveness"
    __table_args__ = (Index("ix_pool_liveness_pool_at", "pool_id", "at"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)
    online: Mapped[bool] = mapped_column(Boolean)


class SlaTerms(Base):
    """SLA terms a pool declared (append-only: the newest row is in force, older rows are its
    history). ``source`` says who declared them: a provider admin ("admin") or the agent's pool
    descriptor ("agent")."""

    __tablename__ = "sla_terms"
    __table_args__ = (Index("ix_sla_terms_pool", "pool_id", "id"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(String(128), ForeignKey("pools.id"))
    window_s: Mapped[float] = mapped_column(Float)
    credit_bps: Mapped[int] = mapped_column(Integer)
    availability: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_queue_wait_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    success_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # admin | agent
    set_by: Mapped[str] = mapped_column(String(64), default="")
    set_at: Mapped[float] = mapped_column(Float)


class SlaEvaluation(Base):
    """One window of one pool judged against the terms in force (kept with its evidence); a
    window is evaluated once (unique), in the transaction that posts its credits."""

    __tablename__ = "sla_evaluations"
    __table_args__ = (UniqueConstraint("pool_id", "window_start"),)
    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(String(128), index=True)
    terms_id: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    breached: Mapped[bool] = mapped_column(Boolean)
    evidence: Mapped[dict[str, Any]] = mapped_column()
    credits: Mapped[dict[str, Any]] = mapped_column()  # org id -> minor units credited
    evaluated_at: Mapped[float] = mapped_column(Float)


class PoolReputation(Base):
    """Each pool's latest reputation (market/reputation.py), refreshed by the hub's SLA sweep;
    the scheduler's risk and discovery read it."""

    __tablename__ = "pool_reputation"
    pool_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column()
    at: Mapped[float] = mapped_column(Float)


# ---- the audit chain (0013_audit; rules in cpnet/audit/chain.py) ------------------------------


class AuditRecord(Base):
    """One link of the append-only audit chain. `seq` is assigned under the head's lock at
    commit, so the chain's order is the order of commit. Never updated, never deleted."""

    __tablename__ = "audit_records"
    __table_args__ = (Index("ix_audit_records_org_at", "org_id", "at"),)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    actor_org: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    actor_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    org_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[str | None] = mapped_column(String(64), nullable=True)
    before: Mapped[str | None] = mapped_column(String(64), nullable=True)
    after: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column()


class AuditHead(Base):
    """The chain's head: one row (id 1), locked by every append so appends are serialised."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """The head signed by the hub's key at some moment (cpnet/audit/chain.sign_head)."""

    __tablename__ = "audit_checkpoints"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))
