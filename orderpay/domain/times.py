"""Times an operator types: ages (`90s`, `5m`, `2h`, `7d`) and moments (`2026-11-01`,
`2026-11-01T14:30`, an ISO 8601 time with its zone, or an age: that long ago). Pure: the
current time is given."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from orderpay.errors import InvalidField

_AGE = re.compile(r"([0-9]{1,9})\s*([smhd])")
MAX_AGE = timedelta(days=3660)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(raw: str, what: str = "age") -> timedelta:
    """'90s', '5m', '2h', '7d' -> timedelta."""
    match = _AGE.fullmatch(raw.strip().lower())
    if match is None:
        raise InvalidField(f"{raw!r} is not an age such as 30s, 5m, 2h or 7d", field=what)
    age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if age > MAX_AGE:
        raise InvalidField(f"{raw!r} is longer than ten years", field=what)
    return age


def age_text(span: timedelta) -> str:
    """An age as parse_age reads it when it is whole ('90s', '5m', '7d'), else to a tenth of
    its largest unit ('1.5h')."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            return f"{whole}{unit}" if rest == 0 else f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0)}s"


def parse_moment(raw: str, now: datetime, what: str = "time") -> datetime:
    """A moment as an operator writes it, in UTC when no zone is given; an age means that long
    before `now`."""
    text = raw.strip()
    if _AGE.fullmatch(text.lower()):
        return now - parse_age(text, what)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField(
            f"{raw!r} is not a time: write 2026-11-01, 2026-11-01T14:30, "
            "2026-11-01T14:30+03:00, or an age such as 7d (that long ago)",
            field=what,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
