"""The outbox's rows outside an attempt: new rows (in the transaction that settles their
payment), the relay's marks, an operator's retry, the gateway's delivery reports, and
retention's masking. Part of store/outbox, the one writer of the notifications table."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    String,
    Text,
    bindparam,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus, notification_can_move
from orderpay.errors import NotificationNotRetryable
from orderpay.store import order_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.notifications import (
    COLUMNS,
    Notification,
    NotifyTarget,
    from_row,
    get_notification,
)
from orderpay.store.schema import UTCDateTime, notifications

PAYMENT_RECEIVED = "payment_received"
REFUND_SENT = "refund_sent"
_PENDING = NotificationStatus.PENDING.value


# --- New rows ---------------------------------------------------------------------------------

# A payment's own notifications: the partial unique index on (payment_id, kind) for rows that
# are not a refund's (schema.py).
_OF_PAYMENT = notifications.c.refund_id.is_(None)
_INSERT = InsertIgnoring(
    notifications, ["payment_id", "kind"], notifications.c.id, where=_OF_PAYMENT
)
# A refund's: one of a kind per refund (the other partial unique index).
_INSERT_OF_REFUND = InsertIgnoring(
    notifications,
    ["refund_id", "kind"],
    notifications.c.id,
    where=notifications.c.refund_id.is_not(None),
)


def add_notification(
    conn: Connection,
    *,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    recipient: str,
    target: NotifyTarget,
    refund_id: uuid.UUID | None = None,
) -> int | None:
    """Insert the payment's `payment_received` outbox row, or with `refund_id` that refund's
    `refund_sent` row (its body shows the refund's amount); None if it already has one."""
    now = utcnow()
    values = {
        "order_id": order_id,
        "payment_id": payment_id,
        "refund_id": refund_id,
        "kind": PAYMENT_RECEIVED if refund_id is None else REFUND_SENT,
        "channel": target.channel,
        "recipient": recipient,
        # Rendered by the job when it sends, with the merchant's current name.
        "body": "",
        "status": _PENDING,
        "attempts": 0,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }
    insert = _INSERT if refund_id is None else _INSERT_OF_REFUND
    inserted: int | None = conn.execute(insert(conn), values).scalar_one_or_none()
    return inserted


def insert_notification_from(paid: Any) -> Insert:
    """add_notification as part of a larger Postgres statement: the `payment_received` row of
    each payment `paid` (a SELECT of order_id, payment_id, channel, recipient, in the order
    the rows are to get their ids) yields; v_now is bound. Returns each new row's id and
    payment; a payment that has its row already gets none."""
    now = bindparam("v_now", type_=UTCDateTime())
    rows = paid.subquery("paid")
    columns = [
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
    ]
    values = select(
        rows.c.order_id,
        rows.c.payment_id,
        literal(PAYMENT_RECEIVED, String()),
        rows.c.channel,
        rows.c.recipient,
        literal("", Text()),
        literal(_PENDING, String()),
        literal(0),
        now,
        now,
        now,
    )
    return (
        postgresql.insert(notifications)
        .from_select(columns, values)
        .on_conflict_do_nothing(index_elements=["payment_id", "kind"], index_where=_OF_PAYMENT)
        .returning(notifications.c.id, notifications.c.payment_id)
    )


# --- The relay --------------------------------------------------------------------------------

_MARK_ENQUEUED = (
    update(notifications)
    .where(notifications.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(enqueued_at=bindparam("v_now"))
)


def mark_enqueued(conn: Connection, notification_ids: list[int], now: datetime) -> None:
    """The relay hands these rows to RQ (or found RQ still holding their jobs) at `now`."""
    if notification_ids:
        conn.execute(_MARK_ENQUEUED, {"b_ids": notification_ids, "v_now": now})


_UNMARK_ENQUEUED = (
    update(notifications)
    .where(
        notifications.c.id == bindparam("b_id"),
        notifications.c.enqueued_at == bindparam("b_marked_at"),
    )
    .values(enqueued_at=bindparam("v_before"))
)


def unmark_enqueued(
    conn: Connection, handed_out_at: dict[int, datetime | None], marked_at: datetime
) -> None:
    """Redis did not take the jobs of rows marked at `marked_at`: each row gets back when it
    was handed out before (None: never), unless another relay has marked it since."""
    conn.execute(
        _UNMARK_ENQUEUED,
        [
            {"b_id": nid, "b_marked_at": marked_at, "v_before": before}
            for nid, before in handed_out_at.items()
        ],
    )


# --- The operator, and the gateway's delivery reports ------------------------------------------


def retry_notification(conn: Connection, notification_id: int, *, operator: str) -> Notification:
    """An operator's retry: a failed notification becomes pending, due now, with fresh tries.
    `operator`: who retries it (Settings.operator_name), recorded in the order events.

    The caller wakes the relay after the transaction commits (wakeups.Nudger).
    """
    current = get_notification(conn, notification_id)
    if not notification_can_move(current.status, NotificationStatus.PENDING):
        raise NotificationNotRetryable(
            f"notification {notification_id} is {current.status}; only failed ones are retried"
        )
    if "*" in current.recipient:
        # `db prune` masked it: sending again would go to a number nobody can read.
        raise NotificationNotRetryable(
            f"notification {notification_id} has a masked recipient (db prune); it cannot be sent"
        )
    now = utcnow()
    moved = conn.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.status == NotificationStatus.FAILED.value,
        )
        .values(
            status=_PENDING,
            attempts=0,
            due_at=now,
            lease_until=None,
            enqueued_at=None,
            updated_at=now,
        )
        .returning(*COLUMNS)
    ).first()
    if moved is None:
        raise NotificationNotRetryable(f"notification {notification_id} changed meanwhile")
    order_events.record_event(
        conn,
        current.order_id,
        "notification_retried",
        f"notification {notification_id} back to pending by the operator",
        at=now,
        operator=operator,
    )
    return from_row(moved)


def record_delivery(
    conn: Connection,
    notification_id: int,
    order_id: uuid.UUID,
    target: NotificationStatus,
    *,
    failure_reason: str | None,
    detail: str,
) -> bool:
    """`sent` -> `delivered` | `undelivered` (a delivery report); False if not `sent`."""
    if not notification_can_move(NotificationStatus.SENT, target):
        raise ValueError(f"notification transition sent -> {target} is not allowed")
    now = utcnow()
    moved = conn.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.status == NotificationStatus.SENT.value,
        )
        .values(
            status=target.value,
            last_error=failure_reason if target is NotificationStatus.UNDELIVERED else None,
            updated_at=now,
        )
    )
    if moved.rowcount != 1:
        return False
    order_events.record_event(conn, order_id, f"notification_{target.value}", detail, at=now)
    return True


def mask_contacts(conn: Connection, masked: list[dict[str, Any]]) -> int:
    """Retention: masked v_body, v_to over rows not pending and still b_body, b_to (b_id)."""
    n = notifications.c
    cas = (
        update(notifications)
        .where(
            n.id == bindparam("b_id"),
            n.status != _PENDING,
            n.body == bindparam("b_body"),
            n.recipient == bindparam("b_to"),
        )
        .values(body=bindparam("v_body"), recipient=bindparam("v_to"))
    )
    return sum(conn.execute(cas, row).rowcount for row in masked)
