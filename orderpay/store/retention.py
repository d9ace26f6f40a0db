"""Retention (`orderpay db prune`): phone numbers masked in what is kept about old callbacks
and old messages, nothing else changed.

Old means received (callbacks) or created (notifications) before a cutoff. The ledger, the
order events and the customer's record are never touched, nor the recipient of a notification
still pending (it is yet to be sent). Rows are read in batches by id, one transaction per batch,
and written by their tables' own writers only if unchanged since they were read: a prune can
run beside the listener and the worker, be interrupted, and run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from orderpay.domain.phones import mask_if_phone
from orderpay.domain.redaction import mask_payload
from orderpay.domain.states import NotificationStatus
from orderpay.store import outbox
from orderpay.store.db import Transactional
from orderpay.store.schema import notifications, webhook_events
from orderpay.store.webhook_events import mask_payloads

BATCH = 500
_PENDING = NotificationStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class Pruned:
    examined: int  # rows older than the cutoff
    masked: int  # of them, rows that held a phone number and now hold it masked


@dataclass(frozen=True, slots=True)
class Prune:
    callbacks: Pruned  # webhook_events payloads
    notifications: Pruned  # notification bodies and recipients


def old_rows(conn: Connection, cutoff: datetime) -> tuple[int, int]:
    """How many callbacks and notifications a prune at `cutoff` looks at."""
    events = select(func.count()).where(webhook_events.c.received_at < cutoff)
    messages = select(func.count()).where(
        notifications.c.created_at < cutoff, notifications.c.status != _PENDING
    )
    return conn.execute(events).scalar_one(), conn.execute(messages).scalar_one()


def prune_phones(database: Transactional, cutoff: datetime, default_region: str) -> Prune:
    """Mask the phone numbers in callbacks and notifications older than `cutoff`."""
    return Prune(
        _in_batches(database, lambda c, after: _callbacks(c, cutoff, default_region, after)),
        _in_batches(database, lambda c, after: _notifications(c, cutoff, default_region, after)),
    )


def _in_batches(
    database: Transactional, batch: Callable[[Connection, int], tuple[int, int, int]]
) -> Pruned:
    examined = masked = 0
    after = 0
    while True:
        with database.transaction() as conn:
            seen, changed, last = batch(conn, after)
        examined, masked = examined + seen, masked + changed
        if seen < BATCH:
            return Pruned(examined, masked)
        after = last


def _callbacks(conn: Connection, cutoff: datetime, region: str, after: int) -> tuple[int, int, int]:
    rows = conn.execute(
        select(webhook_events.c.id, webhook_events.c.payload)
        .where(webhook_events.c.received_at < cutoff, webhook_events.c.id > after)
        .order_by(webhook_events.c.id)
        .limit(BATCH)
    ).all()
    changes = []
    for row in rows:
        masked = mask_payload(row.payload, region)
        if masked != row.payload:
            changes.append({"b_id": row.id, "b_old": row.payload, "v_payload": masked})
    return len(rows), mask_payloads(conn, changes), rows[-1].id if rows else after


def _notifications(
    conn: Connection, cutoff: datetime, region: str, after: int
) -> tuple[int, int, int]:
    rows = conn.execute(
        select(notifications.c.id, notifications.c.body, notifications.c.recipient)
        .where(
            notifications.c.created_at < cutoff,
            notifications.c.status != _PENDING,
            notifications.c.id > after,
        )
        .order_by(notifications.c.id)
        .limit(BATCH)
    ).all()
    changes = []
    for row in rows:
        body, recipient = row.body, row.recipient
        masked_body, masked_to = mask_payload(body, region), mask_if_phone(recipient, region)
        if (masked_body, masked_to) != (body, recipient):
            changes.append(
                {
                    "b_id": row.id,
                    "b_body": body,
                    "b_to": recipient,
                    "v_body": masked_body,
                    "v_to": masked_to,
                }
            )
    return len(rows), outbox.mask_contacts(conn, changes), rows[-1].id if rows else after
