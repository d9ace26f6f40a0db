"""Delivering one notification (DESIGN.md section 5, Notify): the job's rules.

One attempt is three steps, the channel called between transactions:
1. claim: a compare-and-set that counts the attempt and leases the row (store.outbox), right
   before the send, so two workers, or a job and its duplicate, never send one row together;
2. send through the row's own channel (the one written on it when it was queued);
3. record: `sent` with the gateway's message id; or, on any failure, a retry after the backoff,
   or `failed` with the error after the last try or a refusal.
A worker without the settings of the row's channel leaves the row pending, uncounted, with the
reason in last_error. A worker killed mid-send leaves the lease to run out; the relay (or the
embedded drain) then hands the row out again, and the next attempt sends it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.money import Money, exponent
from orderpay.errors import GatewayRejected, OrderpayError
from orderpay.notify.channels import Channel, OutgoingMessage
from orderpay.store import outbox
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import Attempt, pending_due_at

log = logging.getLogger("orderpay.notify")


class Delivery(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # a transient failure; tried again after the backoff
    FAILED = "failed"  # the last try failed, or the gateway refused for good
    SKIPPED = "skipped"  # not ours to send now: already handled, not due, or leased elsewhere
    HELD = "held"  # this worker cannot send through the row's channel: left pending


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Delivery
    notification_id: int
    attempts: int = 0
    error: str | None = None
    retry_in: float | None = None  # RETRY: seconds until the next try
    due_in: float | None = None  # SKIPPED: seconds until a pending row is due (or its lease ends)


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
    reference = order_reference(attempt.order_id)
    if attempt.refund_id is not None:  # refund_sent: the refund's amount, not the payment's
        text = (
            f"{greeting}e have sent you a refund of {format_amount(attempt.amount)} for order "
            f"{reference}. - {merchant_name}"
        )
    else:
        text = (
            f"{greeting}e received your payment of {format_amount(attempt.amount)} for order "
            f"{reference}. Thank you! - {merchant_name}"
        )
    event = {
        "notification": attempt.notification_id,
        "order": str(attempt.order_id),
        "payment": str(attempt.payment_id),
        "amount": attempt.amount.as_string(),
        "currency": attempt.amount.currency,
        "reference": reference,
        "merchant": merchant_name,
        "message": text,
    }
    if attempt.refund_id is None:
        return OutgoingMessage(attempt.notification_id, attempt.recipient, text, event)
    event["refund"] = str(attempt.refund_id)
    return OutgoingMessage(attempt.notification_id, attempt.recipient, text, event, "refund.sent")


# Finds the channel a row is sent through, by the name written on it; ConfigurationError
# when this process has no settings for it.
Channels = Callable[[str], Channel]


def deliver(
    db: Transactional,
    channels: Channels,
    notification_id: int,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """One delivery attempt of one notification; safe to call twice or concurrently."""

    def claim(conn: Connection) -> Attempt | DeliveryResult:
        now = utcnow()
        lease = timedelta(seconds=policy.lease_seconds)
        attempt = outbox.claim_attempt(conn, notification_id, lease, now)
        if attempt is not None:
            return attempt
        due_at = pending_due_at(conn, notification_id)
        due_in = (due_at - now).total_seconds() if due_at is not None else None
        return DeliveryResult(Delivery.SKIPPED, notification_id, due_in=due_in)

    claimed = retrying(db, claim)
    if isinstance(claimed, DeliveryResult):
        return claimed
    return send_attempt(db, channels, claimed, merchant_name=merchant_name, policy=policy)


def send_attempt(
    db: Transactional,
    channels: Channels,
    attempt: Attempt,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """Steps 2 and 3 for a claimed attempt: send outside any transaction, then record."""
    try:
        channel = channels(attempt.channel)
    except OrderpayError as error:
        return _hold(db, attempt, error.message, policy)
    message = render(attempt, merchant_name)
    try:
        message_id = channel.send(message)
    except Exception as error:  # any failure is a failed attempt, counted towards the limit
        reason = error.message if isinstance(error, OrderpayError) else _describe(error)
        final = isinstance(error, GatewayRejected) or attempt.number >= policy.max_attempts
        retry_in = None if final else policy.delay_after(attempt.number)
        log.warning("notification %s, try %s: %s", attempt.notification_id, attempt.number,
                    reason)  # fmt: skip
        recorded = retrying(
            db,
            lambda conn: outbox.record_failure(
                conn, attempt, body=message.text, error=reason, retry_in=retry_in
            ),
        )
        if not recorded:
            return DeliveryResult(Delivery.SKIPPED, attempt.notification_id, attempt.number, reason)
        outcome = Delivery.RETRY if retry_in is not None else Delivery.FAILED
        return DeliveryResult(outcome, attempt.notification_id, attempt.number, reason, retry_in)
    if not retrying(db, lambda conn: outbox.mark_sent(conn, attempt, message.text, message_id)):
        # Our lease ran out and another attempt took the row over while we were sending.
        log.warning("notification %s: sent, but attempt %s no longer held the row",
                    attempt.notification_id, attempt.number)  # fmt: skip
        return DeliveryResult(Delivery.SKIPPED, attempt.notification_id, attempt.number)
    return DeliveryResult(Delivery.SENT, attempt.notification_id, attempt.number)


def _hold(db: Transactional, attempt: Attempt, why: str, policy: RetryPolicy) -> DeliveryResult:
    """Leave the row pending, uncounted, for a worker that has the row's channel."""
    error = f"this worker cannot send through the {attempt.channel} channel: {why}"
    until = utcnow() + timedelta(seconds=policy.lease_seconds)
    retrying(db, lambda conn: outbox.hold(conn, attempt, error, until))
    log.warning("notification %s: %s", attempt.notification_id, error)
    return DeliveryResult(
        Delivery.HELD, attempt.notification_id, attempt.number - 1, error,
        due_in=policy.lease_seconds,
    )  # fmt: skip


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# Notification ids are positive: statements aimed at this id find no row and change nothing.
_NO_ROW = -1


def compile_ahead(conn: Connection, policy: RetryPolicy) -> None:
    """Run a job's statements once against no row, so SQLAlchemy compiles them in this process.

    RQ's default worker forks a work horse per job. A horse inherits its parent's compiled
    statements; without this it compiles them again for every job and throws them away
    (about 10 ms a job on a 2-core machine). Changes nothing in the database.
    """
    now = utcnow()
    outbox.claim_attempt(conn, _NO_ROW, timedelta(seconds=policy.lease_seconds), now)
    pending_due_at(conn, _NO_ROW)
    nobody = uuid.UUID(int=0)
    attempt = Attempt(_NO_ROW, 1, now, nobody, nobody, "log", "", Money(0, "GHS"), "")
    outbox.mark_sent(conn, attempt, "", "")
