"""What a task is charged: the pool's price per resource-hour × the metered seconds of what it
reserved, the platform's fee, and the hold placed at submission. One place, so the later price
books, quotes and signed metering replace these functions and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from cpnet.market.money import SCALE, round_minor

BPS = 10_000  # basis points in a whole


def _dec(x: float | int | str) -> Decimal:
    # str() first: Decimal(0.1) would carry the float's binary error into the bill.
    return Decimal(str(x))


def hourly(price: Mapping[str, object], demand: Mapping[str, object]) -> Decimal:
    """Price of holding `demand` (cpu_cores, ram_gb, gpus) for one hour, in major units, from a
    pool descriptor's `price` (cpu_core_hour, ram_gb_hour, gpu_hour): the figures the scheduler's
    ``Price.hourly`` uses. Disk is not charged."""
    total = Decimal(0)
    for res, key in (
        ("cpu_cores", "cpu_core_hour"),
        ("ram_gb", "ram_gb_hour"),
        ("gpus", "gpu_hour"),
    ):
        total += _dec(demand.get(res, 0) or 0) * _dec(price.get(key, 0) or 0)  # type: ignore[arg-type]
    return total


def usage_charge(price: Mapping[str, object], demand: Mapping[str, object], seconds: float) -> int:
    """Minor units owed for holding `demand` on a pool priced `price` for `seconds` of metered
    wall time: hourly × seconds / 3600, rounded half-even once, at the end."""
    if seconds <= 0:
        return 0
    return round_minor(hourly(price, demand) * _dec(seconds) * SCALE / 3600)


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
