"""Signed metering in the store: sites' usage keys, and every usage record received, judged
(`cpnet.market.metering.judge`) and kept as evidence in the caller's transaction.

A record that arrives with an attempt's final update is judged in the transaction that ends the
attempt, before the task is settled, so settlement sees it (store/ledger.metered).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cpnet.errors import Conflict, Invalid
from cpnet.ident.keys import b64url_decode
from cpnet.market import metering as M
from cpnet.store.tables import Attempt, SiteKey, UsageRecord

ACCEPTED = M.Verdict.ACCEPTED.value


def register_key(s: Session, site_id: str, key: M.UsageKey, now: float) -> str:
    """Record ``key`` as one of the site's usage keys (its agent's registration names it);
    answers its key id. A key already registered for another site is refused (409)."""
    try:
        raw = b64url_decode(key.public_key)
    except ValueError as exc:
        raise Invalid(f"not a base64url key: {exc}", field="usage_key.public_key") from None
    if len(raw) != 32:
        raise Invalid("an Ed25519 public key is 32 bytes", field="usage_key.public_key")
    kid = hashlib.sha256(raw).hexdigest()[:16]  # as ident.keys.SigningKey.key_id
    row = s.get(SiteKey, kid)
    if row is None:
        try:
            with s.begin_nested():
                s.add(
                    SiteKey(
                        key_id=kid,
                        site_id=site_id,
                        public_key=key.public_key,
                        created_at=now,
                        last_seen_at=now,
                    )
                )
        except IntegrityError:  # registered meanwhile by a concurrent transaction
            row = s.get(SiteKey, kid)
    if row is not None:
        if row.site_id != site_id:
            raise Conflict(
                "this usage key is registered for another site; each site's agent needs its "
                "own key (remove the agent's usage key file to make a new one)",
                field="usage_key.public_key",
            )
        row.last_seen_at = now
    s.info.pop(_KEYS_CACHE, None)
    return kid


# The statements a final update runs, built once (see store/tasks._event for why).
_SITE_KEYS = select(SiteKey.key_id, SiteKey.public_key).where(
    SiteKey.site_id == bindparam("b_site")
)
_OBSERVED = select(
    Attempt.id,
    Attempt.site_id,
    Attempt.task_id,
    Attempt.pool_id,
    Attempt.created_at,
    Attempt.start_time,
    Attempt.end_time,
).where(Attempt.id == bindparam("b_id"))
_PRIOR = select(UsageRecord.record_id, UsageRecord.envelope).where(
    (UsageRecord.record_id == bindparam("b_rid")) | (UsageRecord.attempt_id == bindparam("b_aid")),
    UsageRecord.verdict == ACCEPTED,
)
_INSERT = insert(UsageRecord.__table__)
_KEYS_CACHE = "cpnet.usage.site_keys"


def site_keys(s: Session, site_id: str) -> dict[str, str]:
    """Every usage key of the site (rotated ones too): key id → public key. Read once per
    transaction (an agent's batch of final updates judges many records of one site)."""
    cache = s.info.setdefault(_KEYS_CACHE, {})
    if site_id not in cache:
        rows = s.connection().execute(_SITE_KEYS, {"b_site": site_id})
        cache[site_id] = {kid: pub for kid, pub in rows}
    return dict(cache[site_id])


def observed(s: Session, attempt_id: str | None) -> M.Observed | None:
    """What the hub knows of an attempt (None: no such attempt)."""
    if attempt_id is None:
        return None
    s.flush()  # the attempt's state set on its ORM object in this transaction
    a = s.connection().execute(_OBSERVED, {"b_id": attempt_id}).first()
    return None if a is None else M.Observed(*a)


def _prior(s: Session, record_id: str | None, attempt_id: str | None) -> dict[str, Any] | None:
    """The record accepted under this record id, or else for this attempt (None: none)."""
    if record_id is None and attempt_id is None:
        return None
    rows = list(s.connection().execute(_PRIOR, {"b_rid": record_id, "b_aid": attempt_id}))
    for rid, env in rows:
        if record_id is not None and rid == record_id:
            return env["record"]
    return rows[0][1]["record"] if rows else None


def take(
    s: Session, site_id: str, envelope: Mapping[str, Any], now: float, *, again: bool = True
) -> M.Judgement:
    """Judge a usage record sent by ``site_id``'s agent and keep it as evidence.

    Every record is kept with its verdict, except a duplicate of an accepted one (a no-op) and
    the exact same refused envelope again (kept once)."""
    rec = envelope.get("record") if isinstance(envelope, Mapping) else None
    rec = rec if isinstance(rec, Mapping) else {}
    rid, aid = M.identifier(rec.get("record_id")), M.identifier(rec.get("attempt_id"))
    seen = observed(s, aid)
    j = M.judge(
        envelope,
        site_id=site_id,
        keys=site_keys(s, site_id),
        observed=seen,
        prior=_prior(s, rid, aid),
        received_at=now,
    )
    if j.verdict is M.Verdict.DUPLICATE:
        return j
    dig = M.digest(envelope)
    if j.verdict.refused and s.scalar(
        select(UsageRecord.id).where(
            UsageRecord.digest == dig,
            UsageRecord.site_id == site_id,
            UsageRecord.verdict == j.verdict.value,
        )
    ):
        return j
    row = _row(site_id, envelope, j, dig, seen, now)
    try:
        with s.begin_nested():
            s.connection().execute(_INSERT, row)
    except IntegrityError:
        # Another transaction accepted a record for this id or attempt meanwhile: judge again,
        # once, against it (a duplicate, or a conflict kept as evidence).
        if not again:
            raise
        return take(s, site_id, envelope, now, again=False)
    return j


# `take_many`'s marker for a record whose attempt was not loaded by the caller: read it.
LOOKUP = object()


def take_many(
    s: Session,
    site_id: str,
    items: Sequence[tuple[Mapping[str, Any], M.Observed | object | None]],
    now: float,
) -> list[M.Judgement]:
    """`take` for a batch of one site's records, judged in order as `take` would judge them one
    after another, with the store read and written set-wise: one query for the attempts not
    given, one for the records accepted before, one for refused ones kept before, one multi-row
    INSERT (in one savepoint). Each item is (envelope, the hub's view of the attempt the record
    names as it stands when the record is judged, or LOOKUP to read it). The signature is still
    checked record by record. Should a concurrent transaction accept a record for one of these
    ids or attempts meanwhile (the INSERT fails), the batch is judged again by `take`, one by
    one, against it."""
    if not items:
        return []
    parsed = []
    for envelope, _ in items:
        rec = envelope.get("record") if isinstance(envelope, Mapping) else None
        rec = rec if isinstance(rec, Mapping) else {}
        parsed.append((M.identifier(rec.get("record_id")), M.identifier(rec.get("attempt_id"))))
    wanted = sorted(
        {
            aid
            for (_, aid), (_, seen) in zip(parsed, items, strict=True)
            if seen is LOOKUP and aid is not None
        }
    )
    looked: dict[str, M.Observed] = {}
    if wanted:
        s.flush()  # attempts' states set on ORM objects in this transaction
        for a in s.connection().execute(_OBSERVED_MANY, {"b_ids": wanted}):
            looked[a.id] = M.Observed(*a)
    by_rid: dict[str, Mapping[str, Any]] = {}
    by_aid: dict[str, Mapping[str, Any]] = {}
    rids = sorted({rid for rid, _ in parsed if rid is not None})
    aids = sorted({aid for _, aid in parsed if aid is not None})
    if rids or aids:
        rows = s.connection().execute(_PRIOR_MANY, {"b_rids": rids, "b_aids": aids})
        for rid, aid, env in rows:
            by_rid[rid] = env["record"]
            if aid is not None:
                by_aid[aid] = env["record"]
    keys = site_keys(s, site_id)
    out: list[M.Judgement] = []
    kept: list[tuple[int, M.Judgement, str, M.Observed | None]] = []
    for i, ((envelope, seen), (rid, aid)) in enumerate(zip(items, parsed, strict=True)):
        obs = looked.get(aid) if seen is LOOKUP and aid is not None else seen
        obs = obs if isinstance(obs, M.Observed) else None
        prior = by_rid.get(rid) if rid is not None and rid in by_rid else None
        if prior is None and aid is not None:
            prior = by_aid.get(aid)
        j = M.judge(
            envelope, site_id=site_id, keys=keys, observed=obs, prior=prior, received_at=now
        )
        out.append(j)
        if j.verdict is M.Verdict.DUPLICATE:
            continue
        if j.verdict is M.Verdict.ACCEPTED:  # what a later record in the batch meets
            rec = envelope["record"]
            if j.record_id is not None:
                by_rid[j.record_id] = rec
            if j.attempt_id is not None:
                by_aid[j.attempt_id] = rec
        kept.append((i, j, M.digest(envelope), obs))
    refused = sorted({dig for _, j, dig, _ in kept if j.verdict.refused})
    seen_before: set[tuple[str, str]] = set()
    if refused:
        rows = s.connection().execute(_REFUSED_MANY, {"b_site": site_id, "b_digests": refused})
        seen_before = {(dig, verdict) for dig, verdict in rows}
    new_rows = []
    for i, j, dig, obs in kept:
        if j.verdict.refused:
            if (dig, j.verdict.value) in seen_before:
                continue  # the exact same refused envelope was kept before
            seen_before.add((dig, j.verdict.value))
        new_rows.append(_row(site_id, items[i][0], j, dig, obs, now))
    if not new_rows:
        return out
    try:
        with s.begin_nested():
            s.connection().execute(_INSERT, new_rows)
    except IntegrityError:
        return [take(s, site_id, envelope, now) for envelope, _ in items]
    return out


def _row(
    site_id: str,
    envelope: Mapping[str, Any],
    j: M.Judgement,
    dig: str,
    seen: M.Observed | None,
    now: float,
) -> dict[str, Any]:
    """A judged record's row (_INSERT)."""
    return {
        "site_id": site_id,
        "record_id": j.record_id,
        "attempt_id": j.attempt_id,
        "task_id": seen.task_id if seen is not None else None,
        "key_id": j.key_id,
        "verdict": j.verdict.value,
        "reason": j.reason,
        "field": j.field,
        "wall_s": j.wall_s if j.verdict is M.Verdict.ACCEPTED else None,
        "digest": dig,
        "envelope": dict(envelope),
        "received_at": now,
    }


_OBSERVED_MANY = select(*_OBSERVED.selected_columns).where(
    Attempt.id.in_(bindparam("b_ids", expanding=True))
)
_PRIOR_MANY = select(UsageRecord.record_id, UsageRecord.attempt_id, UsageRecord.envelope).where(
    UsageRecord.record_id.in_(bindparam("b_rids", expanding=True))
    | UsageRecord.attempt_id.in_(bindparam("b_aids", expanding=True)),
    UsageRecord.verdict == ACCEPTED,
)
_REFUSED_MANY = select(UsageRecord.digest, UsageRecord.verdict).where(
    UsageRecord.digest.in_(bindparam("b_digests", expanding=True)),
    UsageRecord.site_id == bindparam("b_site"),
    UsageRecord.verdict != ACCEPTED,
)


def accepted_walls(s: Session, task_id: str) -> dict[str, float]:
    """attempt id → wall_s of its accepted usage record, for a task's attempts."""
    rows = s.connection().execute(_WALLS, {"b_task": task_id})
    return {aid: float(w) for aid, w in rows if aid is not None and w is not None}


def accepted_walls_of(s: Session, task_ids: Sequence[str]) -> dict[str, float]:
    """`accepted_walls` of many tasks' attempts, with one query."""
    rows = s.connection().execute(_WALLS_MANY, {"b_tasks": list(task_ids)})
    return {aid: float(w) for aid, w in rows if aid is not None and w is not None}


_WALLS_MANY = select(UsageRecord.attempt_id, UsageRecord.wall_s).where(
    UsageRecord.task_id.in_(bindparam("b_tasks", expanding=True)), UsageRecord.verdict == ACCEPTED
)
_WALLS = select(UsageRecord.attempt_id, UsageRecord.wall_s).where(
    UsageRecord.task_id == bindparam("b_task"), UsageRecord.verdict == ACCEPTED
)


def _view(r: UsageRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "received_at": r.received_at,
        "site_id": r.site_id,
        "record_id": r.record_id,
        "attempt_id": r.attempt_id,
        "task_id": r.task_id,
        "key_id": r.key_id,
        "verdict": r.verdict,
        "reason": r.reason,
        "field": r.field,
        "wall_s": r.wall_s,
        "digest": r.digest,
        "envelope": r.envelope,
    }


def of_task(s: Session, task_id: str) -> list[dict[str, Any]]:
    """Every record received about a task's attempts, oldest first."""
    q = select(UsageRecord).where(UsageRecord.task_id == task_id).order_by(UsageRecord.id)
    return [_view(r) for r in s.scalars(q)]


def of_sites(s: Session, site_ids: list[str], limit: int) -> list[dict[str, Any]]:
    """The newest records the sites' agents sent (at most ``limit``), newest first."""
    if not site_ids:
        return []
    q = (
        select(UsageRecord)
        .where(UsageRecord.site_id.in_(site_ids))
        .order_by(UsageRecord.id.desc())
        .limit(limit)
    )
    return [_view(r) for r in s.scalars(q)]
