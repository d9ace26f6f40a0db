"""Delivering notifications (DESIGN.md section 5, Notify): the job's rules.

One attempt is three steps, the channel called between transactions:
1. claim: a compare-and-set that counts the attempt and leases the row (store.outbox) right
   before the send, so two workers, or a job and its duplicate, never send one row together;
2. send through the row's own channel (the one written on it when it was queued);
3. record: `sent` with the gateway's message id; else a retry after the backoff, or `failed`
   after the last try or a refusal.
A worker killed mid-send leaves the lease to run out; the row is then handed out again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.money import Money
from orderpay.errors import DatabaseUnavailable, GatewayRejected, OrderpayError
from orderpay.notify.channels import Channel
from orderpay.notify.messages import render
from orderpay.store import outbox
from orderpay.store.db import Transactional, retrying
from orderpay.store.notification_attempts import Attempt, Outcome, Recorded
from orderpay.store.notifications import pending_due_times

log = logging.getLogger("orderpay.notify")

# A batch is claimed and recorded in groups, each sized to be sent in about this long: a whole
# batch for the log channel. A row whose channel reaches the customer (sms, webhook) is always
# a group of its own, recorded right after its send, so a killed worker leaves at most that
# one row sent but unrecorded (sent again once its lease runs out).
GROUP_SECONDS = 0.05
# Channels whose repeated send reaches no customer: the only ones sent in groups.
GROUPED_CHANNELS = frozenset({"log"})
FIRST_GROUP = 1  # before the channel's pace is known
MAX_GROUP = 500
# The time kept at the end of a lease to record a send's outcome (a quarter of a shorter
# lease): a send ends by then, and a row after the first of its group is sent only if its
# lease outlasts the longest send by this much.
RECORD_MARGIN_SECONDS = 1.0


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
    # The longest one send may take (the channels' timeout); None: as long as the lease, so
    # that a group sends only its first row.
    send_seconds: float | None = None

    @property
    def longest_send(self) -> float:
        return self.lease_seconds if self.send_seconds is None else self.send_seconds

    @property
    def record_margin(self) -> float:
        """The time kept, at the end of a lease, to record a send's outcome."""
        return min(RECORD_MARGIN_SECONDS, self.lease_seconds / 4)

    @property
    def max_attempts(self) -> int:
        return len(self.intervals) + 1

    def delay_after(self, attempt: int) -> int:
        return self.intervals[min(attempt, len(self.intervals)) - 1]


# Finds the channel a row is sent through, by the name written on it; ConfigurationError
# when this process has no settings for it.
Channels = Callable[[str], Channel]


@dataclass(frozen=True, slots=True)
class Batch:
    results: list[DeliveryResult]  # one per row tried, or found not ours to send (SKIPPED)
    left: list[int]  # rows not tried (stopped, or out of time): to be handed out again


def group_size(per_send: float) -> int:
    """The rows of a grouped channel's next claim: as many as take about GROUP_SECONDS to send
    at the pace `per_send` (seconds) the last group went."""
    return max(1, min(MAX_GROUP, int(GROUP_SECONDS / per_send) if per_send else MAX_GROUP))


def not_taken(db: Transactional, remaining: list[int], policy: RetryPolicy) -> list[DeliveryResult]:
    """Rows no claim took: those whose last try ended without an outcome are failed; all are
    SKIPPED, with when each is due if it is still pending."""
    if not remaining:
        return []
    retrying(
        db,
        lambda conn: outbox.fail_without_tries_left(conn, policy.max_attempts, utcnow(), remaining),
    )
    now = utcnow()
    due = retrying(db, lambda conn: pending_due_times(conn, remaining))
    results = []
    for nid in remaining:
        due_in = (due[nid] - now).total_seconds() if nid in due else None
        results.append(DeliveryResult(Delivery.SKIPPED, nid, due_in=due_in))
    return results


# Outcomes that give a row back to the batch, to be claimed again.
GIVEN_BACK = (Outcome.RELEASED, Outcome.THROTTLED)


def claim_group(
    db: Transactional, among: list[int], size: int, lease: timedelta, max_attempts: int
) -> list[Attempt]:
    return retrying(
        db, lambda conn: outbox.claim_among(conn, among, size, lease, utcnow(), max_attempts)
    )


def send_attempt(
    db: Transactional,
    channels: Channels,
    attempt: Attempt,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """Steps 2 and 3 for a claimed attempt: send outside any transaction, then record."""
    return record_group(db, [send_one(channels, attempt, merchant_name, policy)], policy)[0]


def lease_covers_a_send(attempt: Attempt, policy: RetryPolicy) -> bool:
    """Whether a send started now ends, and is recorded, while the claim still holds the row:
    after that, another worker may claim it and send it again."""
    left = (attempt.lease_until - utcnow()).total_seconds()
    return left >= policy.longest_send + policy.record_margin


def send_deadline(attempt: Attempt, policy: RetryPolicy) -> float:
    """When a send that starts now must be over (time.monotonic()): after the channel's
    timeout at most, and early enough to be recorded while the claim still holds the row."""
    left = (attempt.lease_until - utcnow()).total_seconds() - policy.record_margin
    return time.monotonic() + min(policy.longest_send, left)


def send_one(
    channels: Channels, attempt: Attempt, merchant_name: str, policy: RetryPolicy
) -> Recorded:
    """Send one claimed row through its own channel; what became of it, not yet recorded."""
    try:
        channel = channels(attempt.channel)
    except OrderpayError as error:
        return held(attempt, error, policy)
    body = ""
    try:
        message = render(attempt, merchant_name)
        body = message.text
        message_id = channel.send(message, send_deadline(attempt, policy))
    except Exception as error:  # any failure is a failed attempt of this row, and only this row
        return failed_try(attempt, body, error, policy)
    return Recorded(attempt, Outcome.SENT, body=body, message_id=message_id)


def held(attempt: Attempt, error: OrderpayError, policy: RetryPolicy) -> Recorded:
    """Left pending, uncounted, for a worker that has the row's channel."""
    reason = f"this worker cannot send through the {attempt.channel} channel: {error.message}"
    log.warning("notification %s: %s", attempt.notification_id, reason)
    until = utcnow() + timedelta(seconds=policy.lease_seconds)
    return Recorded(attempt, Outcome.HELD, error=reason, due_at=until)


def failed_try(attempt: Attempt, body: str, error: Exception, policy: RetryPolicy) -> Recorded:
    """A try that failed: RETRY after the backoff, or FAILED after a refusal or the last try."""
    reason = error.message if isinstance(error, OrderpayError) else _describe(error)
    log.warning("notification %s, try %s: %s", attempt.notification_id, attempt.number, reason)
    if isinstance(error, GatewayRejected) or attempt.number >= policy.max_attempts:
        return Recorded(attempt, Outcome.FAILED, body=body, error=reason)
    retry_in = policy.delay_after(attempt.number)
    due_at = utcnow() + timedelta(seconds=retry_in)
    return Recorded(attempt, Outcome.RETRY, body, error=reason, due_at=due_at, retry_in=retry_in)


_RESULT = {
    Outcome.SENT: Delivery.SENT,
    Outcome.RETRY: Delivery.RETRY,
    Outcome.FAILED: Delivery.FAILED,
    Outcome.HELD: Delivery.HELD,
}


def record_group(
    db: Transactional, done: list[Recorded], policy: RetryPolicy
) -> list[DeliveryResult]:
    """Record a group's outcomes in one transaction; a result for each row tried."""
    written = _riding_out_the_database(db, done)
    results = []
    for recorded in done:
        attempt, outcome = recorded.attempt, recorded.outcome
        nid = attempt.notification_id
        if outcome in GIVEN_BACK:
            continue  # never tried, or not taken by the gateway: claimed again later
        if nid not in written:
            if outcome is Outcome.SENT:
                # Another attempt took the row over when our lease ran out, and finished it.
                log.warning(
                    "notification %s: sent by attempt %s after another attempt finished the row",
                    nid,
                    attempt.number,
                )
            results.append(DeliveryResult(Delivery.SKIPPED, nid, attempt.number, recorded.error))
        elif outcome is Outcome.HELD:
            results.append(
                DeliveryResult(
                    Delivery.HELD,
                    nid,
                    attempt.number - 1,
                    recorded.error,
                    due_in=policy.lease_seconds,
                )
            )
        else:
            results.append(
                DeliveryResult(
                    _RESULT[outcome], nid, attempt.number, recorded.error, recorded.retry_in
                )
            )
    return results


# The first wait before recording again after the database went away, doubled each time.
RECORD_BACKOFF_SECONDS = 0.2
RECORD_BACKOFF_MAX_SECONDS = 2.0


def _riding_out_the_database(db: Transactional, done: list[Recorded]) -> set[int]:
    """record_outcomes, tried again while the database is away (a restart) and the group's
    leases last: a message that went out but was not recorded would be sent again once its
    lease ran out."""
    wait = RECORD_BACKOFF_SECONDS
    while True:
        try:
            return retrying(db, lambda conn: outbox.record_outcomes(conn, done))
        except DatabaseUnavailable:
            lease_left = min((r.attempt.lease_until - utcnow()).total_seconds() for r in done)
            if lease_left <= wait:
                raise
            time.sleep(wait)
            wait = min(wait * 2, RECORD_BACKOFF_MAX_SECONDS)


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# Notification ids are positive: statements aimed at this id find no row and change nothing.
_NO_ROW = -1


def compile_ahead(conn: Connection, policy: RetryPolicy) -> None:
    """Run a job's statements once against no row, so SQLAlchemy compiles them in this process.

    RQ's default worker forks a work horse per job. A horse inherits its parent's compiled
    statements; without this it compiles them again for every job and throws them away.
    Changes nothing in the database.
    """
    now = utcnow()
    lease = timedelta(seconds=policy.lease_seconds)
    outbox.claim_among(conn, [_NO_ROW], 1, lease, now, policy.max_attempts)
    pending_due_times(conn, [_NO_ROW])
    nobody = uuid.UUID(int=0)
    attempt = Attempt(_NO_ROW, 1, now, nobody, nobody, "log", "", Money(0, "GHS"), "")
    outbox.record_outcomes(conn, [Recorded(attempt, Outcome.SENT, message_id="")])
