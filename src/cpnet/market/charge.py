"""What a task is charged (pure): each attempt at the price that was in force on its pool when it
was placed (recorded on the attempt: ``attempt_price``) × its metered seconds, capped by the
task's binding quote, the platform's fee taken out of the charge, and the hold placed at
submission. docs/market.md has the rules and a worked example.

A recorded attempt price is plain JSON: ``currency``, ``cpu_core_hour``, ``ram_gb_hour``,
``gpu_hour`` and, when the attempt's work is priced per SCU-hour, ``per_scu_hour``, ``profile``
and ``scu_rate`` (the pool's SCU per hour of that profile; None when not measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from cpnet.market.money import SCALE, round_minor
from cpnet.sched.snapshot import Price

BPS = 10_000  # basis points in a whole


def _dec(x: float | int | str) -> Decimal:
    # str() first: Decimal(0.1) would carry the float's binary error into the bill.
    return Decimal(str(x))


def attempt_price(
    price: Price,
    *,
    profile: str | None = None,
    work_scu_h: float | None = None,
    scu_rate: float | None = None,
) -> dict[str, object]:
    """The price an attempt is charged at, to record on it when it is placed: the pool's
    effective price (its book's entry in force, dynamic rule applied; else what its agent
    declared). When the task states its work in SCU-hours of a profile the pool prices per
    SCU-hour, the attempt is SCU-priced, as the scheduler costed it (sched/terms.work_cost)."""
    out: dict[str, object] = {
        "currency": price.currency,
        "cpu_core_hour": price.cpu_core_hour,
        "ram_gb_hour": price.ram_gb_hour,
        "gpu_hour": price.gpu_hour,
    }
    per = price.per_scu_hour(profile) if work_scu_h is not None else None
    if per is not None:
        out["per_scu_hour"] = per
        out["profile"] = profile
        out["scu_rate"] = scu_rate if scu_rate and scu_rate > 0 else None
        out["work_scu_h"] = work_scu_h
    return out


def scu_hours(price: Mapping[str, object], seconds: float) -> float | None:
    """SCU-hours of work an SCU-priced attempt did in `seconds` of wall time: seconds × the
    pool's SCU rate of the profile; the work the task stated when the rate is not known; None
    for an attempt priced per resource-hour."""
    if price.get("per_scu_hour") is None:
        return None
    rate = price.get("scu_rate")
    if rate:
        return float(rate) * max(0.0, seconds) / 3600.0  # type: ignore[arg-type]
    return float(price.get("work_scu_h") or 0.0)  # type: ignore[arg-type]


def hourly(price: Mapping[str, object], demand: Mapping[str, object]) -> Decimal:
    """Price of one hour of the attempt, in major units: for an SCU-priced attempt the price per
    SCU-hour × the pool's SCU rate; else the price of holding `demand` (cpu_cores, ram_gb,
    gpus) for an hour at `price` (cpu_core_hour, ram_gb_hour, gpu_hour), the figures the
    scheduler's ``Price.hourly`` uses. Disk is not charged."""
    per = price.get("per_scu_hour")
    if per is not None and price.get("scu_rate"):
        return _dec(per) * _dec(price["scu_rate"])  # type: ignore[arg-type]
    total = Decimal(0)
    for res, key in (
        ("cpu_cores", "cpu_core_hour"),
        ("ram_gb", "ram_gb_hour"),
        ("gpus", "gpu_hour"),
    ):
        total += _dec(demand.get(res, 0) or 0) * _dec(price.get(key, 0) or 0)  # type: ignore[arg-type]
    return total


def usage_charge(price: Mapping[str, object], demand: Mapping[str, object], seconds: float) -> int:
    """Minor units owed for an attempt that held `demand` at `price` for `seconds` of metered
    wall time: hourly × seconds / 3600, or for an SCU-priced attempt its SCU-hours (``scu_hours``)
    × the price per SCU-hour; rounded half-even once, at the end."""
    if seconds <= 0:
        return 0
    per = price.get("per_scu_hour")
    if per is not None:
        work = scu_hours(price, seconds) or 0.0
        return round_minor(_dec(per) * _dec(work) * SCALE)  # type: ignore[arg-type]
    return round_minor(hourly(price, demand) * _dec(seconds) * SCALE / 3600)


def quoted_cap(
    max_charge: float,
    overrun_rate: float,
    overrun_unit: str,
    *,
    stated_s: float,
    used_s: float,
    stated_scu_h: float | None = None,
    used_scu_h: float | None = None,
) -> int:
    """The most a task submitted with a quote may be charged, minor units: the option's
    ``max_charge`` while it stays within the work it stated, plus ``overrun_rate`` for each
    unit it ran over — each hour held past ``stated_s`` (``overrun_unit`` "hour"), or each
    SCU-hour of work past ``stated_scu_h`` ("SCU-hour")."""
    if overrun_unit == "SCU-hour" and stated_scu_h is not None and used_scu_h is not None:
        extra = max(0.0, used_scu_h - stated_scu_h)
    else:
        extra = max(0.0, used_s - stated_s) / 3600.0
    return round_minor((_dec(max_charge) + _dec(overrun_rate) * _dec(extra)) * SCALE)


def cap_lines(charges: Iterable[int], cap: int) -> list[int]:
    """Charges cut, in order, so that their sum never passes `cap` (the first attempts are
    paid in full, the rest of the cap goes to the next one, later ones get 0)."""
    out, left = [], max(0, cap)
    for c in charges:
        take = min(max(c, 0), left)
        out.append(take)
        left -= take
    return out


def split(charge: int, fee_bps: int) -> tuple[int, int]:
    """(provider payout, platform fee) of a charge: the fee rounded half-even, the payout the
    rest, so the two add up to the charge exactly."""
    fee = round_minor(Decimal(charge) * fee_bps / BPS)
    return charge - fee, fee


def hold_amount(
    costs: Iterable[float], margin: float, minimum: int, budget: float | None = None
) -> int:
    """The hold for a new task, in minor units: its budget if it gives one, else the largest
    predicted cost (major units) over the pools that could run it × the overrun margin, rounded
    half-even, and never below `minimum`."""
    if budget is not None:
        return max(round_minor(_dec(budget) * SCALE), minimum)
    top = max((_dec(c) for c in costs), default=Decimal(0))
    return max(round_minor(top * _dec(margin) * SCALE), minimum)
