"""The audit chain: records linked by SHA-256, signed checkpoints of its head, and verification.

Pure: plain data in, plain data out. A record's hash is
``sha256(bytes.fromhex(prev_hash) || canonical_json(body))`` where the body is every field but
``hash`` (``prev_hash`` and ``seq`` included), canonical JSON being RFC 8785 (JCS). The first
record's ``prev_hash`` is ``GENESIS``. A checkpoint is the hub's Ed25519 signature over the
canonical JSON of ``{"seq", "hash", "at", "key_id"}`` of the head at that moment.

A record never holds a secret or a request body: only digests of them (``body``, ``before``,
``after`` are SHA-256 hex), identifiers and small facts in ``detail``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cpnet.crypto.canonical import canonical_json
from cpnet.ident.keys import SigningKey
from cpnet.ident.keys import verify as verify_signature

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: the token's principal (never the token itself), or the hub for its own work."""

    role: str  # admin, provider-admin, user, agent, or "hub" for the hub's own loops
    org_id: str | None = None
    user_id: str | None = None
    site_id: str | None = None
    token_id: str | None = None


HUB = Actor(role="hub")


@dataclass(frozen=True, slots=True)
class Entry:
    """What a caller appends: everything but the chain's own fields (seq, prev_hash, hash)."""

    at: float  # UTC epoch seconds
    action: str  # "POST /v1/tasks/{task_id}/cancel" for a call; "task.placed" for a domain event
    actor: Actor
    org_id: str | None = None  # the organisation the record concerns (for export)
    object_id: str | None = None
    status: int | None = None  # the HTTP answer's status, for a call
    request_id: str | None = None
    body: str | None = None  # sha256 hex of the request body; never the body
    before: str | None = None  # sha256 hex of the object's state before, where known
    after: str | None = None  # ... and after
    detail: Mapping[str, Any] = field(default_factory=dict)  # small, non-secret facts


@dataclass(frozen=True, slots=True)
class Record:
    """One link of the chain, as stored."""

    seq: int
    prev_hash: str
    hash: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the chain's record `seq` had hash `hash` at time `at`."""

    seq: int
    hash: str
    at: float
    key_id: str
    signature: str


@dataclass(frozen=True, slots=True)
class Problem:
    """Something verification found: at which record (or checkpoint), what kind, and why."""

    seq: int
    kind: str  # edited, missing, reordered, inserted, broken_link, checkpoint, truncated
    message: str


def digest(data: bytes) -> str:
    """SHA-256 hex of some bytes (a request body, an object's canonical state)."""
    return hashlib.sha256(data).hexdigest()


def digest_of(obj: object) -> str:
    """SHA-256 hex of an object's RFC 8785 canonical JSON."""
    return digest(canonical_json(obj))


def body_of(seq: int, prev_hash: str, entry: Entry) -> dict:
    """The hashed form of a record: plain JSON, every field but the hash itself."""
    a = entry.actor
    return {
        "seq": seq,
        "prev_hash": prev_hash,
        "at": entry.at,
        "action": entry.action,
        "actor": {
            "role": a.role,
            "org_id": a.org_id,
            "user_id": a.user_id,
            "site_id": a.site_id,
            "token_id": a.token_id,
        },
        "org_id": entry.org_id,
        "object_id": entry.object_id,
        "status": entry.status,
        "request_id": entry.request_id,
        "body": entry.body,
        "before": entry.before,
        "after": entry.after,
        "detail": dict(entry.detail),
    }


def link_hash(seq: int, prev_hash: str, entry: Entry) -> str:
    """The hash of record `seq` holding `entry` after a record whose hash is `prev_hash`."""
    return hashlib.sha256(
        bytes.fromhex(prev_hash) + canonical_json(body_of(seq, prev_hash, entry))
    ).hexdigest()


def extend(head_seq: int, head_hash: str, entries: Iterable[Entry]) -> list[Record]:
    """Chain `entries` after the head (seq 0 and GENESIS for an empty chain), in order."""
    out = []
    for e in entries:
        head_seq += 1
        h = link_hash(head_seq, head_hash, e)
        out.append(Record(head_seq, head_hash, h, e))
        head_hash = h
    return out


def checkpoint_body(seq: int, hash_: str, at: float, key_id: str) -> bytes:
    return canonical_json({"seq": seq, "hash": hash_, "at": at, "key_id": key_id})


def sign_head(seq: int, hash_: str, at: float, key: SigningKey) -> Checkpoint:
    """The hub's signed checkpoint of the chain's head."""
    sig = key.sign(checkpoint_body(seq, hash_, at, key.key_id))
    return Checkpoint(seq, hash_, at, key.key_id, sig)


def verify(
    records: Sequence[Record],
    checkpoints: Sequence[Checkpoint] = (),
    public_keys: Mapping[str, str] | None = None,
    head: tuple[int, str] | None = None,
) -> list[Problem]:
    """Every problem in a chain read in stored order (by seq): an edited record (its content no
    longer gives its hash), a deleted one (a gap in seq, or a link to a hash that is not the
    previous record's), a reordered or inserted one (seq out of order, or a broken link); a
    checkpoint with a bad signature or an unknown key, or one the chain no longer passes through
    (a record rewritten with recomputed hashes, or the tail truncated after it); and, given the
    store's `head` (seq, hash), a chain that ends elsewhere. `public_keys`: key id → base64url
    Ed25519 public key (every key the hub ever had). Empty: the chain is intact."""
    problems: list[Problem] = []
    expected_seq, prev = 1, GENESIS
    hashes: dict[int, str] = {}
    for r in records:
        if r.seq > expected_seq:
            gap = (
                f"record {expected_seq}"
                if r.seq == expected_seq + 1
                else f"records {expected_seq}..{r.seq - 1}"
            )
            problems.append(Problem(expected_seq, "missing", f"{gap} missing (deleted?)"))
        elif r.seq < expected_seq:
            problems.append(
                Problem(
                    r.seq,
                    "reordered",
                    f"record {r.seq} after record {expected_seq - 1}: out of order or inserted",
                )
            )
        if link_hash(r.seq, r.prev_hash, r.entry) != r.hash:
            problems.append(
                Problem(r.seq, "edited", f"record {r.seq}: its content does not match its hash")
            )
        if r.prev_hash != prev:
            problems.append(
                Problem(
                    r.seq,
                    "broken_link",
                    f"record {r.seq}: prev_hash is not the hash of the record before it "
                    "(a record before it was deleted, inserted or swapped)",
                )
            )
        prev = r.hash
        expected_seq = max(expected_seq, r.seq + 1)
        hashes.setdefault(r.seq, r.hash)
    last = records[-1].seq if records else 0
    keys = public_keys or {}
    for c in checkpoints:
        pub = keys.get(c.key_id)
        if pub is None:
            problems.append(
                Problem(c.seq, "checkpoint", f"checkpoint at {c.seq}: unknown key {c.key_id!r}")
            )
            continue
        if not verify_signature(pub, checkpoint_body(c.seq, c.hash, c.at, c.key_id), c.signature):
            problems.append(Problem(c.seq, "checkpoint", f"checkpoint at {c.seq}: bad signature"))
            continue
        if c.seq > last:
            problems.append(
                Problem(
                    c.seq,
                    "truncated",
                    f"a signed checkpoint names record {c.seq} but the chain ends at {last}: "
                    "its tail was deleted",
                )
            )
        elif hashes.get(c.seq) != c.hash:
            problems.append(
                Problem(
                    c.seq,
                    "checkpoint",
                    f"record {c.seq} is not the one the signed checkpoint names "
                    "(rewritten, deleted or replaced)",
                )
            )
    if head is not None and head != (last, records[-1].hash if records else GENESIS):
        problems.append(
            Problem(
                head[0],
                "truncated",
                f"the store's head is record {head[0]} but the chain ends at {last}",
            )
        )
    return problems
