"""Service-level agreements: a pool's terms, judged over a window from what the hub observed, and
the credits a breach owes (pure; docs/market.md, "SLAs and reputation").

Everything here takes plain data and ``now``/window bounds; the hub's sweep (hub/sla.py) reads the
observations from the store, calls ``evaluate`` and ``credits``, and writes what they return.

Formulas, over a window ``[start, end)``:

- **availability** = seconds the pool was online ÷ seconds it was observed. The pool's liveness
  is a step function from its transitions (registration or a heartbeat that brings it back:
  online; the liveness sweep, a re-registration without it, retirement: offline); time before its
  first transition is not observed. No transition at all: not judged.
- **queue wait** = the 95th percentile (nearest rank) of placed → started over the attempts
  placed in the window; an attempt still waiting at ``end`` counts with ``end − placed`` (a lower
  bound: it has waited at least that long). None placed: not judged.
- **success rate** = attempts not lost to the site ÷ attempts that ended, over the attempts placed
  in the window that ended by ``end``: SYSTEM_ERROR (the site's fault) counts against; COMPLETE
  and EXECUTOR_ERROR (the user's program failed) count for; CANCELED is left out (the user
  stopped it). None ended: not judged.

A window is evaluated once every attempt placed in it has ended (their charges are then
settled), or one window after its end at the latest (``ready``).

A term is **breached** when its measured figure is worse than the declared one; a breach owes
each organisation with attempts there in the window ``credit_bps`` ÷ 10 000 × what it was charged
for them (``credits``), from ``platform:sla``, under transfer ids derived from the pool, the
window and the organisation, so evaluating a window again never credits twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from cpnet.market import ledger as L

SLA_ACCOUNT = L.SLA
WAIT_PERCENTILE = 95  # the queue-wait term is judged at this percentile (nearest rank)
MIN_WINDOW_S = 3600.0  # the shortest window a pool may declare (the hub may allow shorter)
MAX_WINDOW_S = 30 * 86400.0  # the longest: 30 days
MAX_CREDIT_BPS = 10_000  # a credit is at most everything charged (100 %)
MAX_EVIDENCE_IDS = 20  # attempt ids kept as evidence per kind (the counts are complete)

TERM_NAMES = ("availability", "queue_wait", "success_rate")


class TermsError(ValueError):
    """Terms that cannot be declared: ``field`` names the term, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Terms:
    """What a pool promises, over every window of ``window_s`` seconds (aligned to the epoch)."""

    window_s: float
    credit_bps: int  # credit on a breach: basis points of what affected users were charged
    availability: float | None = None  # least share of the window online, 0..1
    max_queue_wait_s: float | None = None  # most seconds placed → started, at the p95
    success_rate: float | None = None  # least share of ended attempts not lost to the site

    def check(self, min_window_s: float = MIN_WINDOW_S) -> Terms:
        """These terms, or TermsError naming the first term out of bounds."""
        if not min_window_s <= self.window_s <= MAX_WINDOW_S:
            raise TermsError(
                "window_s",
                f"window_s must be {min_window_s:.0f}..{MAX_WINDOW_S:.0f} seconds (30 days), "
                f"got {self.window_s:g}",
            )
        if type(self.credit_bps) is not int or not 0 < self.credit_bps <= MAX_CREDIT_BPS:
            raise TermsError(
                "credit_bps",
                f"credit_bps must be 1..{MAX_CREDIT_BPS} basis points (1000 = 10 % of what "
                f"affected users paid), got {self.credit_bps!r}",
            )
        for name, value in (
            ("availability", self.availability),
            ("success_rate", self.success_rate),
        ):
            if value is not None and not 0.0 < value <= 1.0:
                raise TermsError(name, f"{name} must be a share in (0, 1], got {value:g}")
        if self.max_queue_wait_s is not None and not 0.0 < self.max_queue_wait_s <= self.window_s:
            raise TermsError(
                "max_queue_wait_s",
                f"max_queue_wait_s must be more than 0 and at most the window "
                f"({self.window_s:g} s), got {self.max_queue_wait_s:g}",
            )
        if (
            self.availability is None
            and self.max_queue_wait_s is None
            and self.success_rate is None
        ):
            raise TermsError(
                "availability",
                "declare at least one term: availability, max_queue_wait_s or success_rate",
            )
        return self


@dataclass(frozen=True, slots=True)
class AttemptFact:
    """One attempt placed on the pool, as the hub saw it."""

    id: str
    org_id: str
    placed: float
    started: float | None
    ended: float | None
    state: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One window of one pool judged against its terms, with the evidence."""

    pool_id: str
    start: float
    end: float
    terms: Terms
    availability: float | None
    observed_s: float
    online_s: float
    offline: tuple[tuple[float, float], ...]  # offline intervals within the window
    wait_p95_s: float | None
    waits: int
    slow: tuple[str, ...]  # attempts that waited longer than the term (first MAX_EVIDENCE_IDS)
    success_rate: float | None
    ended: int
    lost: int
    lost_ids: tuple[str, ...]  # attempts that ended SYSTEM_ERROR (first MAX_EVIDENCE_IDS)
    breaches: tuple[str, ...]  # the terms breached, of TERM_NAMES
    orgs: tuple[str, ...]  # organisations with attempts placed on the pool in the window

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    def evidence(self) -> dict:
        """The figures and what they were measured from, for the record and for people."""
        return {
            "availability": {
                "measured": self.availability,
                "declared": self.terms.availability,
                "observed_s": round(self.observed_s, 3),
                "online_s": round(self.online_s, 3),
                "offline": [[round(a, 3), round(b, 3)] for a, b in self.offline],
            },
            "queue_wait": {
                "p95_s": None if self.wait_p95_s is None else round(self.wait_p95_s, 3),
                "declared_s": self.terms.max_queue_wait_s,
                "attempts": self.waits,
                "slow": list(self.slow),
            },
            "success_rate": {
                "measured": self.success_rate,
                "declared": self.terms.success_rate,
                "ended": self.ended,
                "lost": self.lost,
                "lost_attempts": list(self.lost_ids),
            },
            "breaches": list(self.breaches),
        }


def window_of(t: float, window_s: float) -> tuple[float, float]:
    """The window (aligned to multiples of ``window_s`` since the epoch) that holds ``t``."""
    start = math.floor(t / window_s) * window_s
    return start, start + window_s


def due_windows(
    set_at: float, window_s: float, last_end: float | None, now: float, most: int = 24
) -> list[tuple[float, float]]:
    """The whole windows to evaluate now, oldest first: those that began at or after the terms
    were declared (a window is judged only by terms in force for all of it), ended by ``now``,
    and end after ``last_end`` (the last window evaluated). At most ``most`` (a hub that was
    down for long catches up a little each sweep)."""
    first = math.ceil(set_at / window_s) * window_s
    if last_end is not None:
        first = max(first, last_end)
    out = []
    start = first
    while start + window_s <= now and len(out) < most:
        out.append((start, start + window_s))
        start += window_s
    return out


def ready(end: float, window_s: float, unfinished: int, now: float) -> bool:
    """Whether an ended window may be evaluated now: once every attempt placed in it has ended
    (so what its users were charged is settled), or one more window after its end at the latest
    (a task running for longer does not hold the window's credits back for ever)."""
    return now >= end and (unfinished == 0 or now >= end + window_s)


def online_seconds(
    transitions: Sequence[tuple[float, bool]], start: float, end: float
) -> tuple[float, float, tuple[tuple[float, float], ...]]:
    """(observed s, online s, offline intervals) of ``[start, end)`` from (time, online)
    transitions sorted by time (earlier ones give the state at ``start``)."""
    state: bool | None = None
    since = start
    observed = online = 0.0
    offline: list[tuple[float, float]] = []

    def close(until: float) -> None:
        nonlocal observed, online
        if state is None or until <= since:
            return
        observed += until - since
        if state:
            online += until - since
        elif offline and offline[-1][1] == since:
            offline[-1] = (offline[-1][0], until)
        else:
            offline.append((since, until))

    for at, is_online in transitions:
        if at >= end:
            break
        if at <= start:
            state = is_online
            continue
        close(at)
        state, since = is_online, at
    close(end)
    return observed, online, tuple(offline)


def percentile(values: Sequence[float], p: int) -> float:
    """The nearest-rank ``p``-th percentile of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def evaluate(
    pool_id: str,
    terms: Terms,
    start: float,
    end: float,
    transitions: Sequence[tuple[float, bool]],
    attempts: Sequence[AttemptFact],
) -> Evaluation:
    """Judge ``[start, end)`` of a pool against its terms (formulas in the module's doc).
    ``attempts`` are those placed in the window; ``transitions`` its liveness changes, sorted,
    including the last one before ``start``."""
    observed, online, offline = online_seconds(transitions, start, end)
    availability = online / observed if observed > 0 else None
    placed = [a for a in attempts if start <= a.placed < end]
    waits: list[tuple[float, str]] = []
    for a in placed:
        if a.started is not None and a.started < end:
            waits.append((max(0.0, a.started - a.placed), a.id))
        elif a.ended is None or a.ended >= end:
            waits.append((max(0.0, end - a.placed), a.id))  # still waiting at the end
    wait_p95 = percentile([w for w, _ in waits], WAIT_PERCENTILE) if waits else None
    limit = terms.max_queue_wait_s
    slow = tuple(i for w, i in waits if limit is not None and w > limit)[:MAX_EVIDENCE_IDS]
    ended = [a for a in placed if a.ended is not None and a.ended < end and a.state != "CANCELED"]
    lost = [a.id for a in ended if a.state == "SYSTEM_ERROR"]
    success = (len(ended) - len(lost)) / len(ended) if ended else None
    breaches = []
    avail_term = terms.availability
    if avail_term is not None and availability is not None and availability < avail_term:
        breaches.append("availability")
    if limit is not None and wait_p95 is not None and wait_p95 > limit:
        breaches.append("queue_wait")
    if terms.success_rate is not None and success is not None and success < terms.success_rate:
        breaches.append("success_rate")
    return Evaluation(
        pool_id=pool_id,
        start=start,
        end=end,
        terms=terms,
        availability=availability,
        observed_s=observed,
        online_s=online,
        offline=offline,
        wait_p95_s=wait_p95,
        waits=len(waits),
        slow=slow,
        success_rate=success,
        ended=len(ended),
        lost=len(lost),
        lost_ids=tuple(lost[:MAX_EVIDENCE_IDS]),
        breaches=tuple(breaches),
        orgs=tuple(sorted({a.org_id for a in placed})),
    )


def credit_id(pool_id: str, start: float, org_id: str) -> str:
    """The transfer id of a window's credit to one organisation: the same on every re-run."""
    return f"sla:{pool_id}:{int(start)}:{org_id}"


def credit_amount(charged: int, credit_bps: int) -> int:
    """``credit_bps`` of ``charged`` minor units, rounded half-even to the minor unit."""
    exact = Decimal(charged) * Decimal(credit_bps) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def credits(ev: Evaluation, charged: Mapping[str, int], now: float) -> tuple[L.Transfer, ...]:
    """The credits a breached window owes: to each organisation that was charged for attempts
    placed on the pool in the window, ``credit_bps`` of that charge, from ``platform:sla``.
    Nothing when no term was breached or a credit rounds to 0."""
    if not ev.breached:
        return ()
    out = []
    for org_id in sorted(charged):
        amount = credit_amount(charged[org_id], ev.terms.credit_bps)
        if amount <= 0:
            continue
        out.append(
            L.Transfer(
                id=credit_id(ev.pool_id, ev.start, org_id),
                debit=SLA_ACCOUNT,
                credit=L.org_account(org_id),
                amount=amount,
                kind=L.TransferKind.CREDIT,
                at=now,
                memo=f"SLA credit: pool {ev.pool_id} breached {', '.join(ev.breaches)} in the "
                f"window from {int(ev.start)} to {int(ev.end)}",
            )
        )
    return tuple(out)
