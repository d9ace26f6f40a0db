"""Pages of a list, newest first: a time window (since, until), a size, and a cursor.

A cursor names the last row of a page by its time and key, so the next page starts strictly
after it (keyset paging): rows written meanwhile never shift a page, and no page is slow
however deep it is. It is opaque to the user: base64 of the row's time and key.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_

from orderpay.errors import InvalidField

T = TypeVar("T")
DEFAULT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # the cursor of the previous page


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # the cursor of the next page; None on the last one


def encode_cursor(at: datetime, key: uuid.UUID | int | str) -> str:
    raw = json.dumps([at.isoformat(), str(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: Callable[[str], Any]) -> tuple[datetime, Any]:
    try:
        padded = cursor.strip() + "=" * (-len(cursor.strip()) % 4)
        at, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(at), key_type(key)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidField(
            f"{cursor!r} is not a cursor: give --after the `next` of the page before",
            field="after",
        ) from None


def windowed(
    query: Select[Any],
    time_column: ColumnElement[Any],
    key_column: ColumnElement[Any],
    window: Window,
    key_type: Callable[[str], Any],
) -> Select[Any]:
    """`query` limited to the window, newest first, one row more than a page (to tell
    whether another page follows)."""
    conditions = []
    if window.since is not None:
        conditions.append(time_column >= window.since)
    if window.until is not None:
        conditions.append(time_column < window.until)
    if window.after is not None:
        at, key = decode_cursor(window.after, key_type)
        conditions.append(or_(time_column < at, and_(time_column == at, key_column < key)))
    return (
        query.where(*conditions)
        .order_by(time_column.desc(), key_column.desc())
        .limit(window.limit + 1)
    )


def page_of(
    rows: Sequence[T], window: Window, cursor_of: Callable[[T], tuple[datetime, Any]]
) -> Page[T]:
    """The page in `rows` (read with `windowed`), and the cursor of the next one."""
    items = list(rows[: window.limit])
    if len(rows) <= window.limit:
        return Page(items, None)
    return Page(items, encode_cursor(*cursor_of(items[-1])))
