"""The notification outbox: rows written in the settling transaction, moved to RQ by the relay.

A row is inserted in the same transaction that marks the payment succeeded, so there is no
notification without a payment and no payment without its notification. After that transaction
commits, the caller wakes the relay (wakeups.Nudger); the relay also polls, so a wake-up that
never comes only delays a message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, String, Text, bindparam, literal, select, update
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.db import InsertIgnoring
from orderpay.models import UTCDateTime, notifications
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


_INSERT = InsertIgnoring(notifications, ["payment_id", "kind"], notifications.c.id)


def add_notification(
    conn: Connection,
    *,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    recipient: str,
    target: NotifyTarget,
) -> int | None:
    """Insert the payment's `payment_received` outbox row; None if it already has one.

    The caller wakes the relay after its transaction commits (wakeups.Nudger).
    """
    now = utcnow()
    values = {
        "order_id": order_id,
        "payment_id": payment_id,
        "kind": PAYMENT_RECEIVED,
        "channel": target.channel,
        "recipient": recipient,
        # Rendered by the job when it sends, with the merchant's current name.
        "body": "",
        "status": NotificationStatus.PENDING.value,
        "attempts": 0,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }
    inserted: int | None = conn.execute(_INSERT(conn), values).scalar_one_or_none()
    return inserted


def insert_notification_from(paid: Any) -> Insert:
    """add_notification as part of a larger Postgres statement: the outbox row of each payment
    `paid` (a CTE with `id` and `order_id` columns) yields. Parameters: v_channel, v_recipient,
    v_now. Returns the new row's id, or nothing if the payment already has one."""
    now = bindparam("v_now", type_=UTCDateTime())
    return (
        postgresql.insert(notifications)
        .from_select(
            [
                "order_id",
                "payment_id",
                "kind",
                "channel",
                "recipient",
                "body",
                "status",
                "attempts",
                "due_at",
                "created_at",
                "updated_at",
            ],
            select(
                paid.c.order_id,
                paid.c.id,
                literal(PAYMENT_RECEIVED, String()),
                bindparam("v_channel", type_=String()),
                bindparam("v_recipient", type_=String()),
                literal("", Text()),
                literal(NotificationStatus.PENDING.value, String()),
                literal(0),
                now,
                now,
                now,
            ),
        )
        .on_conflict_do_nothing(index_elements=["payment_id", "kind"])
        .returning(notifications.c.id)
    )


_fresh = notifications.c.enqueued_at.is_(None) & (notifications.c.due_at <= bindparam("b_now"))
_stale = notifications.c.enqueued_at.is_not(None) & (
    notifications.c.due_at <= bindparam("b_stale_before")
)
_RELAYABLE = (
    select(notifications.c.id, notifications.c.attempts)
    .where(notifications.c.status == NotificationStatus.PENDING.value, _fresh | _stale)
    .order_by(notifications.c.due_at)
    .limit(bindparam("b_limit"))
)
_RELAYABLE_SKIP_LOCKED = _RELAYABLE.with_for_update(skip_locked=True)
_MARK_ENQUEUED = update(notifications).where(
    notifications.c.id.in_(bindparam("b_ids", expanding=True))
)


def claim_for_relay(
    conn: Connection, *, now: datetime, stale_after: timedelta, limit: int
) -> list[tuple[int, int]]:
    """(id, attempts) of rows to hand to RQ now, marked enqueued in the caller's transaction.

    Due rows never handed out, and rows whose job seems lost: handed out, still pending, and
    past due (a retry or a lease) by more than `stale_after`. Rows other relays are taking are
    skipped (SKIP LOCKED), so two relays never enqueue the same row.
    """
    statement = _RELAYABLE if conn.dialect.name == "sqlite" else _RELAYABLE_SKIP_LOCKED
    params = {"b_now": now, "b_stale_before": now - stale_after, "b_limit": limit}
    rows = [(nid, attempts) for nid, attempts in conn.execute(statement, params)]
    if rows:
        # due_at moves to now too, so a stale row is not handed out again before the job
        # has had `stale_after` to claim it.
        conn.execute(
            _MARK_ENQUEUED,
            {"b_ids": [nid for nid, _ in rows], "enqueued_at": now, "due_at": now},
        )
    return rows
