"""Signed metering: the usage record a site's agent signs when an attempt ends, and the hub's
judgement of it — signature, duplicates, and what contradicts what the hub itself observed.

Pure: plain data in, a verdict out; the caller passes the site's keys, what the hub knows of the
attempt, the record already accepted under the same id, and the time it received the record.
The record is signed as RFC 8785 canonical JSON with the site's Ed25519 usage key, in the same
envelope shape as the resolver's signed records (``{"record": …, "signature": {alg, key_id,
value}}``). docs/market.md, "Metering", documents every field and verdict.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cpnet.crypto.canonical import canonical_json
from cpnet.ident.keys import SigningKey, verify
from cpnet.ident.records import ALG

VERSION = 1  # the record's schema version, signed with it
# How much longer than the hub's own view of an attempt its record's wall_s may be: clocks of
# agent and hub differ, and reports travel; a fixed allowance plus a share of the span.
TOLERANCE_S = 2.0
TOLERANCE_SHARE = 0.01
MAX_ID = 128  # characters of any identifier in a record
MAX_FIGURE = 1e12  # any second count or byte count (far beyond any real attempt)
RESOURCES = ("cpu_core_s", "ram_gb_s", "gpu_s")  # resource-seconds of the reserved demand


class Verdict(StrEnum):
    """What the hub made of a usage record. Only ``accepted`` and ``duplicate`` are kept for
    billing (a duplicate is the accepted record received again: a no-op); every other verdict
    refuses the record and names why."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # same record_id, same content as an accepted record: a no-op
    INVALID = "invalid"  # malformed: a field missing, of the wrong type, negative or not finite
    BAD_SIGNATURE = "bad_signature"  # not signed by a usage key registered for this site
    CONFLICT = "conflict"  # same record_id (or attempt) as an accepted record, other content
    NOT_OURS = "not_ours"  # the attempt is unknown, or not this site's, task's or pool's
    NEVER_RAN = "never_ran"  # the hub never saw the attempt start
    LONGER_THAN_OBSERVED = "longer_than_observed"  # wall_s beyond the hub's observed span

    @property
    def refused(self) -> bool:
        return self not in (Verdict.ACCEPTED, Verdict.DUPLICATE)


class SignedUsage(BaseModel):
    """A usage record as it travels: the record and its signature, kept as sent (the hub
    judges and keeps even a malformed one, so nothing here is checked beyond being objects)."""

    model_config = ConfigDict(extra="forbid")

    record: dict[str, Any]
    signature: dict[str, Any]


class UsageKey(BaseModel):
    """A site's public usage key as its agent registers it (the hub derives the key id)."""

    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")


def record_id(attempt_id: str, seq: int = 1) -> str:
    """The id of an attempt's ``seq``-th usage record (agents send one, seq 1, as it ends)."""
    return f"{attempt_id}/{seq}"


def build(
    *,
    site_id: str,
    task_id: str,
    attempt_id: str,
    pool_id: str,
    started_at: float,
    ended_at: float,
    wall_s: float,
    demand: Mapping[str, float],
    cpu_s: float = 0.0,
    scu_rates: Mapping[str, float] | None = None,
    profile: str | None = None,
    bytes_in: int = 0,
    bytes_out: int = 0,
    seq: int = 1,
) -> dict[str, Any]:
    """The record of one attempt's usage: times are Unix seconds, figures rounded to the
    millisecond (so that the signed JSON is short and the same in every language).
    Resource-seconds are the reserved ``demand`` (cpu_cores, ram_gb, gpus) × wall_s; SCU-seconds
    are given for the task's work ``profile`` when the pool has an SCU rate for it."""
    wall = _ms(wall_s)
    scu = {}
    if profile and scu_rates and scu_rates.get(profile):
        scu[profile] = _ms(float(scu_rates[profile]) * wall)
    return {
        "v": VERSION,
        "record_id": record_id(attempt_id, seq),
        "site_id": site_id,
        "task_id": task_id,
        "attempt_id": attempt_id,
        "pool_id": pool_id,
        "started_at": _ms(started_at),
        "ended_at": _ms(ended_at),
        "wall_s": wall,
        "cpu_s": _ms(cpu_s),
        "resource_s": {
            "cpu_core_s": _ms(float(demand.get("cpu_cores", 0) or 0) * wall),
            "ram_gb_s": _ms(float(demand.get("ram_gb", 0) or 0) * wall),
            "gpu_s": _ms(float(demand.get("gpus", 0) or 0) * wall),
        },
        "scu_s": scu,
        "bytes_in": int(bytes_in),
        "bytes_out": int(bytes_out),
    }


def _ms(x: float) -> float:
    return round(float(x), 3)


def sign(record: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The signed envelope of ``record``: its key id goes inside what is signed."""
    body = {**record, "key_id": key.key_id}
    return {
        "record": body,
        "signature": {"alg": ALG, "key_id": key.key_id, "value": key.sign(canonical_json(body))},
    }


def digest(envelope: Mapping[str, Any]) -> str:
    """sha256 of an envelope as received (canonical JSON; repr when it is not JSON at all)."""
    try:
        raw = canonical_json(envelope)
    except (ValueError, TypeError):
        raw = repr(envelope).encode()
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class Observed:
    """What the hub itself knows of an attempt (times in Unix seconds). ``start_time`` and
    ``end_time`` are the attempt's recorded start and end; ``created_at`` is when the hub placed
    it, by the hub's own clock, which bounds the span whatever an agent's clock says."""

    attempt_id: str
    site_id: str
    task_id: str
    pool_id: str
    created_at: float
    start_time: float | None
    end_time: float | None

    def span(self, received_at: float) -> float | None:
        """The longest the attempt can have run, by the hub's view; None if it never started."""
        if self.start_time is None:
            return None
        end = self.end_time if self.end_time is not None else received_at
        return max(0.0, min(end - self.start_time, received_at - self.created_at))


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one envelope: why (``reason``, a sentence), which record ``field`` it is
    about, and what was read from it (None where the envelope did not say)."""

    verdict: Verdict
    reason: str
    field: str | None = None
    record_id: str | None = None
    attempt_id: str | None = None
    key_id: str | None = None
    wall_s: float | None = None


def tolerance(span: float) -> float:
    """How much a record's wall_s may exceed the hub's observed span."""
    return TOLERANCE_S + TOLERANCE_SHARE * span


def judge(
    envelope: Mapping[str, Any],
    *,
    site_id: str,
    keys: Mapping[str, str],
    observed: Observed | None,
    prior: Mapping[str, Any] | None,
    received_at: float,
) -> Judgement:
    """Judge a usage ``envelope`` sent by ``site_id``'s agent.

    ``keys``: the site's usage keys (key id → public key, base64url), retired ones included so
    old records still verify. ``observed``: the hub's view of the attempt the record names
    (None: no such attempt). ``prior``: the record already accepted under the same record_id or
    for the same attempt (None: none). Checked in this order: shape, signature, fields, whose
    attempt it is, duplicates, then whether it ran and for how long."""
    rec = envelope.get("record") if isinstance(envelope, Mapping) else None
    sig = envelope.get("signature") if isinstance(envelope, Mapping) else None
    if not isinstance(rec, Mapping) or not isinstance(sig, Mapping):
        return Judgement(Verdict.INVALID, "needs 'record' and 'signature' objects", "record")
    rid = identifier(rec.get("record_id"))
    aid = identifier(rec.get("attempt_id"))
    kid = identifier(rec.get("key_id"))
    base = {"record_id": rid, "attempt_id": aid, "key_id": kid}

    def no(verdict: Verdict, reason: str, field: str | None) -> Judgement:
        return Judgement(verdict, reason, field, **base)

    # The signature first: nothing an unsigned record says is worth reading further.
    if sig.get("alg") != ALG:
        return no(Verdict.BAD_SIGNATURE, f"unsupported signature alg {sig.get('alg')!r}", "alg")
    if kid is None or sig.get("key_id") != kid:
        return no(
            Verdict.BAD_SIGNATURE,
            "the signature's key_id must equal the record's (which the signature covers)",
            "key_id",
        )
    public = keys.get(kid)
    if public is None:
        return no(
            Verdict.BAD_SIGNATURE,
            f"key {kid} is not a usage key of site {site_id}",
            "key_id",
        )
    try:
        data = canonical_json(dict(rec))
    except (ValueError, TypeError) as exc:
        return no(Verdict.INVALID, f"the record is not canonical JSON: {exc}", "record")
    if not verify(public, data, sig.get("value")):  # type: ignore[arg-type]
        return no(
            Verdict.BAD_SIGNATURE,
            f"the signature does not verify with site {site_id}'s key {kid}",
            "signature",
        )
    bad = _fields(rec)
    if bad is not None:
        return no(Verdict.INVALID, bad[1], bad[0])
    wall = float(rec["wall_s"])
    base["wall_s"] = wall  # type: ignore[assignment]

    if rec["site_id"] != site_id:
        return no(Verdict.NOT_OURS, f"the record is for site {rec['site_id']}", "site_id")
    if observed is None or observed.site_id != site_id:
        return no(Verdict.NOT_OURS, f"no attempt {aid} ran on site {site_id}", "attempt_id")
    for field in ("task_id", "pool_id"):
        if rec[field] != getattr(observed, field):
            return no(
                Verdict.NOT_OURS,
                f"attempt {aid} belongs to {field.split('_')[0]} {getattr(observed, field)}",
                field,
            )
    if prior is not None:
        if canonical_json(dict(prior)) == data:
            return no(Verdict.DUPLICATE, "this record was accepted before: nothing changes", None)
        field = "record_id" if prior.get("record_id") == rid else "attempt_id"
        return no(
            Verdict.CONFLICT,
            f"another record was accepted for this {field.replace('_', ' ')} "
            f"({prior.get('record_id')}) with other content; a record, once accepted, stands",
            field,
        )

    span = observed.span(received_at)
    if span is None:
        return no(Verdict.NEVER_RAN, f"the hub never saw attempt {aid} start", "attempt_id")
    allowed = span + tolerance(span)
    if wall > allowed:
        return no(
            Verdict.LONGER_THAN_OBSERVED,
            f"wall_s {wall:g} is longer than the {span:.3f} s the hub observed "
            f"(+{tolerance(span):.3f} s tolerance)",
            "wall_s",
        )
    return no(Verdict.ACCEPTED, "accepted", None)


_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


def identifier(x: object) -> str | None:
    """``x`` if it is an identifier a record may carry (at most MAX_ID safe characters)."""
    return x if isinstance(x, str) and _ID.match(x) else None


def _fields(rec: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, why) of the first thing wrong with a record's fields; None if they are sound."""
    if rec.get("v") != VERSION:
        return "v", f"unknown record version {rec.get('v')!r} (this hub reads {VERSION})"
    for f in ("record_id", "site_id", "task_id", "attempt_id", "pool_id"):
        if identifier(rec.get(f)) is None:
            return f, f"{f} must be an identifier of at most {MAX_ID} characters"
    for f in ("started_at", "ended_at", "wall_s", "cpu_s"):
        if not _figure(rec.get(f)):
            return f, f"{f} must be a finite number ≥ 0, got {rec.get(f)!r}"
    for f in ("bytes_in", "bytes_out"):
        x = rec.get(f)
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 2**62:
            return f, f"{f} must be a whole number of bytes ≥ 0, got {x!r}"
    res = rec.get("resource_s")
    if not isinstance(res, Mapping) or set(res) != set(RESOURCES):
        return "resource_s", f"resource_s must hold exactly {', '.join(RESOURCES)}"
    for k in RESOURCES:
        if not _figure(res[k]):
            return f"resource_s.{k}", f"{k} must be a finite number ≥ 0, got {res[k]!r}"
    scu = rec.get("scu_s")
    if not isinstance(scu, Mapping) or len(scu) > 16:
        return "scu_s", "scu_s must be an object of at most 16 profiles"
    for k, x in scu.items():
        if identifier(k) is None or not _figure(x):
            return f"scu_s.{k}", f"SCU-seconds must be a finite number ≥ 0, got {x!r}"
    if rec["ended_at"] < rec["started_at"]:
        return "ended_at", "ended_at is before started_at"
    if rec["wall_s"] > rec["ended_at"] - rec["started_at"] + 0.002:  # rounding to the ms
        return "wall_s", "wall_s is longer than ended_at − started_at"
    if rec["record_id"].rsplit("/", 1)[0] != rec["attempt_id"]:
        return "record_id", "record_id must be the attempt id, '/', and a sequence number"
    return None


def _figure(x: object) -> bool:
    return (
        not isinstance(x, bool)
        and isinstance(x, int | float)
        and math.isfinite(x)
        and 0 <= x <= MAX_FIGURE
    )
