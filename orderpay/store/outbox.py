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

from sqlalchemy import (
    Connection,
    Insert,
    String,
    Text,
    bindparam,
    case,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus, notification_can_move
from orderpay.errors import NotificationNotRetryable
from orderpay.store import order_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.notification_attempts import (
    ATTEMPT_COLUMNS,
    DUE_AMONG,
    DUE_ROWS,
    JOINED,
    NEXT_DUE_ID,
    PICKED,
    Attempt,
    Outcome,
    Recorded,
    attempt_of,
    changes_of,
    event_of,
)
from orderpay.store.notifications import (
    COLUMNS,
    Notification,
    NotifyTarget,
    due,
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


# --- Attempts ---------------------------------------------------------------------------------

# No limit on the tries a claim may make (a caller without a retry policy).
ANY_TRIES = 2**31 - 1

_claim_values = {
    "attempts": notifications.c.attempts + 1,
    "lease_until": bindparam("v_lease_until"),
    "updated_at": bindparam("b_now"),
}
# Postgres: one statement claims and returns the attempts; the rows no other claim holds are
# locked first (SKIP LOCKED: NEXT_DUE_ID, PICKED), and the UPDATE re-checks its conditions on
# them, so of two concurrent claims of a row one takes it, the other nothing.
_CLAIM_NEXT = (
    update(notifications)
    .where(notifications.c.id == NEXT_DUE_ID, *JOINED)
    .values(_claim_values)
    .returning(*ATTEMPT_COLUMNS)
)
_CLAIM_AMONG = (
    update(notifications)
    .where(notifications.c.id.in_(select(PICKED.c.id)), *due(notifications), *JOINED)
    .values(_claim_values)
    .returning(*ATTEMPT_COLUMNS)
)
# SQLite (one writer at a time, under BEGIN IMMEDIATE) reads (DUE_ROWS, DUE_AMONG), then sets.
_SET_CLAIM = (
    update(notifications)
    .values(_claim_values)
    .where(notifications.c.id == bindparam("b_id"), notifications.c.attempts == bindparam("b_n"))
)
# Every write of an attempt's outcome is conditional on the claim still holding the row, but
# a message that went out: it is recorded while the row is pending, whoever holds it.
_STILL_PENDING = update(notifications).where(
    notifications.c.id == bindparam("b_id"), notifications.c.status == _PENDING
)
_OWNED = update(notifications).where(
    notifications.c.id == bindparam("b_id"),
    notifications.c.status == _PENDING,
    notifications.c.attempts == bindparam("b_attempts"),
    notifications.c.lease_until == bindparam("b_lease"),
)


def claim_among(
    conn: Connection,
    notification_ids: Sequence[int],
    limit: int,
    lease: timedelta,
    now: datetime,
    max_attempts: int = ANY_TRIES,
) -> list[Attempt]:
    """An RQ job's next attempts: up to `limit` of these rows that are pending, due, held
    by no one and with tries left, lowest id first, in one statement, all with the same
    lease. Rows another worker is claiming meanwhile are left to it (SKIP LOCKED)."""
    if not notification_ids or limit < 1:
        return []
    lease_until = now + lease
    params = {
        "b_ids": list(notification_ids),
        "b_now": now,
        "b_limit": limit,
        "b_max_attempts": max_attempts,
    }
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_CLAIM_AMONG, {**params, "v_lease_until": lease_until}).all()
        return sorted((attempt_of(row) for row in rows), key=lambda a: a.notification_id)
    claimed = [_set_claim(conn, row, lease_until, now) for row in conn.execute(DUE_AMONG, params)]
    return [attempt for attempt in claimed if attempt is not None]


def claim_next_due(
    conn: Connection, lease: timedelta, now: datetime, max_attempts: int = ANY_TRIES
) -> Attempt | None:
    """The embedded drain's next attempt: the due row with tries left that waited longest
    and that no other worker holds (SKIP LOCKED), claimed right before it is sent."""
    lease_until = now + lease
    params = {"b_now": now, "b_max_attempts": max_attempts}
    if conn.dialect.name == "postgresql":
        row = conn.execute(_CLAIM_NEXT, {**params, "v_lease_until": lease_until}).first()
        return None if row is None else attempt_of(row)
    row = conn.execute(DUE_ROWS, params).first()
    return None if row is None else _set_claim(conn, row, lease_until, now)


def _set_claim(
    conn: Connection, row: Row[*tuple[Any, ...]], lease_until: datetime, now: datetime
) -> Attempt | None:
    params = {"b_id": row.id, "b_n": row.attempts, "b_now": now, "v_lease_until": lease_until}
    taken = conn.execute(_SET_CLAIM, params)
    return attempt_of(row, row.attempts + 1, lease_until) if taken.rowcount == 1 else None


_WITHOUT_TRIES_LEFT = (
    *due(notifications),
    notifications.c.attempts >= bindparam("b_max_attempts"),
)
_FAIL_WITHOUT_TRIES_LEFT = (
    update(notifications)
    .where(*_WITHOUT_TRIES_LEFT)
    .values(
        status=NotificationStatus.FAILED.value,
        lease_until=None,
        updated_at=bindparam("b_now"),
        last_error=case(
            (notifications.c.lease_until.is_(None), bindparam("b_settings_changed")),
            else_=bindparam("b_lease_ran_out"),
        ),
    )
    .returning(notifications.c.id, notifications.c.order_id, notifications.c.last_error)
)


def fail_without_tries_left(
    conn: Connection, max_attempts: int, now: datetime, among: Sequence[int] | None = None
) -> list[int]:
    """Rows due (or whose lease ran out) that have made `max_attempts` tries become `failed`,
    with their order events; the ids failed. A last try whose lease ran out without an outcome
    (a worker killed, a send that outlasted it) may or may not have reached the customer: the
    error says so, and an operator's retry sends again. `among`: only these rows."""
    statement = _FAIL_WITHOUT_TRIES_LEFT
    if among is not None:
        if not among:
            return []
        statement = statement.where(notifications.c.id.in_(list(among)))
    params = {
        "b_now": now,
        "b_max_attempts": max_attempts,
        "b_lease_ran_out": (
            f"try {max_attempts} of {max_attempts} ended without an outcome before its lease ran "
            "out (a worker stopped, or the send took too long): the message may have been sent"
        ),
        "b_settings_changed": f"no tries left: the retry settings allow {max_attempts}",
    }
    failed = conn.execute(statement, params).all()
    for row in failed:
        order_events.record_event(
            conn,
            row.order_id,
            "notification_failed",
            f"notification {row.id}: {row.last_error}",
            at=now,
        )
    return [row.id for row in failed]


# Postgres: the outcomes of several attempts in one statement, each setting on its row what
# changes_of gives SQLite row by row. Each row is written only if its claim still holds it (same
# attempt number and lease, as _OWNED for one row), except a send that went out: it is recorded
# on its pending row whoever holds the claim now (as _STILL_PENDING), so the row is sent once
# more at most. The order events rows of the rows written follow in the same statement.
_RECORD_SQL = """
UPDATE notifications AS x SET
  status = CASE WHEN o.outcome IN ('sent', 'failed') THEN o.outcome ELSE x.status END,
  body = CASE WHEN o.outcome IN ('sent', 'failed') THEN o.body ELSE x.body END,
  gateway_message_id = CASE o.outcome WHEN 'sent' THEN o.message_id ELSE x.gateway_message_id END,
  last_error = CASE o.outcome WHEN 'sent' THEN NULL WHEN 'released' THEN x.last_error
               ELSE o.error END,
  lease_until = NULL,
  due_at = CASE WHEN o.outcome IN ('retry', 'held') THEN o.due_at ELSE x.due_at END,
  attempts = CASE WHEN o.outcome IN ('held', 'released') THEN x.attempts - 1 ELSE x.attempts END,
  enqueued_at = CASE o.outcome WHEN 'held' THEN NULL ELSE x.enqueued_at END,
  sent_at = CASE o.outcome WHEN 'sent' THEN CAST(:e_at AS timestamptz) ELSE x.sent_at END,
  updated_at = CASE o.outcome WHEN 'released' THEN x.updated_at ELSE CAST(:e_at AS timestamptz) END
FROM unnest(CAST(:o_id AS bigint[]), CAST(:o_number AS integer[]), CAST(:o_lease AS timestamptz[]),
  CAST(:o_outcome AS text[]), CAST(:o_body AS text[]), CAST(:o_message_id AS text[]),
  CAST(:o_error AS text[]), CAST(:o_due_at AS timestamptz[]), CAST(:o_event AS text[]),
  CAST(:o_detail AS text[]))
  AS o(id, number, lease, outcome, body, message_id, error, due_at, event, detail)
WHERE x.id = o.id AND x.status = 'pending'
  AND (o.outcome = 'sent' OR (x.attempts = o.number AND x.lease_until = o.lease))
RETURNING x.id, x.order_id, o.event, o.detail
"""
_written = (
    text(_RECORD_SQL)
    .columns(notifications.c.id, notifications.c.order_id, event=String(), detail=Text())
    .cte("written")
)
_RECORD = select(_written.c.id).add_cte(
    order_events.insert_events_from(
        select(
            _written.c.order_id,
            bindparam("e_at", type_=UTCDateTime()),
            _written.c.event,
            _written.c.detail,
        )
        .where(_written.c.event.is_not(None))
        .order_by(_written.c.id)
    ).cte("events")
)


def record_outcomes(conn: Connection, outcomes: Sequence[Recorded]) -> set[int]:
    """Record what became of claimed attempts (store.notification_attempts.Recorded), with their
    order events, in one statement; the ids of the rows written: an attempt that no longer
    holds its row (its lease ran out and another took the row over) writes nothing, unless its
    message went out and the row is still pending."""
    if not outcomes:
        return set()
    now = utcnow()
    events = [event_of(done) for done in outcomes]
    if conn.dialect.name != "postgresql":
        return {
            done.attempt.notification_id
            for done, event in zip(outcomes, events, strict=True)
            if _record_one(conn, done, event, now)
        }
    params = {
        "e_at": now,
        "o_id": [done.attempt.notification_id for done in outcomes],
        "o_number": [done.attempt.number for done in outcomes],
        "o_lease": [done.attempt.lease_until for done in outcomes],
        "o_outcome": [done.outcome.value for done in outcomes],
        "o_body": [done.body for done in outcomes],
        "o_message_id": [done.message_id for done in outcomes],
        "o_error": [done.error for done in outcomes],
        "o_due_at": [done.due_at for done in outcomes],
        "o_event": [event[0] if event else None for event in events],
        "o_detail": [event[1] if event else None for event in events],
    }
    return {nid for (nid,) in conn.execute(_RECORD, params)}


def _record_one(
    conn: Connection, done: Recorded, event: tuple[str, str] | None, now: datetime
) -> bool:
    """SQLite (one writer at a time): the same writes, one row at a time."""
    a = done.attempt
    params = {"b_id": a.notification_id, "b_attempts": a.number, "b_lease": a.lease_until}
    if done.outcome is Outcome.SENT:
        statement, params = _STILL_PENDING, {"b_id": a.notification_id}
    else:
        statement = _OWNED
    if conn.execute(statement, {**params, **changes_of(done, now)}).rowcount != 1:
        return False
    if event is not None:
        order_events.record_event(conn, a.order_id, *event, at=now)
    return True


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
