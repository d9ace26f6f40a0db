"""Notifications: the outbox rows that tell a customer their payment settled."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from orderpay.models import notifications
from orderpay.states import NotificationStatus


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
