"""The hub's SLA shell: declaring terms, the periodic sweep that evaluates each pool's ended
windows and credits breaches through the ledger, refreshing reputations, and showing a pool's
SLA. The rules are market/sla.py and market/reputation.py (pure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal
from cpnet.errors import Invalid, NotFound
from cpnet.market import reputation, sla
from cpnet.market.records import (
    PoolSla,
    ReputationRecord,
    SlaEvaluationRecord,
    SlaTermsRecord,
    utc,
)
from cpnet.registry.model import SlaTermsIn
from cpnet.store import ledger as ledger_store
from cpnet.store import registry
from cpnet.store import sla as sla_store
from cpnet.store.db import Store
from cpnet.store.tables import Pool, SlaEvaluation, SlaTerms

log = logging.getLogger(__name__)


# ---- declaring and showing ----


def set_terms(
    store: Store, who: Principal, pool_id: str, body: SlaTermsIn, min_window_s: float, now: float
) -> PoolSla:
    """Append terms for a pool (its provider's admins); in force from now (whole windows that
    begin after now are judged by them)."""
    try:
        terms = sla_store.terms_from(body).check(min_window_s)
    except sla.TermsError as exc:
        raise Invalid(exc.message, field=exc.field) from None
    with store.tx() as s:
        who.must_see(registry.pool_owner_org(s, pool_id), "pool", pool_id, "pool_id")
        sla_store.add_terms(
            s, pool_id.lower(), terms, sla_store.ADMIN, who.user_id or who.token_id, now
        )
    with store.read() as s:
        return show(s, pool_id)


def _terms(row: SlaTerms) -> SlaTermsRecord:
    return SlaTermsRecord(
        id=row.id,
        window_s=row.window_s,
        credit_percent=row.credit_bps / 100,
        availability=row.availability,
        max_queue_wait_s=row.max_queue_wait_s,
        success_rate=row.success_rate,
        source=row.source,  # type: ignore[arg-type]
        set_by=row.set_by,
        set_at=utc(row.set_at),
    )


def _evaluation(row: SlaEvaluation) -> SlaEvaluationRecord:
    return SlaEvaluationRecord(
        window_start=utc(row.window_start),
        window_end=utc(row.window_end),
        terms_id=row.terms_id,
        breached=row.breached,
        breaches=list(row.evidence.get("breaches", [])),
        evidence=row.evidence,
        credits={k: int(v) for k, v in (row.credits or {}).items()},
        evaluated_at=utc(row.evaluated_at),
    )


def show(s: Session, pool_id: str, limit: int = 20) -> PoolSla:
    """A pool's terms, their history, its newest evaluations and credits, and its reputation."""
    pool = s.get(Pool, pool_id.lower())
    if pool is None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    rows = sla_store.history(s, pool.id)
    evals = [_evaluation(r) for r in sla_store.evaluations(s, pool.id, limit)]
    rep = sla_store.reputation_row(s, pool.id)
    return PoolSla(
        pool_id=pool.id,
        pool_name=pool.name,
        terms=_terms(rows[-1]) if rows else None,
        history=[_terms(r) for r in rows],
        evaluations=evals,
        credited=sum(sum(e.credits.values()) for e in evals),
        reputation=None
        if rep is None
        else reputation_record(rep.pool_id, rep.score, rep.evidence, rep.at),
    )


def reputation_record(pool_id: str, score: float, evidence: dict, at: float) -> ReputationRecord:
    return ReputationRecord(pool_id=pool_id, score=score, evidence=evidence, at=utc(at))


def reputations(s: Session, pool_id: str | None = None) -> list[ReputationRecord]:
    """Every unretired pool's stored reputation (or one pool's), best first."""
    from cpnet.store.tables import PoolReputation

    q = select(PoolReputation).join(Pool, Pool.id == PoolReputation.pool_id)
    if pool_id is not None:
        if s.get(Pool, pool_id.lower()) is None:
            raise NotFound(f"no pool {pool_id!r}", field="pool_id")
        q = q.where(PoolReputation.pool_id == pool_id.lower())
    else:
        q = q.where(Pool.retired_at.is_(None))
    rows = sorted(s.scalars(q), key=lambda r: (-r.score, r.pool_id))
    return [reputation_record(r.pool_id, r.score, r.evidence, r.at) for r in rows]


# ---- the sweep ----


@dataclass(frozen=True, slots=True)
class SweepResult:
    evaluated: int  # windows evaluated
    breached: int  # of which breached
    credits: int  # credit transfers posted (new ones)
    reputations: int  # pools whose reputation was refreshed


def evaluate_due(store: Store, now: float) -> tuple[int, int, int]:
    """Evaluate every pool's whole windows that ended by ``now`` and were not evaluated yet,
    each in its own transaction with its credits: (evaluated, breached, credits posted)."""
    with store.read() as s:
        in_force = {
            pid: (row.id, row.set_at, sla_store.terms_of(row))
            for pid, row in sla_store.all_in_force(s).items()
        }
    evaluated = breached = posted = 0
    for pool_id, (terms_id, set_at, terms) in sorted(in_force.items()):
        with store.read() as s:
            due = sla.due_windows(set_at, terms.window_s, sla_store.last_end(s, pool_id), now)
        for start, end in due:
            with store.read() as s:
                waiting = sla_store.unfinished(s, pool_id, start, end)
            if not sla.ready(end, terms.window_s, waiting, now):
                break  # its attempts are still running: this window (and later ones) wait
            with store.tx() as s:
                ev = sla.evaluate(
                    pool_id,
                    terms,
                    start,
                    end,
                    sla_store.transitions(s, pool_id, start, end),
                    sla_store.attempt_facts(s, pool_id, start, end),
                )
                owed = sla.credits(ev, sla_store.charged(s, pool_id, start, end), now)
                credited = {t.credit.split(":", 1)[1]: t.amount for t in owed}
                if not sla_store.record(s, ev, terms_id, credited, now):
                    continue  # evaluated already (another hub process): nothing to post
                if owed:
                    posted += ledger_store.post_many(s, owed)
                evaluated += 1
                breached += ev.breached
            if ev.breached:
                log.warning(
                    "pool %s breached %s in [%d, %d): credited %s",
                    pool_id,
                    ", ".join(ev.breaches),
                    start,
                    end,
                    credited or "nothing (no charges)",
                )
    return evaluated, breached, posted


def refresh_reputations(store: Store, now: float, half_life_s: float) -> int:
    """Recompute every unretired pool's reputation at ``now``, written in one transaction."""
    since = now - reputation.HORIZON_HALF_LIVES * half_life_s
    with store.read() as s:  # read, then compute, then one short write
        pools = s.scalars(select(Pool.id).where(Pool.retired_at.is_(None))).all()
        outcomes = sla_store.outcomes(s, since)
        moves = sla_store.all_transitions(s, since)
        breaches = sla_store.breached_ends(s, since)
    reps = [
        reputation.of(
            pid,
            now,
            outcomes.get(pid, ()),
            moves.get(pid, ()),
            breaches.get(pid, ()),
            half_life_s,
        )
        for pid in pools
    ]
    with store.tx() as s:
        sla_store.save_reputations(s, reps)
    return len(reps)


def sweep(store: Store, now: float, half_life_s: float) -> SweepResult:
    """One SLA sweep: evaluate ended windows (crediting breaches), then refresh reputations
    (so a breach found now already weighs on the scores)."""
    evaluated, breached, posted = evaluate_due(store, now)
    n = refresh_reputations(store, now, half_life_s)
    return SweepResult(evaluated, breached, posted, n)
