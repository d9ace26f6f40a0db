"""Webhook events (webhook_events): every callback we act on, recorded once per source and
key, and read back for `orderpay webhook list|show|replay`.

The one module that writes webhook_events. The unique (source, dedupe_key) constraint is what
makes a replayed callback harmless: the second insert does nothing, and the caller changes
nothing either. A callback is recorded before anything is looked up (`receive`: its order is
not known to exist yet, so it is left empty), so a copy is known as a copy whatever it names;
its outcome, order and payment are filled in once known (`decide`, or as part of the settling
statement on Postgres: `outcome_update`).

One outcome is not final: an event kept as `unmatched` (no payment of its order matched it
yet, DESIGN.md section 5) is taken up again by a later copy, which tries the match again
rather than counting as a duplicate. A new callback is still one statement (INSERT ... ON
CONFLICT DO NOTHING); a copy reads the stored row (as it did for its payment), and only a copy
of an `unmatched` one writes: it claims the row with a compare-and-set, so copies racing each
other try one at a time. (An INSERT ... ON CONFLICT DO UPDATE ... WHERE outcome = 'unmatched'
would be one statement for copies too, but it locks the stored row whatever its outcome: every
duplicate would then write WAL, wait for a flush at commit and queue behind the other copies.)
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Update, bindparam, select, update

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
    if stored is None or stored[1] != UNMATCHED:
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


def outcome_update() -> Update:
    """`decide` as a statement to embed in a larger Postgres statement (a data-modifying
    CTE). Parameters: outcome_params()."""
    return _DECIDE


def outcome_params(
    event_id: int, outcome: str, order_id: uuid.UUID | None, payment_id: uuid.UUID | None
) -> dict[str, Any]:
    return {"b_event": event_id, "v_outcome": outcome, "v_order": order_id, "v_payment": payment_id}


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
