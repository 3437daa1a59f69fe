"""One settings object per process, read from CPNET_* environment variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cpnet.limits.rate import Rate, parse_rate
from cpnet.limits.ssrf import STRICT, UrlRule, parse_allow

DEFAULT_PORT = 8470
USER_RATE = Rate(100.0, 500)  # requests a second, burst: per user token
AGENT_RATE = Rate(1000.0, 5000)  # per agent token: never what stops a heartbeat
ANONYMOUS_RATE = Rate(200.0, 1000)  # per client address, for calls without a known token


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
    # Logs (docs/operations.md, "Logs"): the level (CPNET_LOG_LEVEL), "text" or one JSON object
    # per line (CPNET_LOG_FORMAT), and one line per HTTP request (CPNET_ACCESS_LOG).
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    # Who may read GET /metrics (CPNET_METRICS_PUBLIC): by default an admin's token, like the
    # rest of the operator's API; "1" serves it to anyone who can reach the hub (a scraper on a
    # private network without a token).
    metrics_public: bool = False
    # Place each batch of queued tasks jointly (HiGHS) instead of one by one; see
    # docs/scheduling-joint.md. A 500-task batch takes ~0.1 s either way on 1k pools.
    sched_joint: bool = True
    sched_joint_time_limit_s: float = 0.5  # past it: HiGHS's best so far, else greedy
    region_code: str = ""  # where the hub lies (GB/T 2260), for the network map's geo figures
    # The operator's platform fee on every task's price, in basis points (500 = 5 %): shown in
    # quotes and charged by the ledger. CPNET_PLATFORM_FEE_BPS.
    platform_fee_bps: int = 500
    quote_ttl_s: float = 300.0  # how long a quote binds (CPNET_QUOTE_TTL_S)
    # the ledger's holds (docs/market.md): the margin over the predicted cost that a new task's
    # hold takes, and the least hold (minor units)
    hold_margin: float = 1.5
    min_hold: int = 0
    # SLAs and reputation (docs/market.md): how often the hub's SLA sweep runs (evaluating the
    # windows that ended, refreshing reputations), the shortest SLA window a pool may declare,
    # and the half-life of an observation in a reputation. Tests shorten all three.
    sla_interval_s: float = 60.0
    sla_min_window_s: float = 3600.0
    reputation_half_life_s: float = 6 * 3600.0
    # auctions and leases (docs/market.md): how often the hub awards closed requests and settles
    # leases, and the part of a lease's window paid at a time (CPNET_LEASE_PERIOD_S)
    market_sweep_s: float = 1.0
    lease_period_s: float = 60.0
    # Transport security (docs/security.md): the hub serves HTTPS with this certificate and key
    # (PEM files; `cpnet hub --tls` uses the development pair `cpnet hub init` wrote in
    # DATA_DIR/tls/); mtls: "off", "optional" (agents may present a client certificate) or
    # "require" (the agent API refuses an agent without one of its own site).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    mtls: str = "off"
    client_cert_ttl_s: float = 24 * 3600.0  # agents' certificates; renewed at 2/3 of it
    # Rate limits per token (docs/security.md, "Limits"): users' tokens (CPNET_RATE_LIMIT),
    # agents' tokens, a larger budget so heartbeats and long polls are never starved
    # (CPNET_RATE_LIMIT_AGENT), and calls without a known token, per client address
    # (CPNET_RATE_LIMIT_ANONYMOUS). "50/s,200": requests a second, burst; None ("off"): no limit.
    rate_limit: Rate | None = USER_RATE
    rate_limit_agent: Rate | None = AGENT_RATE
    rate_limit_anonymous: Rate | None = ANONYMOUS_RATE
    # Literal loopback/link-local/private addresses a task's http(s) URLs may name
    # (CPNET_ALLOW_PRIVATE_URLS, CIDRs and host names, "*" for any); the agents' own option
    # allow_private_urls decides what they reach after resolving names.
    allow_private_urls: UrlRule = STRICT
    # how often the hub signs the audit chain's head, when it moved (CPNET_AUDIT_CHECKPOINT_S)
    audit_checkpoint_s: float = 60.0
    # The DNS gateway (docs/identifiers.md, "Running the DNS gateway"): `cpnet hub --dns`
    # (CPNET_DNS=1) runs Knot DNS serving the zone dns_apex (CPNET_DNS_APEX) on dns_listen
    # (CPNET_DNS_LISTEN, HOST:PORT) and publishes the registry into it; dns_knotd
    # (CPNET_DNS_KNOTD) is knotd's path when not on PATH or in /usr/sbin. DNS records are signed
    # for dns_record_ttl_s (CPNET_DNS_RECORD_TTL_S), served with a DNS TTL of at most dns_max_ttl_s.
    dns: bool = False
    dns_apex: str = ""
    # The zone this hub's server serves (CPNET_DNS_ZONE): the apex (default), or, for a hub
    # delegated a prefix by its parent's hub, that prefix's name (gd.cn.<apex> for cn.gd).
    dns_zone: str = ""
    dns_listen: str = "127.0.0.1:8453"
    dns_knotd: str = ""
    dns_record_ttl_s: int = 900
    dns_max_ttl_s: int = 300

    def __post_init__(self) -> None:
        if self.mtls not in MTLS_MODES:
            modes = ", ".join(MTLS_MODES)
            raise ValueError(f"CPNET_MTLS must be one of {modes}, got {self.mtls!r}")
        if self.hold_margin < 1.0:
            raise ValueError("CPNET_HOLD_MARGIN must be at least 1 (a multiple of the cost)")
        if not 1.0 <= self.lease_period_s <= 86_400:
            raise ValueError("CPNET_LEASE_PERIOD_S must be 1 to 86400 seconds")
        if not self.audit_checkpoint_s > 0:
            raise ValueError("CPNET_AUDIT_CHECKPOINT_S must be a positive number of seconds")
        if self.min_hold < 0:
            raise ValueError("CPNET_MIN_HOLD must be 0 or more minor units")
        if self.sla_interval_s <= 0 or self.sla_min_window_s <= 0:
            raise ValueError("CPNET_SLA_INTERVAL_S and CPNET_SLA_MIN_WINDOW_S must be above 0")
        if self.reputation_half_life_s <= 0:
            raise ValueError("CPNET_REPUTATION_HALF_LIFE_S must be above 0 seconds")
        if self.log_format not in LOG_FORMATS:
            formats = ", ".join(LOG_FORMATS)
            raise ValueError(f"CPNET_LOG_FORMAT must be one of {formats}, got {self.log_format!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            levels = ", ".join(LOG_LEVELS)
            raise ValueError(f"CPNET_LOG_LEVEL must be one of {levels}, got {self.log_level!r}")
        if self.dns:
            if not self.dns_apex.strip():
                raise ValueError(
                    "the DNS gateway needs its zone: set CPNET_DNS_APEX (or --dns-apex), "
                    "e.g. id.example.org"
                )
            listen_address(self.dns_listen)
            if self.dns_record_ttl_s < 2 * self.dns_max_ttl_s:
                raise ValueError(
                    f"CPNET_DNS_RECORD_TTL_S must be at least {2 * self.dns_max_ttl_s} seconds "
                    "(twice the DNS TTL)"
                )

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
        if env.get("CPNET_HOLD_MARGIN"):
            s = replace(s, hold_margin=float(env["CPNET_HOLD_MARGIN"]))
        if env.get("CPNET_MIN_HOLD"):
            s = replace(s, min_hold=int(env["CPNET_MIN_HOLD"]))
        if env.get("CPNET_HUB_REGION"):
            s = replace(s, region_code=env["CPNET_HUB_REGION"].strip())
        if env.get("CPNET_PLATFORM_FEE_BPS"):
            s = replace(s, platform_fee_bps=fee_bps(env["CPNET_PLATFORM_FEE_BPS"]))
        if env.get("CPNET_LEASE_PERIOD_S"):
            s = replace(s, lease_period_s=float(env["CPNET_LEASE_PERIOD_S"]))
        if env.get("CPNET_QUOTE_TTL_S"):
            s = replace(s, quote_ttl_s=float(env["CPNET_QUOTE_TTL_S"]))
        for var, name in (
            ("CPNET_SLA_INTERVAL_S", "sla_interval_s"),
            ("CPNET_SLA_MIN_WINDOW_S", "sla_min_window_s"),
            ("CPNET_REPUTATION_HALF_LIFE_S", "reputation_half_life_s"),
        ):
            if env.get(var):
                s = replace(s, **{name: float(env[var])})
        if env.get("CPNET_MTLS"):
            s = replace(s, mtls=env["CPNET_MTLS"].strip().lower())
        if env.get("CPNET_CLIENT_CERT_TTL_S"):
            s = replace(s, client_cert_ttl_s=float(env["CPNET_CLIENT_CERT_TTL_S"]))
        if env.get("CPNET_ALLOW_PRIVATE_URLS"):
            rule = parse_allow(env["CPNET_ALLOW_PRIVATE_URLS"], "CPNET_ALLOW_PRIVATE_URLS")
            s = replace(s, allow_private_urls=rule)
        for var, name in RATE_SETTINGS.items():
            if env.get(var):
                s = replace(s, **{name: parse_rate(env[var], var)})
        if env.get("CPNET_AUDIT_CHECKPOINT_S"):
            s = replace(s, audit_checkpoint_s=float(env["CPNET_AUDIT_CHECKPOINT_S"]))
        if env.get("CPNET_DNS"):
            s = replace(s, dns=truthy(env["CPNET_DNS"]))
        for var, name in (
            ("CPNET_DNS_APEX", "dns_apex"),
            ("CPNET_DNS_ZONE", "dns_zone"),
            ("CPNET_DNS_LISTEN", "dns_listen"),
            ("CPNET_DNS_KNOTD", "dns_knotd"),
        ):
            if env.get(var):
                s = replace(s, **{name: env[var].strip()})
        if env.get("CPNET_DNS_RECORD_TTL_S"):
            s = replace(s, dns_record_ttl_s=int(env["CPNET_DNS_RECORD_TTL_S"]))
        if env.get("CPNET_LOG_LEVEL"):
            s = replace(s, log_level=env["CPNET_LOG_LEVEL"].strip().lower())
        if env.get("CPNET_LOG_FORMAT"):
            s = replace(s, log_format=env["CPNET_LOG_FORMAT"].strip().lower())
        for var, name in (
            ("CPNET_ACCESS_LOG", "access_log"),
            ("CPNET_METRICS_PUBLIC", "metrics_public"),
        ):
            if env.get(var):
                s = replace(s, **{name: truthy(env[var])})
        return replace(s, **{k: v for k, v in overrides.items() if v is not None})

    def check_tls(self) -> None:
        """ValueError unless the TLS settings make sense together (checked when serving)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both a TLS certificate and its key (--tls-cert, --tls-key)")
        if self.mtls != "off" and self.tls_cert is None:
            raise ValueError("mutual TLS needs TLS: add --tls (or --tls-cert and --tls-key)")

    @property
    def tls_dir(self) -> Path:
        """Where `cpnet hub init` writes the development certificate and the CA's certificate."""
        return self.data_dir / "tls"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"


MTLS_MODES = ("off", "optional", "require")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6) as (host, port), or ValueError naming the setting."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"CPNET_DNS_LISTEN (--dns-listen) must be HOST:PORT, e.g. 127.0.0.1:8453 or "
            f"[::1]:53, got {text!r}"
        )
    return host, int(port)


def truthy(text: str) -> bool:
    """An environment flag: 1/true/yes/on (any case) is on, anything else off."""
    return text.strip().lower() in ("1", "true", "yes", "on")


RATE_SETTINGS = {
    "CPNET_RATE_LIMIT": "rate_limit",
    "CPNET_RATE_LIMIT_AGENT": "rate_limit_agent",
    "CPNET_RATE_LIMIT_ANONYMOUS": "rate_limit_anonymous",
}
MAX_FEE_BPS = 5000  # a platform fee above 50 % is a typo


def fee_bps(text: str) -> int:
    """CPNET_PLATFORM_FEE_BPS as whole basis points 0..MAX_FEE_BPS, or ValueError saying so."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(
            f"CPNET_PLATFORM_FEE_BPS must be whole basis points (500 = 5 %), got {text!r}"
        ) from None
    if not 0 <= value <= MAX_FEE_BPS:
        raise ValueError(f"CPNET_PLATFORM_FEE_BPS must be 0..{MAX_FEE_BPS}, got {value}")
    return value
