"""Money as integers in minor units (fen for CNY): Decimal only at the edges, where text comes in
or goes out; every amount inside the ledger is an ``int``."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from cpnet.errors import Invalid

CURRENCY = "CNY"  # the ledger's one currency
DIGITS = 2  # minor-unit digits of CNY (1 yuan = 100 fen)
SCALE = 10**DIGITS


def parse(text: str | int | float | Decimal, field: str = "amount") -> int:
    """Minor units of an amount written in major units ("12.34" → 1234); Invalid naming `field`
    when it is not a number or has more digits after the point than the currency has."""
    try:
        d = Decimal(str(text).strip())
    except InvalidOperation:
        raise Invalid(f"{text!r} is not an amount (write e.g. 12.34)", field=field) from None
    if not d.is_finite():
        raise Invalid(f"{text!r} is not an amount (write e.g. 12.34)", field=field)
    minor = d * SCALE
    if minor != minor.to_integral_value():
        raise Invalid(
            f"{text} has more than {DIGITS} digits after the point ({CURRENCY} counts in "
            f"1/{SCALE})",
            field=field,
        )
    return int(minor)


def round_minor(value: Decimal) -> int:
    """An exact amount in minor units rounded half-even to a whole minor unit."""
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def fmt(minor: int, currency: str = CURRENCY) -> str:
    """Display form: 1234 → "12.34 CNY", -5 → "-0.05 CNY"."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), SCALE)
    return f"{sign}{whole}.{frac:0{DIGITS}d} {currency}"


def major(minor: int) -> str:
    """Plain major-unit text without the currency, for CSV and JSON: 1234 → "12.34"."""
    return fmt(minor).split(" ")[0]
