"""Binding quotes: kept with their options, used at most once, and the charge cap of the task
that used one (what the ledger caps a task's charge at)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal
from cpnet.errors import Conflict, NotFound, new_id
from cpnet.market import quotes
from cpnet.market.records import QuoteOption, QuoteRecord, utc
from cpnet.store.tables import Quote


def create(
    s: Session,
    who: Principal,
    *,
    spec: dict,
    objective: str,
    options: tuple[quotes.Option, ...],
    fee_bps: int,
    now: float,
    ttl_s: float,
) -> Quote:
    row = Quote(
        id=new_id("quo"),
        org_id=who.org_id,
        user_id=who.user_id,
        spec_hash=quotes.spec_hash(spec),
        spec=spec,
        objective=objective,
        options=[quotes.as_dict(o) for o in options],
        fee_bps=fee_bps,
        created_at=now,
        valid_until=now + ttl_s,
    )
    s.add(row)
    s.flush()
    return row


def get(s: Session, who: Principal, quote_id: str) -> Quote:
    """The caller's organisation's quote; another organisation's answers 404 as if absent."""
    row = s.get(Quote, quote_id)
    if row is None or not who.sees(row.org_id):
        raise NotFound(f"no quote {quote_id!r}; ask for one: POST /v1/quotes", field="quote_id")
    return row


def mark_used(
    s: Session, row: Quote, task_id: str, option: int, use: quotes.Use, now: float
) -> None:
    """Bind the quote to the task, once: a conditional update, so two submissions racing for one
    quote cannot both win on either database."""
    done = s.execute(
        update(Quote)
        .where(Quote.id == row.id, Quote.used_by_task.is_(None))
        .values(
            used_by_task=task_id,
            used_option=option,
            used_at=now,
            charge_cap=use.max_charge,
            overrun_rate=use.overrun_rate,
            overrun_unit=use.overrun_unit,
            currency=use.currency,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise Conflict(
            "the quote was used by another task meanwhile; ask for a new quote "
            "(POST /v1/quotes, `cpnet quote FILE`)",
            field="quote_id",
            code="quote_used",
        )
    s.refresh(row)


@dataclass(frozen=True, slots=True)
class ChargeCap:
    """The most a task submitted with a quote may be charged while it runs as stated (platform
    fee included), and the rate for each extra unit when it runs over."""

    quote_id: str
    task_id: str
    max_charge: float
    overrun_rate: float
    overrun_unit: str  # "hour" (held beyond the stated run time) or "SCU-hour" (beyond its work)
    currency: str
    fee_bps: int


_CAP_OF_TASK = select(
    Quote.id,
    Quote.charge_cap,
    Quote.overrun_rate,
    Quote.overrun_unit,
    Quote.currency,
    Quote.fee_bps,
).where(Quote.used_by_task == bindparam("b_task"))
_CAPS_OF_TASKS = select(*_CAP_OF_TASK.selected_columns, Quote.used_by_task).where(
    Quote.used_by_task.in_(bindparam("b_tasks", expanding=True))
)


def charge_cap(s: Session, task_id: str) -> ChargeCap | None:
    """The task's quoted charge cap, or None when it was not submitted with a quote."""
    # Columns, not the ORM row: every task's settlement asks, and most have no quote.
    row = s.connection().execute(_CAP_OF_TASK, {"b_task": task_id}).first()
    return _cap(row, task_id)


def charge_caps(s: Session, task_ids: list[str]) -> dict[str, ChargeCap]:
    """`charge_cap` of many tasks with one query: task id → cap, for those that have one."""
    rows = s.connection().execute(_CAPS_OF_TASKS, {"b_tasks": task_ids})
    return {r.used_by_task: c for r in rows if (c := _cap(r, r.used_by_task)) is not None}


def _cap(row, task_id: str) -> ChargeCap | None:  # type: ignore[no-untyped-def]
    if row is None or row.charge_cap is None:
        return None
    return ChargeCap(
        quote_id=row.id,
        task_id=task_id,
        max_charge=row.charge_cap,
        overrun_rate=row.overrun_rate or 0.0,
        overrun_unit=row.overrun_unit or "hour",
        currency=row.currency or "CNY",
        fee_bps=row.fee_bps,
    )


def record(row: Quote, rejected: int = 0) -> QuoteRecord:
    opts = [QuoteOption(**o) for o in row.options]
    return QuoteRecord(
        id=row.id,
        org_id=row.org_id,
        objective=row.objective,
        created_at=utc(row.created_at),
        valid_until=utc(row.valid_until),
        fee_bps=row.fee_bps,
        options=opts,
        overruns=quotes.OVERRUN.format(rate="each option's overrun_rate per overrun_unit"),
        rejected=rejected,
        used_by_task=row.used_by_task,
        used_option=row.used_option,
    )
