"""`orderpay reconcile`: settle payments whose outcome never arrived, resume lost requests."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import Connection, select

from orderpay.clock import utcnow
from orderpay.errors import InvalidField
from orderpay.models import payments
from orderpay.payments import COLUMNS, Payment, from_row
from orderpay.states import OPEN_PAYMENT_STATUSES

_AGE = re.compile(r"([0-9]{1,9})\s*([smhd])")
MAX_AGE = timedelta(days=365)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(raw: str) -> timedelta:
    """'90s', '5m', '2h', '1d' -> timedelta."""
    match = _AGE.fullmatch(raw.strip().lower())
    if match is None:
        raise InvalidField(f"{raw!r} is not an age such as 30s, 5m, 2h or 1d", field="older_than")
    age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if age > MAX_AGE:
        raise InvalidField(f"{raw!r} is longer than a year", field="older_than")
    return age


def payments_to_reconcile(
    conn: Connection, provider: str, older_than: timedelta, limit: int
) -> list[Payment]:
    """`provider`'s payments still `initiated` or `pending`, unchanged for `older_than`."""
    rows = conn.execute(
        select(*COLUMNS)
        .where(
            payments.c.provider == provider,
            payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES]),
            payments.c.updated_at <= utcnow() - older_than,
        )
        .order_by(payments.c.updated_at)
        .limit(limit)
    )
    return [from_row(row) for row in rows]
