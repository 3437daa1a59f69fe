"""SLAs and reputation in the store: pools' liveness transitions, SLA terms (append-only),
evaluations with their evidence, and each pool's latest reputation. The rules are
``cpnet.market.sla`` and ``cpnet.market.reputation``; here their inputs are read and their
answers written, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cpnet.market import ledger as L
from cpnet.market import reputation, sla
from cpnet.registry.model import SlaTermsIn
from cpnet.store.tables import (
    Attempt,
    LedgerTransfer,
    PoolLiveness,
    PoolReputation,
    SlaEvaluation,
    SlaTerms,
    Task,
)

ADMIN, AGENT = "admin", "agent"  # who declared a row of terms

# ---- liveness transitions ----


def mark(s: Session, pool_ids: Iterable[str], online: bool, now: float) -> None:
    """Record that these pools went online (or offline) at ``now``; the caller writes this only
    where the state changed."""
    rows = [{"pool_id": p, "at": now, "online": online} for p in pool_ids]
    if rows:
        s.execute(insert(PoolLiveness), rows)


def transitions(s: Session, pool_id: str, start: float, end: float) -> list[tuple[float, bool]]:
    """The pool's (time, online) transitions in ``[start, end)``, after the last one before
    ``start`` (its state then), oldest first."""
    before = s.execute(
        select(PoolLiveness.at, PoolLiveness.online)
        .where(PoolLiveness.pool_id == pool_id, PoolLiveness.at <= start)
        .order_by(PoolLiveness.at.desc(), PoolLiveness.id.desc())
        .limit(1)
    ).first()
    rows = s.execute(
        select(PoolLiveness.at, PoolLiveness.online)
        .where(PoolLiveness.pool_id == pool_id, PoolLiveness.at > start, PoolLiveness.at < end)
        .order_by(PoolLiveness.at, PoolLiveness.id)
    ).all()
    out = [(before.at, before.online)] if before is not None else []
    return out + [(r.at, r.online) for r in rows]


def all_transitions(s: Session, since: float) -> dict[str, list[tuple[float, bool]]]:
    """Every pool's transitions since ``since``, after its last one before (reputation)."""
    last = (
        select(PoolLiveness.pool_id, func.max(PoolLiveness.id).label("id"))
        .where(PoolLiveness.at <= since)
        .group_by(PoolLiveness.pool_id)
        .subquery()
    )
    out: dict[str, list[tuple[float, bool]]] = {}
    q = select(PoolLiveness.pool_id, PoolLiveness.at, PoolLiveness.online).join(
        last, last.c.id == PoolLiveness.id
    )
    for pool_id, at, online in s.execute(q):
        out.setdefault(pool_id, []).append((at, online))
    q = (
        select(PoolLiveness.pool_id, PoolLiveness.at, PoolLiveness.online)
        .where(PoolLiveness.at > since)
        .order_by(PoolLiveness.at, PoolLiveness.id)
    )
    for pool_id, at, online in s.execute(q):
        out.setdefault(pool_id, []).append((at, online))
    return out


# ---- terms ----


def terms_of(row: SlaTerms) -> sla.Terms:
    return sla.Terms(
        window_s=row.window_s,
        credit_bps=row.credit_bps,
        availability=row.availability,
        max_queue_wait_s=row.max_queue_wait_s,
        success_rate=row.success_rate,
    )


def terms_from(body: SlaTermsIn) -> sla.Terms:
    """The pure terms of a declaration (not yet checked against the bounds)."""
    return sla.Terms(
        window_s=float(body.window_s),
        credit_bps=round(body.credit_percent * 100),
        availability=body.availability,
        max_queue_wait_s=body.max_queue_wait_s,
        success_rate=body.success_rate,
    )


def add_terms(
    s: Session, pool_id: str, terms: sla.Terms, source: str, set_by: str, now: float
) -> SlaTerms:
    """Append terms for the pool (checked by the caller); they are in force from ``now``."""
    row = SlaTerms(
        pool_id=pool_id,
        window_s=terms.window_s,
        credit_bps=terms.credit_bps,
        availability=terms.availability,
        max_queue_wait_s=terms.max_queue_wait_s,
        success_rate=terms.success_rate,
        source=source,
        set_by=set_by,
        set_at=now,
    )
    s.add(row)
    s.flush()
    return row


def declared_by_agent(s: Session, pool_id: str, terms: sla.Terms, now: float) -> bool:
    """Append the terms an agent's pool descriptor declares, unless they are what the agent
    declared last (a re-registration with the same terms changes nothing, and terms a provider
    admin set since stay in force). True when appended."""
    last = s.scalar(
        select(SlaTerms)
        .where(SlaTerms.pool_id == pool_id, SlaTerms.source == AGENT)
        .order_by(SlaTerms.id.desc())
        .limit(1)
    )
    if last is not None and terms_of(last) == terms:
        return False
    add_terms(s, pool_id, terms, AGENT, "agent", now)
    return True


def in_force(s: Session, pool_id: str) -> SlaTerms | None:
    """The pool's newest terms, or None."""
    q = select(SlaTerms).where(SlaTerms.pool_id == pool_id).order_by(SlaTerms.id.desc()).limit(1)
    return s.scalar(q)


def history(s: Session, pool_id: str) -> list[SlaTerms]:
    """Every row of terms the pool declared, oldest first."""
    q = select(SlaTerms).where(SlaTerms.pool_id == pool_id).order_by(SlaTerms.id)
    return list(s.scalars(q))


def all_in_force(s: Session) -> dict[str, SlaTerms]:
    """Per pool with terms, its newest row."""
    newest = select(func.max(SlaTerms.id)).group_by(SlaTerms.pool_id).scalar_subquery()
    return {r.pool_id: r for r in s.scalars(select(SlaTerms).where(SlaTerms.id.in_(newest)))}


# ---- what a window is judged from ----


def attempt_facts(s: Session, pool_id: str, start: float, end: float) -> list[sla.AttemptFact]:
    """The attempts placed on the pool in ``[start, end)``, with their task's organisation."""
    q = (
        select(
            Attempt.id,
            Task.org_id,
            Attempt.created_at,
            Attempt.start_time,
            Attempt.end_time,
            Attempt.state,
        )
        .join(Task, Task.id == Attempt.task_id)
        .where(Attempt.pool_id == pool_id, Attempt.created_at >= start, Attempt.created_at < end)
        .order_by(Attempt.created_at)
    )
    return [sla.AttemptFact(*r) for r in s.execute(q)]


def unfinished(s: Session, pool_id: str, start: float, end: float) -> int:
    """How many attempts placed on the pool in ``[start, end)`` have not ended yet."""
    q = select(func.count()).where(
        Attempt.pool_id == pool_id,
        Attempt.created_at >= start,
        Attempt.created_at < end,
        Attempt.end_time.is_(None),
    )
    return int(s.scalar(q) or 0)


CHARGED_KINDS = (L.TransferKind.PAYOUT.value, L.TransferKind.FEE.value)


def charged(s: Session, pool_id: str, start: float, end: float) -> dict[str, int]:
    """What each organisation was charged (payouts + fees, minor units) for its attempts placed
    on the pool in ``[start, end)``, as the ledger recorded it."""
    q = (
        select(LedgerTransfer.debit, func.sum(LedgerTransfer.amount))
        # through task_id (indexed) as well as attempt_id, so the ledger is not scanned
        .join(
            Attempt,
            (Attempt.task_id == LedgerTransfer.task_id) & (Attempt.id == LedgerTransfer.attempt_id),
        )
        .where(
            Attempt.pool_id == pool_id,
            Attempt.created_at >= start,
            Attempt.created_at < end,
            LedgerTransfer.kind.in_(CHARGED_KINDS),
        )
        .group_by(LedgerTransfer.debit)
    )
    out: dict[str, int] = {}
    for debit, total in s.execute(q):
        org = debit.split(":", 1)[1]  # escrow:<org>
        out[org] = out.get(org, 0) + int(total)
    return out


# ---- evaluations ----


def last_end(s: Session, pool_id: str) -> float | None:
    """The end of the pool's newest evaluated window, or None."""
    return s.scalar(
        select(func.max(SlaEvaluation.window_end)).where(SlaEvaluation.pool_id == pool_id)
    )


def record(
    s: Session, ev: sla.Evaluation, terms_id: int, credited: Mapping[str, int], now: float
) -> bool:
    """Keep an evaluation with its evidence; False when the window was evaluated already (by a
    concurrent sweep: the caller's transaction must then roll back its credits — they would be
    replays anyway, their ids being the same)."""
    try:
        with s.begin_nested():
            s.execute(
                insert(SlaEvaluation).values(
                    pool_id=ev.pool_id,
                    terms_id=terms_id,
                    window_start=ev.start,
                    window_end=ev.end,
                    breached=ev.breached,
                    evidence=ev.evidence(),
                    credits=dict(credited),
                    evaluated_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


def evaluations(s: Session, pool_id: str, limit: int = 20) -> list[SlaEvaluation]:
    """The pool's newest evaluations, newest first."""
    q = (
        select(SlaEvaluation)
        .where(SlaEvaluation.pool_id == pool_id)
        .order_by(SlaEvaluation.window_start.desc())
        .limit(limit)
    )
    return list(s.scalars(q))


def breached_ends(s: Session, since: float) -> dict[str, list[float]]:
    """Per pool, the end times of its breached windows that ended after ``since``."""
    q = select(SlaEvaluation.pool_id, SlaEvaluation.window_end).where(
        SlaEvaluation.breached.is_(True), SlaEvaluation.window_end > since
    )
    out: dict[str, list[float]] = {}
    for pool_id, end in s.execute(q):
        out.setdefault(pool_id, []).append(end)
    return out


# ---- reputation ----


def outcomes(s: Session, since: float) -> dict[str, list[tuple[float, str]]]:
    """Per pool, (end time, state) of its attempts that ended after ``since``."""
    q = select(Attempt.pool_id, Attempt.end_time, Attempt.state).where(Attempt.end_time > since)
    out: dict[str, list[tuple[float, str]]] = {}
    for pool_id, end, state in s.execute(q):
        out.setdefault(pool_id, []).append((end, state))
    return out


def save_reputations(s: Session, reps: Iterable[reputation.Reputation]) -> None:
    """Replace each pool's stored reputation with its new one: one batched upsert (INSERT … ON
    CONFLICT (pool_id) DO UPDATE), so the sweep's write transaction stays short."""
    rows = [
        {"pool_id": r.pool_id, "score": r.score, "evidence": r.evidence(), "at": r.at} for r in reps
    ]
    if not rows:
        return
    conn = s.connection()
    new = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(PoolReputation)
    stmt = new.on_conflict_do_update(
        index_elements=[PoolReputation.pool_id],
        set_={
            "score": new.excluded.score,
            "evidence": new.excluded.evidence,
            "at": new.excluded.at,
        },
    )
    for i in range(0, len(rows), 1000):
        conn.execute(stmt, rows[i : i + 1000])


def scores(s: Session, pool_ids: Iterable[str] | None = None) -> dict[str, float]:
    """Each pool's latest reputation score (pools never evaluated are absent)."""
    q = select(PoolReputation.pool_id, PoolReputation.score)
    if pool_ids is not None:
        q = q.where(PoolReputation.pool_id.in_(list(pool_ids)))
    return dict(s.execute(q).tuples().all())


def reputation_row(s: Session, pool_id: str) -> PoolReputation | None:
    return s.get(PoolReputation, pool_id)


def pools_with_terms(s: Session) -> set[str]:
    return set(s.scalars(select(SlaTerms.pool_id).distinct()))
