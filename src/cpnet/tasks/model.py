"""The one task schema: what a user asks for, what an attempt reports, what the hub shows.

The native API, the SDK, the agent protocol and (later) the GA4GH TES router all map to these
models; TES fields appear under their TES names so that mapping loses nothing.
"""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cpnet.market.metering import SignedUsage
from cpnet.measure.scu import PROFILES
from cpnet.tasks import wildcards
from cpnet.tasks.states import State

# Size limits on everything a client sends (the whole body is also capped at 1 MiB by the API).
MAX_EXECUTORS = 32
MAX_FILES = 256
MAX_CONTENT_BYTES = 256 * 1024
MAX_ARG_CHARS = 16 * 1024
MAX_TAIL_CHARS = 16 * 1024
# Output file logs one attempt reports: a wildcard output logs each file it uploaded.
MAX_ENV = 256  # variables per executor (the validator below says so too)
MAX_LABELS = 64  # labels, constraint labels and backend parameters per object
MAX_TAGS = 128  # tags per task (the validator below says so too)
MAX_OUTPUT_LOGS = wildcards.MAX_MATCHES + MAX_FILES

ShortStr = Annotated[str, Field(max_length=256)]
Name = Annotated[str, Field(max_length=256)]
Arg = Annotated[str, Field(max_length=MAX_ARG_CHARS)]
URL_SCHEMES = ("file", "http", "https", "s3", "cpnet")
BLOB_URL_PREFIX = "cpnet://blobs/"  # the hub's blob store: inputs name a sha256, outputs end here


class Strict(BaseModel):
    """Base for client-sent models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def check_task_path(path: str) -> str:
    """Refuse paths that could leave the task's work dir; return the normalised path."""
    if not path:
        raise ValueError("must not be empty")
    if "\x00" in path:
        raise ValueError("must not contain NUL")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError("must not contain '..' (paths stay inside the task's work dir)")
    norm = posixpath.normpath(path)
    return norm


class FileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class Executor(Strict):
    """One command; a task's executors run in order and stop at the first failure."""

    image: ShortStr | None = None
    command: list[Arg] = Field(min_length=1, max_length=1024)
    workdir: ShortStr | None = None
    stdin: ShortStr | None = None
    stdout: ShortStr | None = None
    stderr: ShortStr | None = None
    env: dict[Annotated[str, Field(max_length=256)], Arg] = Field(
        default_factory=dict, max_length=MAX_ENV
    )
    # Names in `env` whose values are secret (docs/security.md, "Secrets"): stored encrypted,
    # delivered only to the agent running the attempt, shown as "[secret]" everywhere else.
    secret_env: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=256
    )
    ignore_error: bool = False

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else check_task_path(v)

    @model_validator(mode="after")
    def _secrets_name_env(self) -> Executor:
        missing = [n for n in self.secret_env if n not in self.env]
        if missing:
            raise ValueError(f"secret_env names {missing[0]!r}, which is not in env")
        return self

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 256:
            raise ValueError("at most 256 variables")
        for key in v:
            if not key or "=" in key or "\x00" in key:
                raise ValueError(f"bad variable name {key!r}")
        return v


def _check_url(url: str, *, output: bool = False) -> str:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in URL_SCHEMES:
        raise ValueError(f"scheme {scheme or '(none)'!r} not supported; use one of {URL_SCHEMES}")
    if scheme == "cpnet":
        rest = url.split("#", 1)[0][len(BLOB_URL_PREFIX) :]
        if not url.lower().startswith(BLOB_URL_PREFIX):
            raise ValueError(f"cpnet URLs name the hub's blob store: {BLOB_URL_PREFIX}...")
        if output and rest:
            raise ValueError(f"an output to the blob store has the URL {BLOB_URL_PREFIX!r}")
        if not output and not re.fullmatch(r"[0-9a-fA-F]{64}", rest):
            raise ValueError(f"a blob input is {BLOB_URL_PREFIX}<64 hex digits of sha256>")
    return url


class Input(Strict):
    """A file placed in the work dir before the executors run: from a URL or inline content."""

    name: Name | None = None
    description: Annotated[str, Field(max_length=4096)] | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    content: Annotated[str, Field(max_length=MAX_CONTENT_BYTES)] | None = None
    path: ShortStr
    type: FileType = FileType.FILE
    streamable: bool = False
    sha256: Annotated[str, Field(max_length=64, pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    # How many bytes the input is: the scheduler counts its staging time from where it lives.
    # The hub fills it for its own blobs; for other URLs give it, or staging counts as free.
    size_bytes: int | None = Field(default=None, ge=0, le=2**50)
    # The file at `url` is encrypted under the task's data_key (`cpnet data encrypt`): the runner
    # decrypts it on arrival (each file of a DIRECTORY), and refuses one that does not decrypt.
    encrypted: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_task_path(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)

    @model_validator(mode="after")
    def _one_source(self) -> Input:
        if (self.url is None) == (self.content is None):
            raise ValueError("give exactly one of url or content")
        if self.encrypted and self.content is not None:
            raise ValueError("inline content is not encrypted: encrypted needs a url")
        return self


class Output(Strict):
    """A file (or directory) copied out of the work dir after the executors succeed."""

    name: Name | None = None
    description: Annotated[str, Field(max_length=4096)] | None = None
    url: Annotated[str, Field(max_length=4096)]
    path: ShortStr
    path_prefix: ShortStr | None = None
    type: FileType = FileType.FILE

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_task_path(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, output=True)


class Resources(Strict):
    """What one attempt reserves on a pool."""

    cpu_cores: float = Field(default=1.0, gt=0, le=4096)
    ram_gb: float = Field(default=0.5, ge=0, le=65536)
    disk_gb: float = Field(default=0.0, ge=0, le=1_000_000)
    gpus: int = Field(default=0, ge=0, le=1024)
    gpu_model: ShortStr | None = None
    preemptible: bool = False
    zones: list[ShortStr] = Field(default_factory=list, max_length=64)
    backend_parameters: dict[ShortStr, Annotated[str, Field(max_length=4096)]] = Field(
        max_length=MAX_LABELS, default_factory=dict
    )
    backend_parameters_strict: bool = False


class LatencyBound(Strict):
    """Run only where the round trip to a named place is at most ``max_rtt_ms`` (edge, real time).

    ``to`` is a network place (``hub``, ``site:<id>``, ``url:<scheme>://<host>``) or
    ``region:<code>`` for a city by its GB/T 2260 code (``region:440300`` is Shenzhen).

    Without ``fallback_max_rtt_ms`` the bound fails closed: a task no pool within the bound can
    take waits queued. With it (above ``max_rtt_ms``), pools beyond the bound but within the
    fallback are a later tier, used only when no pool within the bound fits.
    """

    to: ShortStr
    max_rtt_ms: float = Field(gt=0, le=10_000)
    fallback_max_rtt_ms: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _fallback_beyond(self) -> LatencyBound:
        f = self.fallback_max_rtt_ms
        if f is not None and f <= self.max_rtt_ms:
            raise ValueError(
                f"fallback_max_rtt_ms ({f:g}) must be above max_rtt_ms ({self.max_rtt_ms:g})"
            )
        return self


RegionPrefix = Annotated[str, Field(max_length=12, pattern=r"^[0-9]*$")]


class Constraints(Strict):
    """Where a task may run, by when, and for how much."""

    regions: list[ShortStr] = Field(default_factory=list, max_length=256)
    providers: list[ShortStr] = Field(default_factory=list, max_length=256)
    deny_providers: list[ShortStr] = Field(default_factory=list, max_length=256)
    # Pool ids the task may run on (empty: any). A task submitted with a quote gets its quoted
    # pool here.
    pools: list[ShortStr] = Field(default_factory=list, max_length=256)
    pool_types: list[ShortStr] = Field(default_factory=list, max_length=8)
    labels: dict[ShortStr, ShortStr] = Field(default_factory=dict, max_length=MAX_LABELS)
    latency: LatencyBound | None = None
    # The result must exist by then; pools that cannot finish in time are ruled out.
    deadline: datetime | None = None
    budget: float | None = Field(default=None, ge=0, le=1e12)  # most it may cost (CNY)
    # Ordered spillover tiers of region code prefixes: fill the first tier's pools before the
    # next ("" matches every region), e.g. [["440300"], ["44"], [""]]: city, province, nation.
    spillover: list[Annotated[list[RegionPrefix], Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=8
    )

    @field_validator("deadline")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-07T08:00:00Z")
        return v

    @field_validator("pool_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        allowed = {"general", "intelligent", "supercomputing", "edge"}
        bad = [t for t in v if t not in allowed]
        if bad:
            raise ValueError(f"unknown pool type {bad[0]!r}; use one of {sorted(allowed)}")
        return v


class Work(Strict):
    """How much work a task is, in standard compute units (see docs/compute-unit.md).

    Give ``scu_hours``, or a run time measured on a reference pool (``reference_pool`` and
    ``reference_runtime_s``): the hub then fills ``scu_hours`` from that pool's SCU rate for the
    profile when the task is submitted, and predicts the run time on every pool from it.
    """

    profile: ShortStr = "general"
    scu_hours: float | None = Field(default=None, gt=0, le=1e9)
    reference_pool: ShortStr | None = None
    reference_runtime_s: float | None = Field(default=None, gt=0, le=365 * 86400)

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r}; use one of {', '.join(PROFILES)}")
        return v

    @model_validator(mode="after")
    def _amount(self) -> Work:
        if (self.reference_pool is None) != (self.reference_runtime_s is None):
            raise ValueError("give reference_pool and reference_runtime_s together")
        if self.scu_hours is None and self.reference_pool is None:
            raise ValueError("give scu_hours, or reference_pool and reference_runtime_s")
        return self


DATA_KEY_PLACEHOLDER = "[secret]"  # what the hub stores and shows for a data key (tasks/secrets)


class TaskSpec(Strict):
    """A unit of work as a user describes it."""

    name: Name | None = None
    description: Annotated[str, Field(max_length=16 * 1024)] | None = None
    executors: list[Executor] = Field(min_length=1, max_length=MAX_EXECUTORS)
    inputs: list[Input] = Field(default_factory=list, max_length=MAX_FILES)
    outputs: list[Output] = Field(default_factory=list, max_length=MAX_FILES)
    volumes: list[ShortStr] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    constraints: Constraints = Field(default_factory=Constraints)
    tags: dict[ShortStr, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=MAX_TAGS
    )
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    max_attempts: int = Field(default=3, ge=1, le=10)
    expected_runtime_s: float = Field(default=600.0, gt=0, le=365 * 86400)
    # The task's work in SCU-hours for a profile: the scheduler then predicts the run time on
    # each pool from its SCU rate and uses that instead of expected_runtime_s.
    work: Work | None = None
    # What the scheduler optimises: time to result and cost weighed ("balanced"), or one figure.
    objective: Literal["balanced", "fastest", "cheapest", "greenest"] = "balanced"
    # A binding quote for this spec (POST /v1/quotes) and which of its options to take (1 = the
    # best): the task runs only on that option's pool and is charged at most its max_charge
    # while it stays within the work it states (docs/market-prices.md).
    quote_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    quote_option: int | None = Field(default=None, ge=1, le=100)
    # Keep the attempt's work dir on the provider after it ends (for debugging); by default the
    # agent removes it (inputs, outputs, logs) once the hub has the attempt's final state.
    keep_work_dir: bool = False
    # A data key (32 bytes, base64; `cpnet data key`): inputs marked `encrypted` are decrypted
    # with it on arrival, and the runner encrypts every file the attempt leaves — outputs before
    # they are staged out — so that storage and the provider's disk hold ciphertext outside the
    # running attempt. Kept sealed by the hub like a secret; every answer shows "[secret]".
    data_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @field_validator("data_key")
    @classmethod
    def _data_key(cls, v: str | None) -> str | None:
        if v is None or v == DATA_KEY_PLACEHOLDER:
            return v
        from cpnet.crypto.datakey import DataKeyError, parse_key

        try:
            parse_key(v)
        except DataKeyError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _encrypted_inputs_need_a_key(self) -> TaskSpec:
        if self.data_key is None:
            for i, inp in enumerate(self.inputs):
                if inp.encrypted:
                    raise ValueError(
                        f"inputs.{i}.encrypted is true but the task has no data_key to decrypt "
                        "it: add data_key (`cpnet data key` makes one)"
                    )
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 128:
            raise ValueError("at most 128 tags")
        return v


# ---- what attempts report ---------------------------------------------------------------------


class Report(BaseModel):
    """Base for data the hub and agents exchange; tolerant of fields added by newer versions."""

    model_config = ConfigDict(extra="ignore")


class ExecutorLog(Report):
    """What one executor did in one attempt."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    stdout: Annotated[str, Field(max_length=MAX_TAIL_CHARS * 2)] = ""  # tail
    stderr: Annotated[str, Field(max_length=MAX_TAIL_CHARS * 2)] = ""  # tail


class OutputFileLog(Report):
    url: Annotated[str, Field(max_length=4096)]
    path: Annotated[str, Field(max_length=4096)]
    size_bytes: int = Field(ge=0)
    sha256: Annotated[str, Field(max_length=64)] | None = None


class Usage(Report):
    """Resources an attempt consumed, as measured where it ran."""

    wall_s: float = Field(default=0.0, ge=0)
    cpu_s: float = Field(default=0.0, ge=0)
    peak_rss_mb: float = Field(default=0.0, ge=0)
    bytes_in: int = Field(default=0, ge=0)
    bytes_out: int = Field(default=0, ge=0)
    alloc_cpu_s: float = Field(default=0.0, ge=0)  # CPUs held × wall, as a batch scheduler bills


class Assignment(Report):
    """An attempt the hub hands to an agent to run on one of its pools."""

    attempt_id: str
    task_id: str
    attempt: int
    pool_id: str
    pool_name: str
    spec: TaskSpec
    # The hub's id of the request that created the task: the agent's log lines about the
    # attempt carry it (telemetry/logs.py). None for tasks created before trace ids.
    trace_id: Annotated[str, Field(max_length=64)] | None = None


MAX_TRANSFERS = 1000  # per-transfer records kept per attempt; more are counted, not kept
MAX_BYTES = 2**62  # any byte count an agent reports (far beyond any real transfer)


def strip_url(url: str) -> str:
    """A URL without credentials, query or fragment (pre-signed URLs carry secrets there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(unparseable URL)"
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class AttemptProgress(Report):
    """Where a running attempt is: staging inputs in, running executors, or staging outputs out.

    `items_done` / `items_total` count the task's inputs (staging_in), executors (running) or
    outputs (staging_out); `bytes_done` is what this phase moved so far, the current file
    included; `path`, `file_bytes` and `file_total` describe the file being moved now
    (`file_total` is None when the source does not say its size).
    """

    phase: Literal["staging_in", "running", "staging_out"]
    items_done: int = Field(default=0, ge=0, le=100_000)
    items_total: int = Field(default=0, ge=0, le=100_000)
    bytes_done: int = Field(default=0, ge=0, le=MAX_BYTES)
    path: Annotated[str, Field(max_length=4096)] | None = None
    file_bytes: int = Field(default=0, ge=0, le=MAX_BYTES)
    file_total: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    at: datetime | None = None  # when the agent read it

    @model_validator(mode="after")
    def _counts(self) -> AttemptProgress:
        if self.items_done > self.items_total:
            raise ValueError(f"items_done {self.items_done} exceeds items_total {self.items_total}")
        return self


class TransferRecord(Report):
    """One input or output an attempt moved: the record metering and the network map read.

    `sha256_verified` is true when the bytes were checked against a checksum known beforehand
    (an input's ``sha256``, a blob's address, the hub confirming an upload), not merely hashed.
    """

    direction: Literal["in", "out"]
    url: Annotated[str, Field(max_length=4096)]
    path: Annotated[str, Field(max_length=4096)]
    size_bytes: int = Field(ge=0, le=MAX_BYTES)
    seconds: float = Field(ge=0, le=10 * 365 * 86400)
    sha256: Annotated[str, Field(max_length=64, pattern=r"^[0-9a-f]{64}$")] | None = None
    sha256_verified: bool = False
    resumed_from: int = Field(default=0, ge=0, le=MAX_BYTES)
    files: int = Field(default=1, ge=0, le=10_000_000)

    @field_validator("url")
    @classmethod
    def _no_secrets(cls, v: str) -> str:
        return v if v.startswith("(") else strip_url(v)  # "(inline content)" stays as it is


class AttemptUpdate(Report):
    """A change an agent reports for one attempt; applying the same update twice is a no-op."""

    attempt_id: str = Field(max_length=64)
    state: State
    at: datetime
    reason: Annotated[str, Field(max_length=4096)] | None = None
    executor_logs: list[ExecutorLog] | None = Field(default=None, max_length=MAX_EXECUTORS)
    usage: Usage | None = None
    outputs: list[OutputFileLog] | None = Field(default=None, max_length=MAX_OUTPUT_LOGS)
    system_logs: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64
    )
    progress: AttemptProgress | None = None
    # With the final state: every input and output moved (at most MAX_TRANSFERS; how many more
    # there were in transfers_omitted).
    transfers: list[TransferRecord] | None = Field(default=None, max_length=MAX_TRANSFERS)
    transfers_omitted: int | None = Field(default=None, ge=0, le=10**9)
    # With the final state: the attempt's usage record signed with the site's usage key, which
    # settlement charges by (docs/market.md, "Metering"); judged and kept whatever its verdict.
    usage_record: SignedUsage | None = None


class AttemptView(Report):
    """One attempt as the hub shows it."""

    attempt: int
    attempt_id: str
    pool_id: str
    site_id: str
    state: State
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    reason: str | None = None
    executor_logs: list[ExecutorLog] = Field(default_factory=list)
    outputs: list[OutputFileLog] = Field(default_factory=list)
    system_logs: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    progress: AttemptProgress | None = None  # while it runs: the phase, files and bytes so far
    transfers: list[TransferRecord] | None = None  # the full view only (?view=full)
    transfers_omitted: int | None = None  # records over MAX_TRANSFERS, not kept


class TaskView(Report):
    """A task as the hub shows it to its owner."""

    id: str
    name: str | None = None
    state: State
    reason: str | None = None
    org_id: str
    pool_id: str | None = None
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = Field(default_factory=dict)
    spec: TaskSpec
    attempts: list[AttemptView] = Field(default_factory=list)


class TaskEvent(Report):
    """One state change of a task, with its time and reason."""

    at: datetime
    from_state: State | None
    to_state: State
    reason: str | None = None
    attempt: int | None = None


class TaskPage(Report):
    tasks: list[TaskView]
    next_cursor: str | None = None


MAX_BATCH = 1000  # tasks per POST /v1/tasks:batch (the SDK and CLI send bigger sets in chunks)


class BatchRequest(Strict):
    """Many tasks in one request (``POST /v1/tasks:batch``). Each item is a TaskSpec, checked on
    its own: an invalid item is refused with its own error and the others are still created."""

    tasks: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class ItemError(Report):
    code: str
    message: str
    field: str | None = None


class BatchItem(Report):
    """One item's outcome: 201 created, 200 found by its idempotency key (the task it made
    before), else its 4xx with the error (nothing of it was kept)."""

    index: int
    status: int
    id: str | None = None
    error: ItemError | None = None


class BatchResult(Report):
    results: list[BatchItem]  # in the request's order
    created: int
    existing: int
    failed: int
