"""The inbox (webhook_events): every callback we act on, recorded once per source and key.

The unique (source, dedupe_key) constraint is what makes a replayed callback harmless: the
second insert does nothing, and the caller changes nothing either.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.db import InsertIgnoring
from orderpay.models import webhook_events

_INSERT = InsertIgnoring(webhook_events, ["source", "dedupe_key"], webhook_events.c.id)


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
    """Record an event in the caller's transaction; False if it was recorded before."""
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
    return inserted is not None
