"""The order timeline (order_events): append-only, one row per state change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from orderpay.clock import utcnow
from orderpay.models import order_events


@dataclass(frozen=True, slots=True)
class OrderEvent:
    at: datetime
    event: str
    detail: str


# inline(): nothing reads an event's id back, so none is fetched.
_INSERT = insert(order_events).inline()


def record_event(
    conn: Connection,
    order_id: uuid.UUID,
    event: str,
    detail: str = "",
    *,
    at: datetime | None = None,
) -> None:
    conn.execute(
        _INSERT, {"order_id": order_id, "at": at or utcnow(), "event": event, "detail": detail}
    )


def record_events(
    conn: Connection,
    order_id: uuid.UUID,
    events: list[tuple[str, str]],
    *,
    at: datetime | None = None,
) -> None:
    """Several (event, detail) rows in one statement, in order."""
    when = at or utcnow()
    conn.execute(
        _INSERT, [{"order_id": order_id, "at": when, "event": e, "detail": d} for e, d in events]
    )


def events_of(conn: Connection, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[OrderEvent]]:
    """Each order's timeline, oldest first."""
    rows = conn.execute(
        select(order_events.c.order_id, order_events.c.at, order_events.c.event,
               order_events.c.detail)
        .where(order_events.c.order_id.in_(order_ids))
        .order_by(order_events.c.id)
    )  # fmt: skip
    timeline: dict[uuid.UUID, list[OrderEvent]] = {}
    for order_id, at, event, detail in rows:
        timeline.setdefault(order_id, []).append(OrderEvent(at, event, detail))
    return timeline
