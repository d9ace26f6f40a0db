"""The notification outbox: the one module that writes the notifications table.

A row is inserted in the transaction that marks its payment succeeded, so there is no
notification without a payment and no payment without its notification. After that commit the
caller wakes the relay (wakeups.Nudger); the relay also polls, so a lost wake-up only delays.

A pending row is sent once `due_at` has come and no attempt holds it. An attempt claims the row
with a compare-and-set that counts it and sets `lease_until`; only the claim that holds the row
(its attempt number and lease) may record the outcome, so a second worker, a duplicate job or a
worker whose lease ran out never records over another's attempt. `enqueued_at` is when the
relay last handed the row to RQ.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, String, Text, bindparam, literal, select, update
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus, notification_can_move
from orderpay.errors import NotificationNotRetryable
from orderpay.store import timeline
from orderpay.store.db import InsertIgnoring
from orderpay.store.notifications import (
    ATTEMPT_COLUMNS,
    COLUMNS,
    Attempt,
    Notification,
    NotifyTarget,
    attempt_of,
    from_row,
    get_notification,
)
from orderpay.store.schema import UTCDateTime, customers, notifications, orders, payments

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
    notifications, ["refund_id", "kind"], notifications.c.id,
    where=notifications.c.refund_id.is_not(None),
)  # fmt: skip


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
    """add_notification as part of a larger Postgres statement: the outbox row of each payment
    `paid` (a CTE with `id` and `order_id` columns) yields. Parameters: v_channel, v_recipient,
    v_now. Returns the new row's id, or nothing if the payment already has one."""
    now = bindparam("v_now", type_=UTCDateTime())
    columns = ["order_id", "payment_id", "kind", "channel", "recipient", "body", "status",
               "attempts", "due_at", "created_at", "updated_at"]  # fmt: skip
    values = select(
        paid.c.order_id, paid.c.id, literal(PAYMENT_RECEIVED, String()),
        bindparam("v_channel", type_=String()), bindparam("v_recipient", type_=String()),
        literal("", Text()), literal(_PENDING, String()), literal(0), now, now, now,
    )  # fmt: skip
    return (
        postgresql.insert(notifications)
        .from_select(columns, values)
        .on_conflict_do_nothing(index_elements=["payment_id", "kind"], index_where=_OF_PAYMENT)
        .returning(notifications.c.id)
    )


# --- Attempts ---------------------------------------------------------------------------------


_joined = (
    payments.c.id == notifications.c.payment_id,
    orders.c.id == notifications.c.order_id,
    customers.c.id == orders.c.customer_id,
)
_free = notifications.c.lease_until.is_(None) | (notifications.c.lease_until <= bindparam("b_now"))
_due = (notifications.c.status == _PENDING, notifications.c.due_at <= bindparam("b_now"), _free)
_claim_values = {
    "attempts": notifications.c.attempts + 1,
    "lease_until": bindparam("v_lease_until"),
    "updated_at": bindparam("b_now"),
}
# Postgres: one statement claims and returns the attempt; the UPDATE re-checks its conditions
# on the row it waited for, so of two concurrent claims one takes the row, the other nothing.
_CLAIM_ONE = (
    update(notifications)
    .where(notifications.c.id == bindparam("b_id"), *_due, *_joined)
    .values(_claim_values)
    .returning(*ATTEMPT_COLUMNS)
)
_queued = notifications.alias("queued")  # not correlated with the UPDATE's own row
_NEXT_DUE_ID = (
    select(_queued.c.id)
    .where(
        _queued.c.status == _PENDING,
        _queued.c.due_at <= bindparam("b_now"),
        _queued.c.lease_until.is_(None) | (_queued.c.lease_until <= bindparam("b_now")),
    )
    .order_by(_queued.c.due_at)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_CLAIM_NEXT = (
    update(notifications)
    .where(notifications.c.id == _NEXT_DUE_ID, *_joined)
    .values(_claim_values)
    .returning(*ATTEMPT_COLUMNS)
)
# SQLite (one writer at a time, under BEGIN IMMEDIATE) reads, then sets.
_DUE_ROWS = (
    select(*ATTEMPT_COLUMNS).where(*_due, *_joined).order_by(notifications.c.due_at).limit(1)
)
_DUE_ROW = _DUE_ROWS.where(notifications.c.id == bindparam("b_id"))
_SET_CLAIM = (
    update(notifications)
    .where(notifications.c.id == bindparam("b_id"), notifications.c.attempts == bindparam("b_n"))
    .values(_claim_values)
)
# Every write of an attempt's outcome is conditional on the claim still holding the row.
_OWNED = update(notifications).where(
    notifications.c.id == bindparam("b_id"),
    notifications.c.status == _PENDING,
    notifications.c.attempts == bindparam("b_attempts"),
    notifications.c.lease_until == bindparam("b_lease"),
)
_SENT_WITH_EVENT = timeline.with_event(
    _OWNED.values(
        status=NotificationStatus.SENT.value,
        body=bindparam("v_body"),
        gateway_message_id=bindparam("v_message_id"),
        last_error=None,
        lease_until=None,
        sent_at=bindparam("e_at"),
        updated_at=bindparam("e_at"),
    ).returning(notifications.c.order_id)
)


def claim_attempt(
    conn: Connection, notification_id: int, lease: timedelta, now: datetime
) -> Attempt | None:
    """The next attempt of one row (an RQ job): if it is pending, due and held by no one."""
    lease_until = now + lease
    if conn.dialect.name == "postgresql":
        params = {"b_id": notification_id, "b_now": now, "v_lease_until": lease_until}
        row = conn.execute(_CLAIM_ONE, params).first()
        return None if row is None else attempt_of(row)
    row = conn.execute(_DUE_ROW, {"b_id": notification_id, "b_now": now}).first()
    return None if row is None else _set_claim(conn, row, lease_until, now)


def claim_next_due(conn: Connection, lease: timedelta, now: datetime) -> Attempt | None:
    """The embedded drain's next attempt: the due row that waited longest and that no other
    worker holds (SKIP LOCKED), claimed right before it is sent."""
    lease_until = now + lease
    if conn.dialect.name == "postgresql":
        row = conn.execute(_CLAIM_NEXT, {"b_now": now, "v_lease_until": lease_until}).first()
        return None if row is None else attempt_of(row)
    row = conn.execute(_DUE_ROWS, {"b_now": now}).first()
    return None if row is None else _set_claim(conn, row, lease_until, now)


def _set_claim(
    conn: Connection, row: Sequence[Any], lease_until: datetime, now: datetime
) -> Attempt | None:
    taken = conn.execute(
        _SET_CLAIM, {"b_id": row[0], "b_n": row[1], "b_now": now, "v_lease_until": lease_until}
    )
    return attempt_of(row, row[1] + 1, lease_until) if taken.rowcount == 1 else None


def _owned(attempt: Attempt, **values: Any) -> dict[str, Any]:
    """Parameters for _OWNED: only the attempt that holds the row may record its outcome."""
    return {
        "b_id": attempt.notification_id,
        "b_attempts": attempt.number,
        "b_lease": attempt.lease_until,
        **values,
    }


def release_attempt(conn: Connection, attempt: Attempt) -> None:
    """Undo a claim whose send never started: the row is free, and due, at once."""
    conn.execute(_OWNED, _owned(attempt, attempts=attempt.number - 1, lease_until=None))


def hold(conn: Connection, attempt: Attempt, error: str, until: datetime) -> bool:
    """Give a claim back without counting it, and keep the row pending until `until` with
    `error` as the reason (this worker cannot send through the row's channel). The relay
    hands it out again once due."""
    held = conn.execute(
        _OWNED,
        _owned(
            attempt, attempts=attempt.number - 1, lease_until=None, due_at=until,
            enqueued_at=None, last_error=error, updated_at=utcnow(),
        ),
    )  # fmt: skip
    return bool(held.rowcount == 1)


def mark_sent(conn: Connection, attempt: Attempt, body: str, message_id: str) -> bool:
    """`sent`, with its timeline row, if the attempt still holds the row."""
    now = utcnow()
    detail = f"notification {attempt.notification_id} sent ({message_id})"
    if conn.dialect.name == "postgresql":
        params = _owned(
            attempt, v_body=body, v_message_id=message_id, e_at=now,
            e_event="notification_sent", e_detail=detail,
        )  # fmt: skip
        return conn.execute(_SENT_WITH_EVENT, params).first() is not None
    moved = conn.execute(
        _OWNED,
        _owned(
            attempt, status=NotificationStatus.SENT.value, body=body,
            gateway_message_id=message_id, last_error=None, lease_until=None, sent_at=now,
            updated_at=now,
        ),
    )  # fmt: skip
    if moved.rowcount != 1:
        return False
    timeline.record_event(conn, attempt.order_id, "notification_sent", detail, at=now)
    return True


def record_failure(
    conn: Connection,
    attempt: Attempt,
    *,
    body: str,
    error: str,
    retry_in: int | None,
) -> bool:
    """A failed attempt: retried after `retry_in` seconds, or (None) the row is `failed`."""
    now = utcnow()
    if retry_in is None:
        values: dict[str, Any] = {"status": NotificationStatus.FAILED.value, "body": body}
        event = ("notification_failed", f"notification {attempt.notification_id}: {error}")
    else:
        # enqueued_at stays: the job's own retry (RQ) brings it back, or the embedded drain
        # once due_at comes; the relay steps in only if RQ no longer holds the job.
        values = {"due_at": now + timedelta(seconds=retry_in)}
        event = (
            "notification_attempt_failed",
            f"notification {attempt.notification_id}, try {attempt.number}: {error}; "
            f"retry in {retry_in} s",
        )
    moved = conn.execute(
        _OWNED, _owned(attempt, last_error=error, lease_until=None, updated_at=now, **values)
    )
    if moved.rowcount != 1:
        return False
    timeline.record_events(conn, attempt.order_id, [event], at=now)
    return True


# --- The relay --------------------------------------------------------------------------------

_MARK_ENQUEUED = (
    update(notifications)
    .where(notifications.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(enqueued_at=bindparam("v_now"))
)


def mark_enqueued(conn: Connection, notification_ids: list[int], now: datetime) -> None:
    """The relay handed these rows to RQ (or found RQ still holding their jobs) at `now`."""
    if notification_ids:
        conn.execute(_MARK_ENQUEUED, {"b_ids": notification_ids, "v_now": now})


# --- The operator, and the gateway's delivery reports ------------------------------------------


def retry_notification(conn: Connection, notification_id: int, *, operator: str) -> Notification:
    """An operator's retry: a failed notification becomes pending, due now, with fresh tries.
    `operator`: who retries it (Settings.operator_name), recorded on the timeline.

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
            status=_PENDING, attempts=0, due_at=now, lease_until=None, enqueued_at=None,
            updated_at=now,
        )
        .returning(*COLUMNS)
    ).first()  # fmt: skip
    if moved is None:
        raise NotificationNotRetryable(f"notification {notification_id} changed meanwhile")
    timeline.record_event(
        conn, current.order_id, "notification_retried",
        f"notification {notification_id} back to pending by the operator", at=now,
        operator=operator,
    )  # fmt: skip
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
    timeline.record_event(conn, order_id, f"notification_{target.value}", detail, at=now)
    return True


def mask_contacts(conn: Connection, masked: list[dict[str, Any]]) -> int:
    """Retention: masked v_body, v_to over rows not pending and still b_body, b_to (b_id)."""
    n = notifications.c
    cas = update(notifications).where(n.id == bindparam("b_id"), n.status != _PENDING,
        n.body == bindparam("b_body"), n.recipient == bindparam("b_to"),
    ).values(body=bindparam("v_body"), recipient=bindparam("v_to"))  # fmt: skip
    return sum(conn.execute(cas, row).rowcount for row in masked)
