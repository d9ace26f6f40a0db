"""Reading the inbox (webhook_events) back: the callback log of `orderpay webhook list|show`.

Reads only; the one writer of webhook_events is store/inbox.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.schema import webhook_events


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    source: str
    dedupe_key: str
    received_at: datetime
    outcome: str
    order_id: uuid.UUID | None
    payment_id: uuid.UUID | None
    payload: str | None = None  # read by `get_event` only: lists leave it out


_SUMMARY = (
    webhook_events.c.id,
    webhook_events.c.source,
    webhook_events.c.dedupe_key,
    webhook_events.c.received_at,
    webhook_events.c.outcome,
    webhook_events.c.order_id,
    webhook_events.c.payment_id,
)


def _from_row(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(int(row[0]), *row[1:])


def get_event(conn: Connection, event_id: int) -> StoredEvent | None:
    """One stored event with its payload, or None."""
    row = conn.execute(
        select(*_SUMMARY, webhook_events.c.payload).where(webhook_events.c.id == event_id)
    ).first()
    return None if row is None else _from_row(row)


def list_events(
    conn: Connection,
    window: Window,
    *,
    order_id: uuid.UUID | None = None,
    outcomes: Collection[str] = (),
    source: str | None = None,
) -> Page[StoredEvent]:
    """Stored events, newest received first, a page at a time (without their payloads)."""
    query = select(*_SUMMARY)
    if order_id is not None:
        query = query.where(webhook_events.c.order_id == order_id)
    if outcomes:
        query = query.where(webhook_events.c.outcome.in_(sorted(outcomes)))
    if source is not None:
        query = query.where(webhook_events.c.source == source)
    query = windowed(query, webhook_events.c.received_at, webhook_events.c.id, window, int)
    rows = [_from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda e: (e.received_at, e.id))
