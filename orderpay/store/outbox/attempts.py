"""An attempt's writes: the claim (a compare-and-set that counts the attempt and sets its lease),
its outcome, and the failing of a row whose last try ended without one. Only the claim that holds
the row (its attempt number and lease) records an outcome, except a message that went out. Part
of store/outbox, the one writer of the notifications table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Text,
    bindparam,
    case,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.store import order_events
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
    due,
)
from orderpay.store.schema import UTCDateTime, notifications

_PENDING = NotificationStatus.PENDING.value

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
  due_at = CASE WHEN o.outcome IN ('retry', 'held', 'throttled') THEN o.due_at ELSE x.due_at END,
  attempts = CASE WHEN o.outcome IN ('held', 'released', 'throttled') THEN x.attempts - 1
             ELSE x.attempts END,
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
