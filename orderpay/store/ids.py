"""Ids as an operator types them: a whole UUID, or its first characters, as Git takes a commit.

A prefix of at least MIN_PREFIX hex digits names the one row whose id starts with it; the
lookup is a range scan of the primary key (every UUID starting with the prefix lies between
the prefix padded with 0s and with fs), so it is as fast on a large table as a whole id.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import Connection, Table, select

from orderpay.domain.validation import as_uuid
from orderpay.errors import AmbiguousId, InvalidField, NotFound

MIN_PREFIX = 4
SHORT = 8  # how many characters of an id tables show
_HEX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},32}}")


def short(value: uuid.UUID) -> str:
    return str(value)[:SHORT]


def resolve(
    conn: Connection, table: Table, raw: str, *, what: str, not_found: type[NotFound]
) -> uuid.UUID:
    """The id of `table`'s one row that `raw` names (a UUID, or a unique prefix of one);
    `not_found` when there is none."""
    full = as_uuid(raw)
    digits = full.hex if full is not None else raw.strip().lower().replace("-", "")
    if not _HEX.fullmatch(digits):
        raise InvalidField(
            f"{raw!r} is not a {what} id: give the UUID, or at least its first {MIN_PREFIX} "
            "characters",
            field=f"{what} id",
        )
    low, high = uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
    found = conn.execute(
        select(table.c.id).where(table.c.id.between(low, high)).order_by(table.c.id).limit(2)
    ).all()
    if not found:
        raise not_found(f"no {what} id starts with {raw.strip()}", **{what: raw.strip()})
    if len(found) > 1:
        raise AmbiguousId(
            f"{raw.strip()!r} is the start of several {what} ids ({found[0][0]}, "
            f"{found[1][0]}, ...); give more characters",
            field=f"{what} id",
        )
    return found[0][0]  # type: ignore[no-any-return]
