"""Delivering one notification (DESIGN.md section 5, Notify): the job's rules.

One attempt is three steps, the channel called between transactions:
1. claim: a compare-and-set on (status pending, due, attempts = n) -> attempts n+1 and a lease
   (due_at = now + lease), so two workers, or a job and its duplicate, never send together;
2. send through the channel;
3. record: `sent` with the gateway's message id; or, on a transient failure, a retry at
   due_at = now + backoff; or `failed` with the error after the last try or a refusal.
A worker killed mid-send leaves the lease to expire; the relay (or the embedded drain) then
hands the row out again, and the next attempt sends it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select, update

from orderpay.channels import Channel, OutgoingMessage
from orderpay.clock import utcnow
from orderpay.db import Transactional
from orderpay.errors import GatewayRejected, GatewayUnavailable
from orderpay.models import customers, notifications, orders, payments
from orderpay.money import Money, exponent
from orderpay.states import NotificationStatus
from orderpay.timeline import record_events, with_event

log = logging.getLogger("orderpay.notify")


class Delivery(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # a transient failure; tried again after the backoff
    FAILED = "failed"  # the last try failed, or the gateway refused for good
    SKIPPED = "skipped"  # not ours to send now: already handled, not due, or leased elsewhere


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Delivery
    notification_id: int
    attempts: int = 0
    error: str | None = None
    retry_in: float | None = None  # RETRY: seconds until the next try
    due_in: float | None = None  # SKIPPED: seconds until a pending row is due (or its lease ends)


@dataclass(frozen=True, slots=True)
class Attempt:
    notification_id: int
    number: int
    order_id: uuid.UUID
    payment_id: uuid.UUID
    recipient: str
    amount: Money
    customer_name: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    intervals: tuple[int, ...]  # seconds before each retry; len(intervals) retries
    lease_seconds: float

    @property
    def max_attempts(self) -> int:
        return len(self.intervals) + 1

    def delay_after(self, attempt: int) -> int:
        return self.intervals[min(attempt, len(self.intervals)) - 1]


def order_reference(order_id: uuid.UUID) -> str:
    """A short reference a customer can quote: the order id's first 8 hex digits."""
    return order_id.hex[:8].upper()


def format_amount(amount: Money) -> str:
    """'GHS 1,250.00', 'UGX 3,000': grouped, with the currency's decimals."""
    return f"{amount.currency} {amount.as_decimal():,.{exponent(amount.currency)}f}"


def render(attempt: Attempt, merchant_name: str) -> OutgoingMessage:
    first_name = attempt.customer_name.split()[0] if attempt.customer_name.split() else ""
    greeting = f"Hi {first_name}, w" if first_name else "W"
    text = (
        f"{greeting}e received your payment of {format_amount(attempt.amount)} for order "
        f"{order_reference(attempt.order_id)}. Thank you! - {merchant_name}"
    )
    event = {
        "notification": attempt.notification_id,
        "order": str(attempt.order_id),
        "payment": str(attempt.payment_id),
        "amount": attempt.amount.as_string(),
        "currency": attempt.amount.currency,
        "reference": order_reference(attempt.order_id),
        "merchant": merchant_name,
        "message": text,
    }
    return OutgoingMessage(attempt.notification_id, attempt.recipient, text, event)


_ATTEMPT_COLUMNS = (
    notifications.c.id,
    notifications.c.attempts,
    notifications.c.order_id,
    notifications.c.payment_id,
    notifications.c.recipient,
    payments.c.amount,
    payments.c.currency,
    customers.c.name,
)


def _attempts_query(*conditions: Any) -> Select[Any]:
    return (
        select(*_ATTEMPT_COLUMNS)
        .join(payments, payments.c.id == notifications.c.payment_id)
        .join(orders, orders.c.id == notifications.c.order_id)
        .join(customers, customers.c.id == orders.c.customer_id)
        .where(notifications.c.status == NotificationStatus.PENDING.value, *conditions)
        .order_by(notifications.c.due_at)
    )


# Built once: these run for every message, and building a statement costs more than running it.
_ONE_DUE = _attempts_query(
    notifications.c.id == bindparam("b_id"), notifications.c.due_at <= bindparam("b_due")
).limit(1)
_DUE = _attempts_query(notifications.c.due_at <= bindparam("b_due")).limit(bindparam("b_limit"))
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True, of=notifications)
_PENDING_DUE_AT = select(notifications.c.due_at).where(
    notifications.c.id == bindparam("b_id"),
    notifications.c.status == NotificationStatus.PENDING.value,
)
# Every write of an attempt is conditional on the row still being that attempt's.
_OWNED = update(notifications).where(
    notifications.c.id == bindparam("b_id"),
    notifications.c.status == NotificationStatus.PENDING.value,
    notifications.c.attempts == bindparam("b_attempts"),
)

# On Postgres the job's claim and its record are one statement each. The claim's UPDATE
# re-checks its conditions on the row it waited for, so of two concurrent claims one takes
# the row and the other finds the lease and returns nothing. (SQLite cannot return the
# joined columns from UPDATE ... FROM, so it reads, then sets.)
_CLAIM_ONE_DUE = (
    update(notifications)
    .where(
        notifications.c.id == bindparam("b_id"),
        notifications.c.status == NotificationStatus.PENDING.value,
        notifications.c.due_at <= bindparam("b_due"),
        payments.c.id == notifications.c.payment_id,
        orders.c.id == notifications.c.order_id,
        customers.c.id == orders.c.customer_id,
    )
    .values(
        attempts=notifications.c.attempts + 1,
        due_at=bindparam("v_lease_until"),
        updated_at=bindparam("b_due"),
    )
    .returning(*_ATTEMPT_COLUMNS)
)
_SENT_WITH_EVENT = with_event(
    _OWNED.values(
        status=NotificationStatus.SENT.value,
        body=bindparam("v_body"),
        gateway_message_id=bindparam("v_message_id"),
        last_error=None,
        sent_at=bindparam("e_at"),
        updated_at=bindparam("e_at"),
    ).returning(notifications.c.order_id)
)


def _claim(conn: Connection, rows: list[Any], policy: RetryPolicy, now: datetime) -> list[Attempt]:
    """Take the next attempt of each row whose attempt count is still what was read."""
    claimed = []
    lease_until = now + timedelta(seconds=policy.lease_seconds)
    for nid, attempts, order_id, payment_id, recipient, amount, currency, name in rows:
        taken = conn.execute(
            _OWNED,
            {
                "b_id": nid,
                "b_attempts": attempts,
                "attempts": attempts + 1,
                "due_at": lease_until,
                "updated_at": now,
            },
        )
        if taken.rowcount == 1:
            claimed.append(Attempt(
                nid, attempts + 1, order_id, payment_id, recipient, Money(amount, currency), name
            ))  # fmt: skip
    return claimed


def claim_attempt(
    conn: Connection, notification_id: int, policy: RetryPolicy, now: datetime
) -> Attempt | None:
    """Step 1 for one row (an RQ job): its next attempt, if pending, due and not leased."""
    if conn.dialect.name == "postgresql":
        lease_until = now + timedelta(seconds=policy.lease_seconds)
        row = conn.execute(
            _CLAIM_ONE_DUE, {"b_id": notification_id, "b_due": now, "v_lease_until": lease_until}
        ).first()
        if row is None:
            return None
        nid, number, order_id, payment_id, recipient, amount, currency, name = row
        return Attempt(nid, number, order_id, payment_id, recipient, Money(amount, currency), name)
    rows = list(conn.execute(_ONE_DUE, {"b_id": notification_id, "b_due": now}))
    claimed = _claim(conn, rows, policy, now)
    return claimed[0] if claimed else None


def claim_due_attempts(
    conn: Connection, policy: RetryPolicy, now: datetime, limit: int
) -> list[Attempt]:
    """Step 1 for the embedded drain: due rows no other worker holds (SKIP LOCKED)."""
    # SQLite has one writer at a time (BEGIN IMMEDIATE) and no SKIP LOCKED.
    statement = _DUE if conn.dialect.name == "sqlite" else _DUE_SKIP_LOCKED
    rows = list(conn.execute(statement, {"b_due": now, "b_limit": limit}))
    return _claim(conn, rows, policy, now)


def deliver(
    db: Transactional,
    channel: Channel,
    notification_id: int,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """One delivery attempt of one notification; safe to call twice or concurrently."""
    with db.transaction() as conn:
        now = utcnow()
        attempt = claim_attempt(conn, notification_id, policy, now)
        if attempt is None:
            due_at = conn.execute(_PENDING_DUE_AT, {"b_id": notification_id}).scalar_one_or_none()
            due_in = (due_at - now).total_seconds() if due_at is not None else None
            return DeliveryResult(Delivery.SKIPPED, notification_id, due_in=due_in)
    return send_attempt(db, channel, attempt, merchant_name=merchant_name, policy=policy)


def send_attempt(
    db: Transactional,
    channel: Channel,
    attempt: Attempt,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """Steps 2 and 3 for a claimed attempt: send outside any transaction, then record."""
    message = render(attempt, merchant_name)
    try:
        message_id = channel.send(message)
    except (GatewayUnavailable, GatewayRejected) as error:
        final = isinstance(error, GatewayRejected) or attempt.number >= policy.max_attempts
        with db.transaction() as conn:
            return _record_failure(conn, attempt, message, error.message, final, policy)
    with db.transaction() as conn:
        return _record_sent(conn, attempt, message, message_id)


def _owned(attempt: Attempt, **values: Any) -> dict[str, Any]:
    """Parameters for _OWNED: only the attempt that holds the row may record its outcome."""
    return {"b_id": attempt.notification_id, "b_attempts": attempt.number, **values}


def release_attempt(conn: Connection, attempt: Attempt) -> None:
    """Undo a claim whose send never started: the row is due again at once."""
    conn.execute(_OWNED, _owned(attempt, attempts=attempt.number - 1, due_at=utcnow()))


def _record_sent(
    conn: Connection, attempt: Attempt, message: OutgoingMessage, message_id: str
) -> DeliveryResult:
    if not _mark_sent(conn, attempt, message.text, message_id):
        # Our lease ran out and another attempt took the row over while we were sending.
        log.warning("notification %s: sent, but attempt %s no longer held the row",
                    attempt.notification_id, attempt.number)  # fmt: skip
        return DeliveryResult(Delivery.SKIPPED, attempt.notification_id, attempt.number)
    return DeliveryResult(Delivery.SENT, attempt.notification_id, attempt.number)


def _mark_sent(conn: Connection, attempt: Attempt, body: str, message_id: str) -> bool:
    """`sent`, with its timeline row, if the attempt still holds the row."""
    now = utcnow()
    detail = f"notification {attempt.notification_id} sent ({message_id})"
    if conn.dialect.name == "postgresql":
        written = conn.execute(
            _SENT_WITH_EVENT,
            _owned(
                attempt,
                v_body=body,
                v_message_id=message_id,
                e_at=now,
                e_event="notification_sent",
                e_detail=detail,
            ),
        ).first()
        return written is not None
    moved = conn.execute(
        _OWNED,
        _owned(
            attempt,
            status=NotificationStatus.SENT.value,
            body=body,
            gateway_message_id=message_id,
            last_error=None,
            sent_at=now,
            updated_at=now,
        ),
    )
    if moved.rowcount != 1:
        return False
    record_events(conn, attempt.order_id, [("notification_sent", detail)], at=now)
    return True


# Notification ids are positive: statements aimed at this id find no row and change nothing.
_NO_ROW = -1


def compile_ahead(conn: Connection, policy: RetryPolicy) -> None:
    """Run a job's statements once against no row, so SQLAlchemy compiles them in this process.

    RQ's default worker forks a work horse per job. A horse inherits its parent's compiled
    statements; without this it compiles them again for every job and throws them away
    (about 10 ms a job on a 2-core machine). Changes nothing in the database.
    """
    now = utcnow()
    claim_attempt(conn, _NO_ROW, policy, now)
    conn.execute(_PENDING_DUE_AT, {"b_id": _NO_ROW})
    nobody = uuid.UUID(int=0)
    attempt = Attempt(_NO_ROW, 1, nobody, nobody, "", Money(0, "GHS"), "")
    _mark_sent(conn, attempt, "", "")


def _record_failure(
    conn: Connection,
    attempt: Attempt,
    message: OutgoingMessage,
    error: str,
    final: bool,
    policy: RetryPolicy,
) -> DeliveryResult:
    now = utcnow()
    if final:
        values: dict[str, Any] = {"status": NotificationStatus.FAILED.value, "body": message.text}
        event = ("notification_failed", f"notification {attempt.notification_id}: {error}")
        retry_in = None
    else:
        retry_in = policy.delay_after(attempt.number)
        # enqueued_at stays: the job's own retry (RQ) brings it back, or the embedded drain
        # once due_at comes; the relay steps in only if an RQ retry is lost.
        # RQ schedules its retry after this moment with the same interval, so the retry finds
        # the row due; if it ever runs early, it does nothing and the relay steps in.
        values = {"due_at": now + timedelta(seconds=retry_in)}
        event = (
            "notification_attempt_failed",
            f"notification {attempt.notification_id}, try {attempt.number}: {error}; "
            f"retry in {retry_in} s",
        )
    moved = conn.execute(_OWNED, _owned(attempt, last_error=error, updated_at=now, **values))
    if moved.rowcount != 1:
        return DeliveryResult(Delivery.SKIPPED, attempt.notification_id, attempt.number, error)
    record_events(conn, attempt.order_id, [event], at=now)
    outcome = Delivery.FAILED if final else Delivery.RETRY
    return DeliveryResult(outcome, attempt.notification_id, attempt.number, error, retry_in)
