"""Money: integer minor units with an ISO 4217 currency. No floats anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from orderpay.errors import InvalidAmount, UnknownCurrency

# Minor-unit exponents of the currencies orderpay's markets use (ISO 4217).
CURRENCY_EXPONENTS: dict[str, int] = {
    "BIF": 0,
    "CDF": 2,
    "EUR": 2,
    "GHS": 2,
    "GNF": 0,
    "KES": 2,
    "LRD": 2,
    "NGN": 2,
    "RWF": 0,
    "SZL": 2,
    "TZS": 2,
    "UGX": 0,
    "USD": 2,
    "XAF": 0,
    "XOF": 0,
    "ZAR": 2,
    "ZMW": 2,
}

# The largest amount orderpay stores, in minor units. Far below 2**63 so sums of many line
# items cannot overflow a BIGINT, and below 2**53 so JSON clients that use doubles stay exact.
MAX_MINOR_UNITS = 10**15
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def currency_code(raw: str) -> str:
    """Validate and normalise an ISO 4217 code (case-insensitive on input)."""
    code = raw.strip().upper()
    if code not in CURRENCY_EXPONENTS:
        known = ", ".join(sorted(CURRENCY_EXPONENTS))
        raise UnknownCurrency(f"unknown currency {raw!r}; orderpay knows {known}")
    return code


def exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS[currency_code(currency)]


@dataclass(frozen=True, slots=True)
class Money:
    minor_units: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor_units, bool) or not isinstance(self.minor_units, int):
            raise TypeError("Money.minor_units must be an int")

    def as_decimal(self) -> Decimal:
        return Decimal(self.minor_units).scaleb(-exponent(self.currency))

    def as_string(self) -> str:
        """Major units with exactly the currency's decimals: 1250 GHS -> '12.50'."""
        places = exponent(self.currency)
        return f"{self.as_decimal():.{places}f}"

    def __str__(self) -> str:
        return f"{self.as_string()} {self.currency}"


def parse_amount(raw: str, currency: str) -> Money:
    """Parse a major-unit decimal string exactly: '12.50' GHS -> Money(1250, 'GHS').

    Refuses negatives, more decimals than the currency allows, exponents, NaN and infinity.
    """
    code = currency_code(currency)
    text = raw.strip()
    if text.startswith("-"):
        raise InvalidAmount(f"amount {raw!r} is negative")
    # ASCII digits only: Decimal() would also take "1_000", "1e3", "NaN" and other scripts' digits.
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise InvalidAmount(f"{raw!r} is not a plain decimal amount such as 12.50")
    value = Decimal(text)
    places = CURRENCY_EXPONENTS[code]
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise InvalidAmount(
            f"{code} has {places} decimal place{'s' if places != 1 else ''}; {raw!r} has more"
        )
    units = int(minor)
    if units > MAX_MINOR_UNITS:
        raise InvalidAmount(f"amount {raw!r} is larger than orderpay accepts")
    return Money(units, code)
