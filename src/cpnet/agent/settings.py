"""What an agent process needs to know, and how its TOML config file maps onto it.

An agent config file looks like this (every key optional; command-line flags win)::

    hub = "https://hub.example.org:8470"
    token = "cpn_..."              # the site token from `cpnet admin site token`
    backend = "local"
    work_dir = "/var/lib/cpnet-agent"
    heartbeat_interval_s = 5.0
    endpoint = "https://gpu.example.org"
    keep_work_dirs = false         # true: keep every attempt's work dir (default: removed)

    [options]                      # backend-specific settings, strings only
    partition = "gpu"

    [[pool]]                       # same field names as cpnet.registry.model.PoolDescriptor
    name = "h100"
    type = "intelligent"
    labels = { interconnect = "nvlink" }
    price = { currency = "CNY", cpu_core_hour = 0.1, gpu_hour = 12.0 }
    hardware = { cpu_cores = 96, memory_gb = 1024, accelerators = [{ model = "H100", count = 8 }] }

With no ``[[pool]]`` tables and no pool flags the backend discovers the machine it runs on.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cpnet.client import CpnetError, check_hub_url, check_token
from cpnet.config import LOG_FORMATS, default_data_dir
from cpnet.network.records import MAX_PROBE_BYTES
from cpnet.registry.model import HEARTBEAT_INTERVAL_S, PoolDescriptor

MIN_PROBE_INTERVAL_S = 5.0  # network probes to the hub at most this often

FILE_KEYS = frozenset(
    {"hub", "hub_url", "token", "backend", "work_dir", "heartbeat_interval_s", "endpoint"}
    | {"options", "pool"}
    | {"measure_on_join", "measure_budget_s"}
    | {"rediscover_interval_s"}
    | {"network_probe_interval_s", "network_probe_bytes", "probe_listen"}
    | {"ca_file", "client_cert"}
    | {"keep_work_dirs"}
    | {"metrics_listen", "log_format"}
)
CLIENT_CERT_MODES = ("off", "auto")


def default_work_dir() -> Path:
    """Where an agent stages task files unless told otherwise."""
    return default_data_dir() / "agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything an agent process needs: where the hub is, who it is, what it offers."""

    hub_url: str
    token: str  # a site-bound agent token
    backend: str = "local"
    work_dir: Path = field(default_factory=default_work_dir)
    pools: list[PoolDescriptor] = field(default_factory=list)  # empty: the backend discovers
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    endpoint: str = ""  # how users can reach the site, shown in resolution records
    options: dict[str, str] = field(default_factory=dict)  # backend-specific settings
    # Calibration probes (cpnet.measure): run as a job on each pool after joining, in the
    # background, within this many seconds per pool.
    measure_on_join: bool = True
    measure_budget_s: float = 20.0
    # Discovering backends look at their cluster again this often (0: only when the backend
    # notices a change itself) and re-register when the pools changed; declared pools never do.
    rediscover_interval_s: float = 60.0
    # Network probes to the hub (RTT and a bounded download) this often, 0: never; see
    # agent/netprobe.py and docs/network.md for every bound.
    network_probe_interval_s: float = 300.0
    network_probe_bytes: int = 2_000_000
    # HOST:PORT where other sites' agents may time downloads from this one (advertised to the
    # hub as http://HOST:PORT, so HOST must be an address peers reach); "" = no listener.
    probe_listen: str = ""
    # TLS (docs/security.md): the CA that signed the hub's certificate (an https:// hub with a
    # private CA); client_cert "auto" gets a client certificate with the token and renews it
    # (a hub run with --mtls require refuses agents without one).
    ca_file: Path | None = None
    client_cert: str = "off"
    # An attempt's work dir (staged inputs, outputs, logs) is removed once the hub has its final
    # state, unless the task sets keep_work_dir or this is set (every attempt's is kept).
    keep_work_dirs: bool = False
    # HOST:PORT where the agent serves Prometheus metrics (GET /metrics, no token: bind it to an
    # address only the monitoring reaches; a wildcard such as 0.0.0.0 is allowed); "" = none.
    metrics_listen: str = ""
    # "text", or one JSON object per line (telemetry/logs.py); CPNET_LOG_FORMAT when not set.
    log_format: str = ""

    def __post_init__(self) -> None:
        if self.client_cert not in CLIENT_CERT_MODES:
            raise AgentConfigError(
                f"client_cert must be one of {', '.join(CLIENT_CERT_MODES)}, "
                f"got {self.client_cert!r}"
            )
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise AgentConfigError(f"ca_file {self.ca_file}: no such file")
        # Refused here, at start, rather than as a traceback from the HTTP library at the first
        # request (the CLI checks first, naming where each value came from).
        if self.probe_listen:
            check_listen(self.probe_listen)
        if self.metrics_listen:
            check_bind(self.metrics_listen, "metrics_listen")
        if self.log_format not in ("", *LOG_FORMATS):
            raise AgentConfigError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        try:
            object.__setattr__(self, "hub_url", check_hub_url(self.hub_url))
            object.__setattr__(self, "token", check_token(self.token))
        except CpnetError as err:
            raise AgentConfigError(err.message) from None

    def __repr__(self) -> str:
        # The token is a credential: keep it out of logs and tracebacks.
        return (
            f"AgentSettings(hub_url={self.hub_url!r}, backend={self.backend!r}, "
            f"work_dir={str(self.work_dir)!r}, pools={[p.name for p in self.pools]!r}, "
            f"heartbeat_interval_s={self.heartbeat_interval_s!r})"
        )


class AgentConfigError(ValueError):
    """An agent config file (or pool flags) that cannot be used, with what to fix."""


def read_agent_file(path: Path) -> dict[str, Any]:
    """Read an agent TOML config file into the keyword arguments of AgentSettings.

    Returns only the keys the file sets, so flags can be laid on top; ``pool`` tables become
    PoolDescriptor objects under ``pools``.
    """
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise AgentConfigError(f"cannot read agent config {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise AgentConfigError(f"agent config {path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise AgentConfigError(
            f"agent config {path}: unknown key {unknown[0]!r}; known keys: {sorted(FILE_KEYS)}"
        )
    out: dict[str, Any] = {}
    if data.get("hub_url") or data.get("hub"):
        out["hub_url"] = str(data.get("hub_url") or data["hub"])
    for key in ("token", "backend", "endpoint"):
        if key in data:
            out[key] = str(data[key])
    if "work_dir" in data:
        out["work_dir"] = Path(str(data["work_dir"])).expanduser()
    if "ca_file" in data:
        out["ca_file"] = Path(str(data["ca_file"])).expanduser()
    if "client_cert" in data:
        out["client_cert"] = str(data["client_cert"]).strip().lower()
    if "heartbeat_interval_s" in data:
        out["heartbeat_interval_s"] = float(data["heartbeat_interval_s"])
    if "measure_on_join" in data:
        if not isinstance(data["measure_on_join"], bool):
            raise AgentConfigError(f"agent config {path}: measure_on_join must be true or false")
        out["measure_on_join"] = data["measure_on_join"]
    if "keep_work_dirs" in data:
        if not isinstance(data["keep_work_dirs"], bool):
            raise AgentConfigError(f"agent config {path}: keep_work_dirs must be true or false")
        out["keep_work_dirs"] = data["keep_work_dirs"]
    if "measure_budget_s" in data:
        budget = float(data["measure_budget_s"])
        if not 1 <= budget <= 600:
            raise AgentConfigError(f"agent config {path}: measure_budget_s must be 1..600")
        out["measure_budget_s"] = budget
    if "rediscover_interval_s" in data:
        every = float(data["rediscover_interval_s"])
        if not (every == 0 or 1 <= every <= 86400):
            raise AgentConfigError(
                f"agent config {path}: rediscover_interval_s must be 0 (off) or 1..86400"
            )
        out["rediscover_interval_s"] = every
    if "network_probe_interval_s" in data:
        every = float(data["network_probe_interval_s"])
        if not (every == 0 or MIN_PROBE_INTERVAL_S <= every <= 86400):
            raise AgentConfigError(
                f"agent config {path}: network_probe_interval_s must be 0 (off) or "
                f"{MIN_PROBE_INTERVAL_S:g}..86400"
            )
        out["network_probe_interval_s"] = every
    if "network_probe_bytes" in data:
        n = int(data["network_probe_bytes"])
        if not 0 <= n <= MAX_PROBE_BYTES:
            raise AgentConfigError(
                f"agent config {path}: network_probe_bytes must be 0..{MAX_PROBE_BYTES}"
            )
        out["network_probe_bytes"] = n
    if "probe_listen" in data:
        out["probe_listen"] = str(data["probe_listen"])
    for key in ("metrics_listen", "log_format"):
        if key in data:
            out[key] = str(data[key])
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise AgentConfigError(f"agent config {path}: [options] must be a table")
    out["options"] = {str(k): str(v) for k, v in options.items()}
    tables = data.get("pool", [])
    if not isinstance(tables, list):
        raise AgentConfigError(f"agent config {path}: pools are [[pool]] tables")
    out["pools"] = [
        pool_from_table(t, where=f"{path} [[pool]] #{i + 1}") for i, t in enumerate(tables)
    ]
    return out


def pool_from_table(table: Any, *, where: str = "pool") -> PoolDescriptor:
    """A PoolDescriptor from a TOML table or dict, with a one-line error saying what is wrong."""
    try:
        return PoolDescriptor.model_validate(table)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise AgentConfigError(f"{where}: {loc}: {first['msg']}") from None


def check_bind(
    text: str, what: str, example: str = "127.0.0.1:9464", meaning: str = ""
) -> tuple[str, int]:
    """(host, port) of a ``HOST:PORT`` to listen on (any address); AgentConfigError if not.

    ``meaning`` (what the address is for) follows the example in the error."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AgentConfigError(f"{what} {text!r} is not HOST:PORT (e.g. {example}){meaning}")
    return host.strip("[]"), int(port)


def check_listen(text: str) -> tuple[str, int]:
    """(host, port) of a ``HOST:PORT`` to listen on and advertise; AgentConfigError if not."""
    host, port = check_bind(
        text, "probe_listen", "10.0.0.5:8471", ": the address other sites' agents reach this one at"
    )
    if host in ("0.0.0.0", "::"):
        raise AgentConfigError(
            f"probe_listen {text!r}: give the address peers reach (it is advertised to the "
            "hub), not a wildcard"
        )
    return host, port
