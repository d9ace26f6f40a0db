"""How a setting's text becomes its value, by pydantic's rules but without loading pydantic.

What each type accepts (`1_000`, ` 5 `, `5.0` as a whole number; `yes`/`off` as booleans; `inf`
as a number), the order bounds are checked in and the words of each refusal are pydantic's, so
orderpay.config reads and refuses exactly what it did when pydantic-settings read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# phonenumbers.SUPPORTED_REGIONS, copied so that reading the settings does not load
# phonenumbers' metadata; tests/test_config_values.py keeps the two equal.
_REGIONS = """
    AC AD AE AF AG AI AL AM AO AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
    DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GT GU
    GW GY HK HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW
    KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT
    MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PR PS PT
    PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TA
    TC TD TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG US UY UZ VA VC VE VG VI VN VU WF WS XK
    YE YT ZA ZM ZW
"""
PHONE_REGIONS = frozenset(_REGIONS.split())


# The payment providers orderpay knows, as ORDERPAY_PROVIDER and the routes name them.
PROVIDER_NAMES = ("simulator", "mtn", "mpesa")


class Secret:
    """A secret setting: its value only through get_secret_value(), never in repr() or str()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{self}')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class BadValue(ValueError):
    """A setting's value breaks a rule; the message is the rule (never the value)."""


@dataclass(frozen=True)
class Setting:
    """One variable: its type (str, Secret, int, float, bool, or a tuple of choices), default
    (None: optional) and bounds."""

    variable: str
    kind: Any
    default: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def read(self, value: Any) -> Any:
        """The value as the setting holds it; BadValue naming the rule it breaks."""
        if value is None:
            if self.default is None:
                return None
            raise BadValue(_NONE_MESSAGES.get(self.kind, "Input should be a valid string"))
        kind = self.kind
        if isinstance(kind, tuple):
            if value not in kind:
                quoted = [f"'{choice}'" for choice in kind]
                raise BadValue(f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]}")
            return value
        if kind is bool:
            return _boolean(value)
        if kind is int:
            return self._bounded(_integer(value))
        if kind is float:
            return self._bounded(_number(value))
        if not isinstance(value, str):
            raise BadValue("Input should be a valid string")
        return Secret(value) if kind is Secret else value

    def _bounded(self, value: Any) -> Any:
        # pydantic's order: le, then ge, then gt; NaN fails every bound.
        if self.le is not None and not value <= self.le:
            raise BadValue(f"Input should be less than or equal to {self.le}")
        if self.ge is not None and not value >= self.ge:
            raise BadValue(f"Input should be greater than or equal to {self.ge}")
        if self.gt is not None and not value > self.gt:
            raise BadValue(f"Input should be greater than {self.gt}")
        return value


_NONE_MESSAGES = {
    int: "Input should be a valid integer",
    float: "Input should be a valid number",
    bool: "Input should be a valid boolean",
}
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INTEGER = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
_NUMBER = re.compile(r"[+-]?(?:inf|infinity|nan|[0-9_]*\.?[0-9_]*(?:e[+-]?[0-9_]+)?)", re.I)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
    elif isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    # A fraction is not even a candidate; other text and numbers could have been.
    interpretable = isinstance(value, str | int) or (
        isinstance(value, float) and value.is_integer()
    )
    raise BadValue(
        "Input should be a valid boolean, unable to interpret input"
        if interpretable
        else "Input should be a valid boolean"
    )


def _integer(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text.partition(".")[0])
        raise BadValue("Input should be a valid integer, unable to parse string as an integer")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise BadValue("Input should be a valid integer, got a number with a fractional part")
    raise BadValue("Input should be a valid integer")


def _number(value: Any) -> float:
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and _NUMBER.fullmatch(text):
            try:
                return float(text)
            except ValueError:
                pass
        raise BadValue("Input should be a valid number, unable to parse string as a number")
    if isinstance(value, int | float):
        return float(value)
    raise BadValue("Input should be a valid number")
