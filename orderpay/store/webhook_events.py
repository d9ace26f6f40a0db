"""Webhook events (webhook_events): every callback we act on, recorded once per source and
key, and read back for `orderpay webhook list|show|replay`.

The one module that writes webhook_events. The unique (source, dedupe_key) constraint makes a
copy harmless: its insert does nothing, and the caller changes nothing either. The ordinary
path records a callback before looking anything up (`receive`), so a copy is known as a copy
whatever it names, and fills in its outcome once known (`decide`); a batch of callbacks
records each with the move it settles, in one statement (`record_from`).

One outcome is not final: an event kept as `unmatched` (no payment of its order matched it
yet) is taken up again by a later copy, which tries the match again rather than counting as a
duplicate (`is_copy`). Only such a copy writes: it claims the row with a compare-and-set, so
racing copies try one at a time, while a plain duplicate only reads (an upsert would lock the
stored row and make every duplicate write and wait).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, Row, Select, Text, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.store.db import InsertIgnoring
from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.schema import webhook_events

RECEIVED = "received"  # recorded, outcome not yet known (rolled back with its transaction)
UNMATCHED = "unmatched"  # kept: nothing matched it yet, and a later copy tries again


@dataclass(frozen=True, slots=True)
class Received:
    """What `receive` found: an event to decide (`id`), or a copy of one already decided."""

    id: int | None  # None: a copy, to answer as a duplicate
    again: bool = False  # a copy of an event kept as unmatched, taken up again
    payment_id: uuid.UUID | None = None  # a copy's: the payment the stored event was about


_INSERT = InsertIgnoring(webhook_events, ["source", "dedupe_key"], webhook_events.c.id)
_STORED = select(webhook_events.c.id, webhook_events.c.outcome, webhook_events.c.payment_id).where(
    webhook_events.c.source == bindparam("b_source"),
    webhook_events.c.dedupe_key == bindparam("b_key"),
)
_TAKE_UP = (
    update(webhook_events)
    .where(webhook_events.c.id == bindparam("b_event"), webhook_events.c.outcome == UNMATCHED)
    .values(received_at=bindparam("v_at"), payload=bindparam("v_payload"))
    .returning(webhook_events.c.id)
)
_DECIDE = (
    update(webhook_events)
    .where(webhook_events.c.id == bindparam("b_event"))
    .values(
        outcome=bindparam("v_outcome"),
        order_id=bindparam("v_order"),
        payment_id=bindparam("v_payment"),
    )
)


def _insert(
    conn: Connection,
    *,
    source: str,
    dedupe_key: str,
    payload: str,
    order_id: uuid.UUID | None,
    outcome: str,
    payment_id: uuid.UUID | None,
) -> int | None:
    inserted = conn.execute(
        _INSERT(conn),
        {
            "source": source,
            "dedupe_key": dedupe_key,
            "payload": payload,
            "received_at": utcnow(),
            "outcome": outcome,
            "order_id": order_id,
            "payment_id": payment_id,
        },
    ).first()
    return None if inserted is None else int(inserted[0])


def receive(conn: Connection, *, source: str, dedupe_key: str, payload: str) -> Received:
    """Record a callback in the caller's transaction, its order and outcome still unknown.

    A copy of a recorded event comes back without an id (a duplicate), unless the event was
    kept as `unmatched`: then it is taken up again (its payload and received_at refreshed)
    and comes back with its id and `again`, to be decided anew.
    """
    new = _insert(
        conn,
        source=source,
        dedupe_key=dedupe_key,
        payload=payload,
        order_id=None,
        outcome=RECEIVED,
        payment_id=None,
    )
    if new is not None:
        return Received(new)
    keys = {"b_source": source, "b_key": dedupe_key}
    stored = conn.execute(_STORED, keys).first()
    if stored is None or is_copy(stored[1]):
        return Received(None, payment_id=None if stored is None else stored[2])
    # Row-locked until commit: a racing copy waits, then finds the event decided.
    taken = conn.execute(
        _TAKE_UP, {"b_event": stored[0], "v_at": utcnow(), "v_payload": payload}
    ).first()
    if taken is not None:
        return Received(int(taken[0]), again=True)
    decided = conn.execute(_STORED, keys).first()  # by the copy that took it up first
    return Received(None, payment_id=None if decided is None else decided[2])


def record_once(
    conn: Connection,
    *,
    source: str,
    dedupe_key: str,
    payload: str,
    outcome: str,
    order_id: uuid.UUID | None,
    payment_id: uuid.UUID | None = None,
) -> bool:
    """Record an event whose outcome is already known; False if it was recorded before."""
    event = _insert(
        conn,
        source=source,
        dedupe_key=dedupe_key,
        payload=payload,
        order_id=order_id,
        outcome=outcome,
        payment_id=payment_id,
    )
    return event is not None


def decide(
    conn: Connection,
    event_id: int,
    outcome: str,
    order_id: uuid.UUID | None,
    payment_id: uuid.UUID | None,
) -> None:
    """Fill in what a received event came to, and the order and payment it was about."""
    conn.execute(_DECIDE, outcome_params(event_id, outcome, order_id, payment_id))


def record_from(rows: Any) -> Insert:
    """Record the callbacks `rows` yields (a SELECT of source, dedupe_key, payload,
    received_at, outcome, order_id, payment_id, in the order their ids are to go) as part of a
    larger Postgres statement; a key recorded already is skipped. Returns the source and key
    of each one recorded."""
    columns = [
        "source",
        "dedupe_key",
        "payload",
        "received_at",
        "outcome",
        "order_id",
        "payment_id",
    ]
    return (
        postgresql.insert(webhook_events)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
        .returning(webhook_events.c.source, webhook_events.c.dedupe_key)
    )


def outcome_params(
    event_id: int, outcome: str, order_id: uuid.UUID | None, payment_id: uuid.UUID | None
) -> dict[str, Any]:
    return {"b_event": event_id, "v_outcome": outcome, "v_order": order_id, "v_payment": payment_id}


def is_copy(outcome: str) -> bool:
    """Whether a callback under the key of an event recorded with `outcome` is a copy to
    answer as a duplicate: every outcome but `unmatched`, which a copy tries again."""
    return outcome != UNMATCHED


_MASK_PAYLOAD = (
    update(webhook_events)
    .where(webhook_events.c.id == bindparam("b_id"), webhook_events.c.payload == bindparam("b_old"))
    .values(payload=bindparam("v_payload"))
)


def mask_payloads(conn: Connection, masked: list[dict[str, Any]]) -> int:
    """Retention (store/retention.py): put masked copies over stored payloads, each given as
    {"b_id", "b_old": the payload as read, "v_payload"}; a payload that changed since it was
    read is left for the next run. How many were replaced."""
    return sum(conn.execute(_MASK_PAYLOAD, row).rowcount for row in masked)


# --- Reading them back ---------------------------------------------------------------------


def stored_under_keys() -> Select[Any]:
    """The source, key, outcome and payment of the events recorded under the keys of arrays
    b_source and b_key (Postgres)."""
    keys = (
        func.unnest(
            bindparam("b_source", type_=postgresql.ARRAY(Text())),
            bindparam("b_key", type_=postgresql.ARRAY(Text())),
        )
        .table_valued("source", "dedupe_key")
        .render_derived("keys")
    )
    return select(
        webhook_events.c.source,
        webhook_events.c.dedupe_key,
        webhook_events.c.outcome,
        webhook_events.c.payment_id,
    ).join(
        keys,
        and_(
            webhook_events.c.source == keys.c.source,
            webhook_events.c.dedupe_key == keys.c.dedupe_key,
        ),
    )


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


def _from_row(row: Row[*tuple[Any, ...]]) -> StoredEvent:
    """The event in a row of _SUMMARY (and `payload`), whose keys are its fields' names."""
    fields = dict(row._mapping)
    fields["id"] = int(fields["id"])
    return StoredEvent(**fields)


def find_event(conn: Connection, source: str, dedupe_key: str) -> StoredEvent | None:
    """The event recorded under this key, with its payload, or None."""
    row = conn.execute(
        select(*_SUMMARY, webhook_events.c.payload).where(
            webhook_events.c.source == source, webhook_events.c.dedupe_key == dedupe_key
        )
    ).first()
    return None if row is None else _from_row(row)


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
