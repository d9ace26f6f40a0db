"""The inbox (webhook_events): every callback we act on, recorded once per source and key.

The one module that writes webhook_events. The unique (source, dedupe_key) constraint is what
makes a replayed callback harmless: the second insert does nothing, and the caller changes
nothing either. A callback is recorded before anything is looked up (`receive`: its order is
not known to exist yet, so it is left empty), so a copy is known as a copy whatever it names;
its outcome, order and payment are filled in once known (`decide`, or as part of the settling
statement on Postgres: `outcome_update`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Update, bindparam, select, update

from orderpay.clock import utcnow
from orderpay.store.db import InsertIgnoring
from orderpay.store.schema import webhook_events

RECEIVED = "received"  # recorded, outcome not yet known (rolled back with its transaction)

_INSERT = InsertIgnoring(webhook_events, ["source", "dedupe_key"], webhook_events.c.id)
_DECIDE = (
    update(webhook_events)
    .where(webhook_events.c.id == bindparam("b_event"))
    .values(
        outcome=bindparam("v_outcome"),
        order_id=bindparam("v_order"),
        payment_id=bindparam("v_payment"),
    )
)
_PAYMENT_OF = select(webhook_events.c.payment_id).where(
    webhook_events.c.source == bindparam("b_source"),
    webhook_events.c.dedupe_key == bindparam("b_key"),
)


def receive(
    conn: Connection,
    *,
    source: str,
    dedupe_key: str,
    payload: str,
    order_id: uuid.UUID | None,
    outcome: str = RECEIVED,
    payment_id: uuid.UUID | None = None,
) -> int | None:
    """Record an event in the caller's transaction: its id, or None if it is a copy."""
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
    event = receive(
        conn, source=source, dedupe_key=dedupe_key, payload=payload, order_id=order_id,
        outcome=outcome, payment_id=payment_id,
    )  # fmt: skip
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


def payment_of(conn: Connection, *, source: str, dedupe_key: str) -> uuid.UUID | None:
    """The payment a recorded event was about (to answer a copy of it)."""
    row = conn.execute(_PAYMENT_OF, {"b_source": source, "b_key": dedupe_key}).first()
    return None if row is None else row[0]
