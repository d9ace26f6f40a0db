"""Notifications: the outbox rows that tell a customer their payment settled."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from orderpay.clock import utcnow
from orderpay.errors import NotificationNotFound, NotificationNotRetryable
from orderpay.models import notifications
from orderpay.states import NotificationStatus, notification_can_move
from orderpay.timeline import record_event

# The Postgres channel the relay listens on (wakeups.Nudger NOTIFYs it after commits).
OUTBOX_CHANNEL = "orderpay_outbox"


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    order_id: uuid.UUID
    payment_id: uuid.UUID
    kind: str
    channel: str
    recipient: str
    body: str
    status: NotificationStatus
    attempts: int
    last_error: str | None
    gateway_message_id: str | None
    due_at: datetime
    enqueued_at: datetime | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


COLUMNS = (
    notifications.c.id,
    notifications.c.order_id,
    notifications.c.payment_id,
    notifications.c.kind,
    notifications.c.channel,
    notifications.c.recipient,
    notifications.c.body,
    notifications.c.status,
    notifications.c.attempts,
    notifications.c.last_error,
    notifications.c.gateway_message_id,
    notifications.c.due_at,
    notifications.c.enqueued_at,
    notifications.c.sent_at,
    notifications.c.created_at,
    notifications.c.updated_at,
)


def from_row(row: Sequence[Any]) -> Notification:
    values = list(row)
    values[7] = NotificationStatus(values[7])
    return Notification(*values)


def notifications_of(conn: Connection, order_ids: list[uuid.UUID]) -> list[Notification]:
    rows = conn.execute(
        select(*COLUMNS).where(notifications.c.order_id.in_(order_ids)).order_by(notifications.c.id)
    )
    return [from_row(row) for row in rows]


def list_notifications(
    conn: Connection,
    *,
    status: NotificationStatus | None = None,
    order_id: uuid.UUID | None = None,
    limit: int = 50,
) -> list[Notification]:
    query = select(*COLUMNS).order_by(notifications.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(notifications.c.status == status.value)
    if order_id is not None:
        query = query.where(notifications.c.order_id == order_id)
    return [from_row(row) for row in conn.execute(query)]


def get_notification(conn: Connection, notification_id: int) -> Notification:
    row = conn.execute(select(*COLUMNS).where(notifications.c.id == notification_id)).first()
    if row is None:
        raise NotificationNotFound(
            f"notification {notification_id} does not exist", notification=notification_id
        )
    return from_row(row)


def failed_ids(conn: Connection, limit: int = 10_000) -> list[int]:
    rows = conn.execute(
        select(notifications.c.id)
        .where(notifications.c.status == NotificationStatus.FAILED.value)
        .order_by(notifications.c.id)
        .limit(limit)
    )
    return [nid for (nid,) in rows]


def retry_notification(conn: Connection, notification_id: int) -> Notification:
    """An operator's retry: a failed notification becomes pending, due now, with fresh tries.

    The caller wakes the relay after the transaction commits (wakeups.Nudger).
    """
    current = get_notification(conn, notification_id)
    if not notification_can_move(current.status, NotificationStatus.PENDING):
        raise NotificationNotRetryable(
            f"notification {notification_id} is {current.status}; only failed ones are retried"
        )
    now = utcnow()
    moved = conn.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.status == NotificationStatus.FAILED.value,
        )
        .values(
            status=NotificationStatus.PENDING.value,
            attempts=0,
            due_at=now,
            enqueued_at=None,
            updated_at=now,
        )
        .returning(*COLUMNS)
    ).first()
    if moved is None:
        raise NotificationNotRetryable(f"notification {notification_id} changed meanwhile")
    record_event(
        conn, current.order_id, "notification_retried",
        f"notification {notification_id} back to pending by the operator", at=now,
    )  # fmt: skip
    return from_row(moved)
