"""Money: the one place that parses, formats and serializes dollar amounts.

Amounts are `Decimal` end to end. People's input (`--llm-budget=2.00`, `llm_prices`, `costguard merge --budget`)
goes through `parse_usd`, strictly: a gate that reads "2,00" as $200 or an empty value as "no budget" fails
open. Reports convert to a JSON number only at the edge (`usd_to_json`) and back with `usd_from_json`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAX_USD",
    "PICODOLLAR",
    "MoneyError",
    "format_usd",
    "parse_percent",
    "parse_usd",
    "to_decimal",
    "usd_from_json",
    "usd_to_json",
]

MAX_USD = Decimal(1_000_000)
"""The largest amount a person may type: a budget above a million dollars is a typo, not a budget."""
PICODOLLAR = Decimal("1e-12")
"""The finest amount a budget can hold: the ledgers count whole picodollars."""

# ASCII digits only (`str.isdigit` also accepts fullwidth and Arabic-Indic digits), one optional dot, no
# exponent: 1e-99999999 would make Decimal arithmetic crawl, and nobody types a budget that way.
_AMOUNT = re.compile(r"\$?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_MAX_LENGTH = 40


class MoneyError(ValueError):
    """A value is not an amount of money; the message names where it came from."""


def parse_usd(value: object, *, source: str) -> Decimal:
    """Parse a dollar amount a person typed ("2", "2.00", "$0.50"): finite, 0 or more, at most `MAX_USD`.

    `source` names where the value came from ("--llm-budget", "llm_budget in pytest.ini") in the error.
    """
    text = str(value).strip()
    if not text:
        raise MoneyError(f"{source}: the value is empty; give a dollar amount such as 2.00")
    if len(text) > _MAX_LENGTH:
        raise MoneyError(f"{source}: {text[:_MAX_LENGTH]!r}... is not a dollar amount (use e.g. 2.00)")
    if "," in text and _AMOUNT.fullmatch(text.replace(",", ".", 1)):
        raise MoneyError(f"{source}: {text!r} has a comma; use a dot: {text.replace(',', '.', 1)}")
    if text.startswith("-") and _AMOUNT.fullmatch(text[1:]):
        raise MoneyError(f"{source}: {text!r} is negative; a budget is 0 or more dollars")
    if not _AMOUNT.fullmatch(text):
        raise MoneyError(f"{source}: {text!r} is not a dollar amount (use e.g. 2.00)")
    amount = Decimal(text.removeprefix("$"))
    if amount > MAX_USD:
        raise MoneyError(f"{source}: {text!r} is more than {format_usd(MAX_USD)}; is it a typo?")
    if amount and amount % PICODOLLAR:
        raise MoneyError(f"{source}: {text!r} is finer than a picodollar ($0.000000000001) and cannot be held")
    return amount


def parse_percent(value: object, *, source: str) -> Decimal:
    """Parse a percentage ("20", "20%", "12.5"), 0 or more."""
    text = str(value).strip()
    number = text.removesuffix("%").strip()
    if not number or len(number) > _MAX_LENGTH or not re.fullmatch(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", number):
        raise MoneyError(f"{source}: {text!r} is not a percentage (use e.g. 20 or 20%)")
    return Decimal(number)


def to_decimal(value: Decimal | int | float | str, *, name: str = "amount") -> Decimal:
    """Convert an amount given by code to a finite Decimal (floats via their shortest repr, never binary noise)."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: {value!r} is not a dollar amount")
    if isinstance(value, Decimal):
        result = value
    else:
        try:
            result = Decimal(repr(value) if isinstance(value, float) else value)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueError(f"{name}: {value!r} is not a dollar amount") from None
    if not result.is_finite():
        raise ValueError(f"{name}: {value!r} is not a finite dollar amount")
    return result


def format_usd(amount: Decimal | float | int) -> str:
    """Format dollars for people: cents from a dollar up, three significant digits below, never an exponent.

    `$1,234.50`, `$2.00`, `$0.50`, `$0.0319`, `$0.001`, `$0.0000001`; a minus sign only for a negative amount.
    """
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    places = max(2, 2 - value.adjusted())
    whole, _, fraction = f"{value:.{places}f}".partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"


_JSON_PLACES = Decimal("1e-10")


def usd_to_json(amount: Decimal) -> float:
    """Convert money to a JSON number at the edge, to 10 decimal places (far below a token's price)."""
    return float(amount.quantize(_JSON_PLACES))  # what round(amount, 10) does, without its dispatch


def usd_from_json(value: Any, *, default: Decimal = Decimal(0)) -> Decimal:
    """Read an amount a report or the wire carries (a JSON number or Decimal text); None gives `default`."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise MoneyError(f"{value!r} is not an amount")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise MoneyError(f"{value!r} is not an amount") from None
    if not result.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount")
    return result
