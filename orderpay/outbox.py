"""The notification outbox: rows written in the settling transaction, moved to RQ by the relay.

A row is inserted in the same transaction that marks the payment succeeded, so there is no
notification without a payment and no payment without its notification. On Postgres the insert
also NOTIFYs the relay, which Postgres delivers only if the transaction commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from orderpay.clock import utcnow
from orderpay.models import notifications
from orderpay.notifications import wake_relay
from orderpay.states import NotificationStatus

PAYMENT_RECEIVED = "payment_received"


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """How this deployment notifies: the channel, and the merchant's URL for `webhook`."""

    channel: str = "log"
    webhook_url: str | None = None

    def recipient_for(self, customer_phone: str) -> str:
        if self.channel == "webhook" and self.webhook_url:
            return self.webhook_url
        return customer_phone


def add_notification(
    conn: Connection,
    *,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    recipient: str,
    target: NotifyTarget,
    kind: str = PAYMENT_RECEIVED,
) -> int | None:
    """Insert the outbox row; None if this payment already has one of this kind."""
    now = utcnow()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = conn.execute(
        dialect.insert(notifications)
        .values(
            order_id=order_id,
            payment_id=payment_id,
            kind=kind,
            channel=target.channel,
            recipient=recipient,
            # Rendered by the job when it sends, with the merchant's current name.
            body="",
            status=NotificationStatus.PENDING.value,
            attempts=0,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["payment_id", "kind"])
        .returning(notifications.c.id)
    ).scalar_one_or_none()
    if inserted is not None:
        wake_relay(conn, inserted)
    return inserted


def claim_for_relay(
    conn: Connection, *, now: datetime, stale_after: timedelta, limit: int
) -> list[tuple[int, int]]:
    """(id, attempts) of rows to hand to RQ now, marked enqueued in the caller's transaction.

    Due rows never handed out, and rows whose job seems lost: handed out, still pending, and
    past due (a retry or a lease) by more than `stale_after`. Rows other relays are taking are
    skipped (SKIP LOCKED), so two relays never enqueue the same row.
    """
    fresh = notifications.c.enqueued_at.is_(None) & (notifications.c.due_at <= now)
    stale = notifications.c.enqueued_at.is_not(None) & (notifications.c.due_at <= now - stale_after)
    query = (
        select(notifications.c.id, notifications.c.attempts)
        .where(notifications.c.status == NotificationStatus.PENDING.value, fresh | stale)
        .order_by(notifications.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    rows = [(nid, attempts) for nid, attempts in conn.execute(query)]
    if rows:
        conn.execute(
            update(notifications)
            .where(notifications.c.id.in_([nid for nid, _ in rows]))
            # due_at moves to now too, so a stale row is not handed out again before the job
            # has had `stale_after` to claim it.
            .values(enqueued_at=now, due_at=now)
        )
    return rows
