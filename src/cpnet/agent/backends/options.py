"""Backend options: the ``--option K=V`` strings (``[options]`` in an agent config) read once.

Each backend declares its options as one frozen dataclass (`LocalOptions`, `SlurmOptions`, ...):
every field is one option, typed, with its default and a line of documentation, and says how
its string is read (`option`). `BackendOptions.parse` reads them when the backend is built, that
is when the agent starts: a value that cannot be used stops the agent with an error naming the
option, the value and what is accepted (``local option cancel_grace_s='abc' is not a number of
seconds``); an option the backend does not know is logged as ignored, with the known ones (an
agent that passed unknown options always started, so they are not refused).

An empty value means the option's default, except for flags (empty is false, as it always was)
and path lists (empty is an empty list).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from cpnet.agent import containers
from cpnet.agent.backends.base import POOL_TYPES, BackendError

log = logging.getLogger(__name__)

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


class OptionError(BackendError):
    """A backend option whose value cannot be used (the message names it and what is accepted)."""


@dataclass(frozen=True, slots=True)
class Reader:
    """How one option's string becomes its value: `read` raises ValueError with what is wrong
    (completing "option K='V' ..."); `empty` says whether "" is read (else it is the default)."""

    read: Callable[[str], Any]
    empty: bool = False


def option(default: Any, reader: Reader, doc: str, *, secret: bool = False) -> Any:
    """A field of an options dataclass: its default, how its string is read, what it does; a
    `secret` (a credential) is left out of the options' repr, so logs never show it."""
    return dataclasses.field(
        default=default, repr=not secret, metadata={"reader": reader, "doc": doc}
    )


# ---- readers ----------------------------------------------------------------------------------


def _float(raw: str, what: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"is not {what}") from None


def _at_least(value: float, least: float | None) -> None:
    if least is not None and not value >= least:  # also refuses NaN
        raise ValueError(f"must be at least {least:g}")


def seconds(least: float | None = None) -> Reader:
    """A duration in seconds (``2.5``), at least `least` when given."""

    def read(raw: str) -> float:
        value = _float(raw, "a number of seconds (e.g. 10 or 2.5)")
        _at_least(value, least)
        return value

    return Reader(read)


def whole_seconds(least: int) -> Reader:
    """A whole number of seconds, at least `least`."""

    def read(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not a number of seconds (a whole number, e.g. 3600)") from None
        _at_least(value, least)
        return value

    return Reader(read)


def number(what: str = "a number") -> Reader:
    """A number (``3``, ``0.5``)."""
    return Reader(lambda raw: _float(raw, what))


def gib() -> Reader:
    """An amount in GiB (``10``, ``0.5``)."""
    return number("a number of GiB (e.g. 10 or 0.5)")


def cpu_count() -> Reader:
    """A CPU count (``4``; ``4.0`` is taken as 4)."""

    def read(raw: str) -> int:
        value = _float(raw, "a number of CPUs (e.g. 4)")
        if not math.isfinite(value) or value < 0:
            raise ValueError("is not a number of CPUs (e.g. 4)")
        return int(value)

    return Reader(read)


def _flag(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("is not true or false (use true/false, yes/no, on/off or 1/0)")


FLAG = Reader(_flag, empty=True)
TEXT = Reader(str)


def one_of(*choices: str) -> Reader:
    """One of `choices` (as written, after trimming spaces and lower-casing)."""

    def read(raw: str) -> str:
        word = raw.strip().lower()
        if word not in choices:
            raise ValueError(f"unknown; use {' or '.join(repr(c) for c in choices)}")
        return word

    return Reader(read)


def _pool_type(raw: str) -> str:
    if raw not in POOL_TYPES:
        raise ValueError(f"is not a pool type: use one of {POOL_TYPES}")
    return raw


def _runtime(raw: str) -> str:
    if raw.strip().lower() not in ("auto", "none", "off", "false", *containers.RUNTIMES):
        raise ValueError(f"unknown; use auto, none or one of {containers.RUNTIMES}")
    return raw


POOL_TYPE = Reader(_pool_type)  # one of `base.POOL_TYPES`
RUNTIME = Reader(_runtime)  # a container runtime, auto or none (`containers.detect` takes it)


PATHS = Reader(lambda raw: tuple(p for p in raw.split(":") if p), empty=True)  # ``a:b``
NAMES = Reader(lambda raw: tuple(x.strip() for x in raw.split(",") if x.strip()))  # ``A,B``


def _allow(raw: str) -> tuple[str, ...]:
    from cpnet.limits.ssrf import parse_allow

    try:
        parse_allow(raw)
    except ValueError as exc:
        raise ValueError(f"is not an allow list: {exc}") from None
    return tuple(x.strip() for x in raw.split(",") if x.strip())


ALLOW = Reader(_allow, empty=True)  # CIDRs and host names, ``10.0.0.0/8,minio.internal``


# ---- the options of every backend --------------------------------------------------------------


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend takes: what executors with an image get (`containers`)."""

    container_runtime: str = option(
        "auto", RUNTIME, "podman, docker, apptainer, auto (the first that works) or none"
    )
    allow_host_exec: bool = option(
        False, FLAG, "executors with an image run their command on the host when no runtime does"
    )

    @classmethod
    def parse(cls, raw: Mapping[str, str], backend: str = "") -> Self:
        """The options `raw` sets, read and checked; OptionError names a value that cannot be
        used. Options this backend does not know are logged and ignored."""
        where = f"{backend} option" if backend else "option"
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            text = raw[f.name]
            reader: Reader = f.metadata["reader"]
            if text == "" and not reader.empty:
                continue
            try:
                values[f.name] = reader.read(text)
            except ValueError as exc:
                raise OptionError(f"{where} {f.name}={text!r} {exc}") from None
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            log.warning(
                "%s backend: ignoring the option%s %s, which it does not know; it knows: %s",
                backend or "this",
                "s" if len(unknown) > 1 else "",
                ", ".join(unknown),
                ", ".join(cls.known()),
            )
        try:
            return cls(**values)
        except ValueError as exc:  # a rule between options (__post_init__)
            raise OptionError(f"{where}s: {exc}") from None

    @classmethod
    def known(cls) -> list[str]:
        """The names of the options, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Each option's documentation line, by name (the reference the docs follow)."""
        return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}

    def images(
        self, detector: Callable[[str], str | None] = containers.detect
    ) -> containers.ImageSupport:
        """What executors with an image get here (`detector` finds the runtime to use)."""
        return containers.ImageSupport(detector(self.container_runtime), self.allow_host_exec)


@dataclass(frozen=True)
class StagingOptions(BackendOptions):
    """Options of cpnet's staging, for the backends that stage with it (docs/staging.md)."""

    max_stage_gb: float = option(
        10.0, gib(), "staging limit per direction when a task gives no disk_gb"
    )
    http_timeout_s: float = option(60.0, seconds(), "per network operation while staging")
    max_file_gb: float | None = option(None, gib(), "per-file staging limit (default none)")
    s3_endpoint: str | None = option(None, TEXT, "the S3 endpoint for s3:// URLs")
    allow_private_urls: tuple[str, ...] = option(
        (),
        ALLOW,
        "CIDRs and host names that http(s) inputs and outputs may reach although loopback, "
        "link-local or private (default none; * allows every address), e.g. "
        "10.0.0.0/8,minio.internal",
    )
    s3_region: str | None = option(None, TEXT, "the S3 region for s3:// URLs")
    s3_access_key_id: str | None = option(
        None,
        TEXT,
        "S3 credentials: they win over the agent's AWS_* environment and reach the runner in "
        "its environment, never in job.json",
        secret=True,
    )
    s3_secret_access_key: str | None = option(
        None, TEXT, "S3 credentials (as s3_access_key_id)", secret=True
    )
    s3_session_token: str | None = option(
        None, TEXT, "S3 credentials (as s3_access_key_id)", secret=True
    )


__all__ = [
    "ALLOW",
    "FLAG",
    "NAMES",
    "PATHS",
    "POOL_TYPE",
    "RUNTIME",
    "TEXT",
    "BackendOptions",
    "OptionError",
    "Reader",
    "StagingOptions",
    "cpu_count",
    "gib",
    "number",
    "one_of",
    "option",
    "seconds",
    "whole_seconds",
]
