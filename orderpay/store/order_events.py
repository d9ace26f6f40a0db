"""The order's events (order_events): append-only, one row per state change.

The one module that writes order_events: other writers that add an order event to their own
statement on Postgres build it with `with_event` or `insert_events_from`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, String, Text, bindparam, func, insert, or_, select

from orderpay.clock import utcnow
from orderpay.store.schema import UTCDateTime, order_events


@dataclass(frozen=True, slots=True)
class OrderEvent:
    at: datetime
    event: str
    detail: str
    operator: str | None = None  # who acted, for an operator's action


@dataclass(frozen=True, slots=True)
class OrderEventEntry:
    """An order event as `orderpay events tail` follows it: with its id and order."""

    id: int
    order_id: uuid.UUID
    at: datetime
    event: str
    detail: str
    operator: str | None = None


# inline(): nothing reads an event's id back, so none is fetched.
_INSERT = insert(order_events).inline()


def record_event(
    conn: Connection,
    order_id: uuid.UUID,
    event: str,
    detail: str = "",
    *,
    at: datetime | None = None,
    operator: str | None = None,
) -> None:
    """One order event; `operator`: who acted, when an operator did (Settings.operator_name)."""
    conn.execute(
        _INSERT,
        {
            "order_id": order_id,
            "at": at or utcnow(),
            "event": event,
            "detail": detail,
            "operator": operator,
        },
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
        _INSERT,
        [
            {"order_id": order_id, "at": when, "event": e, "detail": d, "operator": None}
            for e, d in events
        ],
    )


def with_event(dml: Any) -> Select[Any]:
    """`dml` (an UPDATE or INSERT returning `order_id`) plus its order event, as one Postgres
    statement (a data-modifying CTE): a round trip fewer than two statements. The event row is
    written only if `dml` wrote a row. Parameters: the statement's own, and e_at, e_event and
    e_detail for the event."""
    written = dml.cte("written")
    event = insert_events_from(
        select(
            written.c.order_id,
            bindparam("e_at", type_=UTCDateTime()),
            bindparam("e_event", type_=String()),
            bindparam("e_detail", type_=Text()),
        )
    )
    return select(*written.c).add_cte(event.cte("event"))


def insert_events_from(rows: Any, *, with_operator: bool = False) -> Any:
    """INSERT the order events that `rows` (a SELECT of order_id, at, event, detail, and
    `with_operator` operator, in the order the rows are to get their ids) yields: for a larger
    Postgres statement."""
    columns = ["order_id", "at", "event", "detail", *(["operator"] if with_operator else [])]
    return insert(order_events).from_select(columns, rows)


def events_of(conn: Connection, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[OrderEvent]]:
    """Each order's events, oldest first."""
    rows = conn.execute(
        select(
            order_events.c.order_id,
            order_events.c.at,
            order_events.c.event,
            order_events.c.detail,
            order_events.c.operator,
        )
        .where(order_events.c.order_id.in_(order_ids))
        .order_by(order_events.c.id)
    )
    events: dict[uuid.UUID, list[OrderEvent]] = {}
    for row in rows:
        events.setdefault(row.order_id, []).append(
            OrderEvent(at=row.at, event=row.event, detail=row.detail, operator=row.operator)
        )
    return events


def count_events(conn: Connection, order_id: uuid.UUID, event: str) -> int:
    """How many `event` rows the order has (an index range scan of the order's events)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(order_events)
            .where(order_events.c.order_id == order_id, order_events.c.event == event)
        ).scalar_one()
    )


def last_event_id(conn: Connection) -> int:
    """The id of the newest order event this transaction sees, 0 when there is none."""
    return int(conn.execute(select(func.max(order_events.c.id))).scalar_one() or 0)


def newest_event_ids(conn: Connection, span: int) -> set[int]:
    """The ids this transaction sees among the newest `span` ids (from the highest down),
    read in one statement (one snapshot): the rest of that range is rolled back, or not
    committed yet."""
    newest = select(func.max(order_events.c.id)).scalar_subquery()
    rows = conn.execute(select(order_events.c.id).where(order_events.c.id > newest - span))
    return {int(row[0]) for row in rows}


def events_after(
    conn: Connection,
    after: int,
    *,
    missing: Collection[int] = (),
    order_id: uuid.UUID | None = None,
    limit: int = 500,
) -> list[OrderEventEntry]:
    """Order events with ids above `after`, plus any of the ids `missing` (below it, written
    by transactions that had not committed yet when the rows after them were read), oldest
    first, at most `limit`."""
    newer = order_events.c.id > after
    query = select(
        order_events.c.id,
        order_events.c.order_id,
        order_events.c.at,
        order_events.c.event,
        order_events.c.detail,
        order_events.c.operator,
    ).where(or_(newer, order_events.c.id.in_(sorted(missing))) if missing else newer)
    if order_id is not None:
        query = query.where(order_events.c.order_id == order_id)
    rows = conn.execute(query.order_by(order_events.c.id).limit(limit))
    return [
        OrderEventEntry(
            id=int(row.id),
            order_id=row.order_id,
            at=row.at,
            event=row.event,
            detail=row.detail,
            operator=row.operator,
        )
        for row in rows
    ]
