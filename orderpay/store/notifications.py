"""Notifications as read from the outbox table, the rows the relay hands to RQ, and where new
rows go (NotifyTarget). One claimed attempt is store/notification_attempts.py; every write of
the table is the store/outbox package's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Row, bindparam, select

from orderpay.domain.states import NotificationStatus
from orderpay.errors import NotificationNotFound
from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.schema import notifications

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
    lease_until: datetime | None
    enqueued_at: datetime | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    refund_id: uuid.UUID | None = None  # a refund's notification (kind refund_sent)


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
    notifications.c.lease_until,
    notifications.c.enqueued_at,
    notifications.c.sent_at,
    notifications.c.created_at,
    notifications.c.updated_at,
    notifications.c.refund_id,
)


def from_row(row: Row[*tuple[Any, ...]]) -> Notification:
    """The notification in a row of COLUMNS, whose keys are its fields' names."""
    fields = dict(row._mapping)
    fields["status"] = NotificationStatus(fields["status"])
    return Notification(**fields)


def notifications_of(conn: Connection, order_ids: list[uuid.UUID]) -> list[Notification]:
    rows = conn.execute(
        select(*COLUMNS).where(notifications.c.order_id.in_(order_ids)).order_by(notifications.c.id)
    )
    return [from_row(row) for row in rows]


def list_notifications(
    conn: Connection,
    window: Window,
    *,
    status: NotificationStatus | None = None,
    order_id: uuid.UUID | None = None,
) -> Page[Notification]:
    """A page of notifications, newest first."""
    query = select(*COLUMNS)
    if status is not None:
        query = query.where(notifications.c.status == status.value)
    if order_id is not None:
        query = query.where(notifications.c.order_id == order_id)
    query = windowed(query, notifications.c.created_at, notifications.c.id, window, int)
    rows = [from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda n: (n.created_at, n.id))


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


def by_gateway_message(conn: Connection, message_id: str) -> tuple[int, uuid.UUID, str] | None:
    """(id, order id, status) of the notification sent as the gateway's `message_id`."""
    row = conn.execute(
        select(notifications.c.id, notifications.c.order_id, notifications.c.status).where(
            notifications.c.gateway_message_id == message_id
        )
    ).first()
    return None if row is None else (row.id, row.order_id, row.status)


def pending_due_times(conn: Connection, notification_ids: list[int]) -> dict[int, datetime]:
    """When each pending row among these may next be sent (its due time, or the end of its
    lease), in one statement; rows no longer pending are left out."""
    if not notification_ids:
        return {}
    rows = conn.execute(_PENDING_DUE_AMONG, {"b_ids": notification_ids})
    return {row.id: max(row.due_at, row.lease_until or row.due_at) for row in rows}


_PENDING_DUE_AMONG = select(
    notifications.c.id, notifications.c.due_at, notifications.c.lease_until
).where(
    notifications.c.id.in_(bindparam("b_ids", expanding=True)),
    notifications.c.status == NotificationStatus.PENDING.value,
)

# --- What the relay hands to RQ (locked against other relays, not written here) --------------


def due(rows: FromClause) -> tuple[ColumnElement[bool], ...]:
    """What makes a row of `rows` (the table, or an alias of it) one to send at b_now: pending,
    due, and held by no attempt (no lease, or one that ran out). The relay hands out only such
    rows, and a claim (store.outbox) takes only such rows."""
    return (
        rows.c.status == NotificationStatus.PENDING.value,
        rows.c.due_at <= bindparam("b_now"),
        rows.c.lease_until.is_(None) | (rows.c.lease_until <= bindparam("b_now")),
    )


_DUE_IDS = (
    select(notifications.c.id)
    .where(*due(notifications), notifications.c.attempts < bindparam("b_max_attempts"))
    .order_by(notifications.c.due_at)
    .limit(bindparam("b_limit"))
)


def due_ids(conn: Connection, now: datetime, limit: int, max_attempts: int) -> list[int]:
    """Up to `limit` rows to send at `now` with tries left, the longest due first: the embedded
    worker's next batch (each is still claimed right before its send)."""
    params = {"b_now": now, "b_limit": limit, "b_max_attempts": max_attempts}
    return list(conn.execute(_DUE_IDS, params).scalars())


_RELAYABLE = (
    select(notifications.c.id, notifications.c.attempts, notifications.c.enqueued_at)
    .where(*due(notifications))
    .order_by(notifications.c.due_at)
    .limit(bindparam("b_limit"))
)
_NEVER_HANDED_OUT = _RELAYABLE.where(notifications.c.enqueued_at.is_(None))
_HANDED_OUT_BEFORE = _RELAYABLE.where(notifications.c.enqueued_at <= bindparam("b_handed_before"))
# Keyed by (handed out before, SQLite): SQLite has one writer at a time and no row locks.
_RELAY_STATEMENTS = {
    (False, True): _NEVER_HANDED_OUT,
    (True, True): _HANDED_OUT_BEFORE,
    (False, False): _NEVER_HANDED_OUT.with_for_update(skip_locked=True),
    (True, False): _HANDED_OUT_BEFORE.with_for_update(skip_locked=True),
}


@dataclass(frozen=True, slots=True)
class Relayable:
    notification_id: int
    attempts: int
    handed_out_at: datetime | None  # when the relay last gave it to RQ: RQ may still hold its job

    @property
    def handed_out(self) -> bool:
        return self.handed_out_at is not None


def relay_candidates(
    conn: Connection, *, now: datetime, handed_before: datetime | None, limit: int
) -> list[Relayable]:
    """Due rows no attempt holds, the longest due first: with `handed_before` None, those never
    handed to RQ; else those handed out at or before it (whose job the caller asks RQ about).
    Locked against other relays (SKIP LOCKED) until the caller's transaction ends."""
    statement = _RELAY_STATEMENTS[handed_before is not None, conn.dialect.name == "sqlite"]
    params = {"b_now": now, "b_handed_before": handed_before, "b_limit": limit}
    return [
        Relayable(row.id, row.attempts, row.enqueued_at) for row in conn.execute(statement, params)
    ]


# --- Where new rows go ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """How new notifications are sent: the channel written on the row, and the merchant's URL
    for `webhook`. A row keeps its channel: changing the setting affects new rows only."""

    channel: str = "log"
    webhook_url: str | None = None

    def recipient_for(self, customer_phone: str) -> str:
        if self.channel == "webhook" and self.webhook_url:
            return self.webhook_url
        return customer_phone
