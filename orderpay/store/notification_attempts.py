"""One attempt at sending a notification, all but its writes: the rows a claim may take,
what the claim hands out (Attempt, with the amount its message tells), and what became of it
(Outcome, Recorded; the columns and the order event each outcome sets). Nothing here writes:
claims and outcomes are written by the store/outbox package alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, func, select

from orderpay.domain.money import Money
from orderpay.store.notifications import due
from orderpay.store.schema import customers, notifications, orders, payments, refunds


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed try at sending one row; `number` and `lease_until` identify the claim."""

    notification_id: int
    number: int
    lease_until: datetime
    order_id: uuid.UUID
    payment_id: uuid.UUID
    channel: str
    recipient: str
    amount: Money  # what the message tells: the payment's, or a refund's own amount
    customer_name: str
    kind: str = "payment_received"
    refund_id: uuid.UUID | None = None


# A refund's row tells the refund's amount, not the payment's: a primary-key lookup, made only
# for rows that name a refund (the others' refund_id is NULL and finds nothing).
_AMOUNT_TOLD = func.coalesce(
    select(refunds.c.amount)
    .where(refunds.c.id == notifications.c.refund_id)
    .correlate(notifications)
    .scalar_subquery(),
    payments.c.amount,
)
ATTEMPT_COLUMNS = (
    notifications.c.id,
    notifications.c.attempts,
    notifications.c.lease_until,
    notifications.c.order_id,
    notifications.c.payment_id,
    notifications.c.channel,
    notifications.c.recipient,
    _AMOUNT_TOLD.label("amount"),
    payments.c.currency,
    customers.c.name.label("customer_name"),
    notifications.c.kind,
    notifications.c.refund_id,
)


def attempt_of(
    row: Row[*tuple[Any, ...]], number: int | None = None, lease: datetime | None = None
) -> Attempt:
    """The attempt in a row of ATTEMPT_COLUMNS, read by key; `number` and `lease` replace
    the row's when the claim was set after the row was read."""
    fields = row._mapping
    return Attempt(
        notification_id=fields["id"],
        number=number if number is not None else fields["attempts"],
        lease_until=lease or fields["lease_until"],
        order_id=fields["order_id"],
        payment_id=fields["payment_id"],
        channel=fields["channel"],
        recipient=fields["recipient"],
        amount=Money(int(fields["amount"]), fields["currency"]),
        customer_name=fields["customer_name"],
        kind=fields["kind"],
        refund_id=fields["refund_id"],
    )


# --- The rows a claim takes (locked against other claims; store.outbox writes the claim) ------

# An attempt's row and what its message needs: its payment, order and customer.
JOINED = (
    payments.c.id == notifications.c.payment_id,
    orders.c.id == notifications.c.order_id,
    customers.c.id == orders.c.customer_id,
)
# A claim takes a row only while it has tries left: a row whose last try ended without an
# outcome (its lease ran out) is failed instead (store.outbox.fail_without_tries_left).
TRIES_LEFT = notifications.c.attempts < bindparam("b_max_attempts")
_queued = notifications.alias("queued")  # not correlated with the claim's UPDATE of its own row
# Postgres, claim_next_due: the due row that waited longest, unless another claim holds it.
NEXT_DUE_ID = (
    select(_queued.c.id)
    .where(*due(_queued), _queued.c.attempts < bindparam("b_max_attempts"))
    .order_by(_queued.c.due_at)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
# Postgres, claim_among: up to b_limit of the rows b_ids that are due, lowest id first. Picked
# once, in a CTE: as a plain IN (subquery) Postgres may run the subquery again for each row the
# UPDATE joins, skipping the rows the statement has just claimed and taking the next ones, past
# the LIMIT.
PICKED = (
    select(_queued.c.id)
    .where(
        _queued.c.id.in_(bindparam("b_ids", expanding=True)),
        *due(_queued),
        _queued.c.attempts < bindparam("b_max_attempts"),
    )
    .order_by(_queued.c.id)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
    .cte("picked")
    .prefix_with("MATERIALIZED", dialect="postgresql")
)
# SQLite (one writer at a time, under BEGIN IMMEDIATE): the same rows, read before the claim.
DUE_ROWS = (
    select(*ATTEMPT_COLUMNS)
    .where(*due(notifications), TRIES_LEFT, *JOINED)
    .order_by(notifications.c.due_at)
    .limit(1)
)
DUE_AMONG = (
    select(*ATTEMPT_COLUMNS)
    .where(
        notifications.c.id.in_(bindparam("b_ids", expanding=True)),
        *due(notifications),
        TRIES_LEFT,
        *JOINED,
    )
    .order_by(notifications.c.id)
    .limit(bindparam("b_limit"))
)


class Outcome(StrEnum):
    """What became of a claimed attempt (recorded by store.outbox.record_outcomes)."""

    SENT = "sent"
    RETRY = "retry"  # a failed try: due again at `due_at`
    FAILED = "failed"  # the last try failed, or the gateway refused
    HELD = "held"  # given back uncounted, pending until `due_at`: no settings for its channel
    RELEASED = "released"  # given back uncounted before its send started: due again at once
    # Given back uncounted, due again at `due_at`: the gateway asked to slow down (HTTP 429)
    # and did not take the message.
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class Recorded:
    attempt: Attempt
    outcome: Outcome
    body: str = ""  # the rendered message (SENT, FAILED)
    message_id: str | None = None  # SENT: the gateway's
    error: str | None = None  # RETRY, FAILED, HELD, THROTTLED
    due_at: datetime | None = None  # RETRY, HELD, THROTTLED
    retry_in: int | None = None  # RETRY: seconds, for the order events


def event_of(done: Recorded) -> tuple[str, str] | None:
    """The order event (event, detail) an outcome writes, if any."""
    nid = done.attempt.notification_id
    if done.outcome is Outcome.SENT:
        return "notification_sent", f"notification {nid} sent ({done.message_id})"
    if done.outcome is Outcome.FAILED:
        return "notification_failed", f"notification {nid}: {done.error}"
    if done.outcome is Outcome.RETRY:
        return (
            "notification_attempt_failed",
            f"notification {nid}, try {done.attempt.number}: {done.error}; "
            f"retry in {done.retry_in} s",
        )
    return None


def changes_of(done: Recorded, now: datetime) -> dict[str, Any]:
    """The columns an outcome sets on its row at `now` (store.outbox writes them, only while
    the attempt's claim still holds the row)."""
    a, outcome = done.attempt, done.outcome
    changes: dict[str, Any] = {"lease_until": None, "updated_at": now}
    if outcome is Outcome.SENT:
        changes |= {
            "status": outcome.value,
            "body": done.body,
            "last_error": None,
            "gateway_message_id": done.message_id,
            "sent_at": now,
        }
    elif outcome is Outcome.FAILED:
        changes |= {"status": outcome.value, "body": done.body, "last_error": done.error}
    elif outcome is Outcome.RETRY:
        changes |= {"due_at": done.due_at, "last_error": done.error}
    elif outcome is Outcome.HELD:
        changes |= {
            "attempts": a.number - 1,
            "due_at": done.due_at,
            "enqueued_at": None,
            "last_error": done.error,
        }
    elif outcome is Outcome.THROTTLED:
        changes |= {"attempts": a.number - 1, "due_at": done.due_at, "last_error": done.error}
    else:  # RELEASED: as if never claimed
        changes = {"attempts": a.number - 1, "lease_until": None}
    return changes
