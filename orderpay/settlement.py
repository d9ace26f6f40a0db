"""Settling a payment: the one transition code for callbacks, MTN confirmations and reconcile.

The caller has locked the payment and its order (see `lock_payment`) and decided the outcome
the provider reports. This module decides what that outcome means for our records:
- an open payment (`initiated`, `pending`) moves to the outcome; on success the order becomes
  `paid` and the notification outbox row is written, all in the caller's transaction;
- the same terminal outcome again changes nothing;
- a different terminal outcome (success after failure, or the reverse) and an amount or
  currency that differs from the payment's are kept for review: nothing moves, the timeline
  says why, and an order is never marked paid on them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Text,
    bindparam,
    cast,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)

from orderpay.clock import utcnow
from orderpay.models import UTCDateTime, customers, order_events, orders, payments
from orderpay.money import Money
from orderpay.outbox import NotifyTarget, add_notification, insert_notification_from
from orderpay.payments import COLUMNS, Payment, from_row
from orderpay.states import OPEN_PAYMENT_STATUSES, OrderStatus, PaymentStatus, payment_can_move
from orderpay.timeline import record_events


class Settled(StrEnum):
    APPLIED = "processed"  # the payment moved (and the order, on success)
    UNCHANGED = "duplicate"  # it already had this outcome
    CONFLICT = "review_conflict"  # it already had the other terminal outcome
    MISMATCH = "review_amount"  # the reported amount or currency is not the payment's


@dataclass(frozen=True, slots=True)
class LockedPayment:
    payment: Payment
    order_status: OrderStatus
    customer_phone: str


def _locking(*conditions: Any) -> Select[Any]:
    return (
        select(*COLUMNS, orders.c.status, customers.c.phone)
        .join(orders, orders.c.id == payments.c.order_id)
        .join(customers, customers.c.id == orders.c.customer_id)
        .where(*conditions)
        .with_for_update(of=[payments, orders])
    )


def _newest(statement: Select[Any]) -> Select[Any]:
    return statement.order_by(payments.c.created_at.desc()).limit(1)


# Built once: these run on every callback, and building a statement costs more than running it.
LOCK_BY_ID = _locking(payments.c.id == bindparam("b_payment"))
LOCK_BY_REFERENCE = _newest(_locking(payments.c.provider_reference == bindparam("b_reference")))
LOCK_OPEN_OF_ORDER = _newest(
    _locking(
        payments.c.order_id == bindparam("b_order"),
        payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES]),
    )
)
_MOVE_PAYMENT = update(payments).where(
    payments.c.id == bindparam("b_id"), payments.c.status == bindparam("b_from")
)
_MARK_PAID = update(orders).where(
    orders.c.id == bindparam("b_id"), orders.c.status == OrderStatus.PENDING.value
)


def _succeed_in_one_statement() -> Select[Any]:
    """On Postgres, everything a success writes as one statement (data-modifying CTEs): the
    payment, the order, the outbox row and the three timeline rows. A callback is then three
    statements (lock, inbox, this) instead of six."""
    now = bindparam("v_now", type_=UTCDateTime())
    paid = (
        update(payments)
        .where(payments.c.id == bindparam("b_id"), payments.c.status == bindparam("b_from"))
        .values(
            status=PaymentStatus.SUCCEEDED.value,
            failure_reason=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(payments.c.id, payments.c.order_id)
        .cte("paid")
    )
    # The order row is locked by lock_payment and classify() checked it is pending.
    order = (
        update(orders)
        .where(orders.c.id == paid.c.order_id, orders.c.status == OrderStatus.PENDING.value)
        .values(status=OrderStatus.PAID.value, updated_at=now)
        .returning(orders.c.id)
        .cte("order_paid")
    )
    queued = insert_notification_from(paid).cte("queued")
    # Numbered so the timeline rows get their ids in this order.
    events = union_all(
        select(literal(1).label("k"), paid.c.order_id, literal("payment_succeeded").label("event"),
               bindparam("v_succeeded", type_=Text()).label("detail")),
        select(literal(2), paid.c.order_id, literal("order_paid"),
               bindparam("v_paid", type_=Text())),
        select(literal(3), paid.c.order_id, literal("notification_queued"),
               literal("notification ", Text()) + cast(queued.c.id, Text())
               + bindparam("v_via", type_=Text()))
        .select_from(paid.join(queued, true())),
    ).subquery("e")  # fmt: skip
    timeline = insert(order_events).from_select(
        ["order_id", "at", "event", "detail"],
        select(events.c.order_id, now, events.c.event, events.c.detail).order_by(events.c.k),
    )
    return select(paid.c.id).add_cte(order, timeline.cte("timeline"))


_SUCCEED = _succeed_in_one_statement()


def lock_payment(conn: Connection, statement: Select[Any], **params: Any) -> LockedPayment | None:
    """Run one of the LOCK_* statements: the payment with its order, both FOR UPDATE."""
    row = conn.execute(statement, params).first()
    if row is None:
        return None
    return LockedPayment(from_row(row[:-2]), OrderStatus(row[-2]), row[-1])


def classify(
    locked: LockedPayment,
    target: PaymentStatus,
    amount: Money | None,
    currency: str | None = None,
) -> Settled:
    """What an outcome would do to this payment, without doing it."""
    payment = locked.payment
    if amount is not None and amount != payment.amount:
        return Settled.MISMATCH
    if currency is not None and currency != payment.amount.currency:
        return Settled.MISMATCH
    if payment.status is target:
        return Settled.UNCHANGED
    if payment.status not in OPEN_PAYMENT_STATUSES:
        return Settled.CONFLICT
    if target is PaymentStatus.SUCCEEDED and locked.order_status is not OrderStatus.PENDING:
        return Settled.CONFLICT
    return Settled.APPLIED


def settle(
    conn: Connection,
    locked: LockedPayment,
    target: PaymentStatus,
    *,
    reason: str | None,
    amount: Money | None,
    currency: str | None = None,
    source: str,
    notify: NotifyTarget,
) -> Settled:
    """Apply a provider's outcome to a locked payment; see the module docstring."""
    payment = locked.payment
    verdict = classify(locked, target, amount, currency)
    now = utcnow()
    if verdict is Settled.UNCHANGED:
        return verdict
    if verdict is Settled.MISMATCH:
        reported = str(amount) if amount is not None else f"currency {currency}"
        record_events(conn, payment.order_id, [(
            "callback_amount_mismatch",
            f"{source} reported {target} of {reported} for payment {payment.id} of "
            f"{payment.amount}; kept for review, nothing changed",
        )], at=now)  # fmt: skip
        return verdict
    if verdict is Settled.CONFLICT:
        record_events(conn, payment.order_id, [(
            "callback_conflict",
            f"{source} reported {target} for payment {payment.id}, which is {payment.status} "
            f"(order {locked.order_status}); kept for review, nothing changed",
        )], at=now)  # fmt: skip
        return verdict

    if not payment_can_move(payment.status, target):  # classify() let only open payments by
        raise ValueError(f"payment transition {payment.status} -> {target} is not allowed")
    succeeded = f"payment {payment.id} of {payment.amount} succeeded ({source})"
    paid = f"paid by payment {payment.id}"
    recipient = notify.recipient_for(locked.customer_phone)
    if target is PaymentStatus.SUCCEEDED and conn.dialect.name == "postgresql":
        conn.execute(_SUCCEED, {
            "b_id": payment.id, "b_from": payment.status.value, "v_now": now,
            "v_channel": notify.channel, "v_recipient": recipient, "v_succeeded": succeeded,
            "v_paid": paid, "v_via": f" via {notify.channel}",
        })  # fmt: skip
        return verdict
    conn.execute(
        _MOVE_PAYMENT,
        {
            "b_id": payment.id,
            "b_from": payment.status.value,
            "status": target.value,
            "failure_reason": reason if target is PaymentStatus.FAILED else None,
            "lease_expires_at": None,
            "updated_at": now,
        },
    )
    if target is PaymentStatus.FAILED:
        why = reason or "no reason given"
        record_events(conn, payment.order_id, [(
            "payment_failed", f"payment {payment.id} failed ({source}): {why}"
        )], at=now)  # fmt: skip
        return verdict

    _mark_paid(conn, payment.order_id, now)
    notification_id = add_notification(
        conn, order_id=payment.order_id, payment_id=payment.id, recipient=recipient, target=notify
    )
    events = [("payment_succeeded", succeeded), ("order_paid", paid)]
    if notification_id is not None:
        events.append(
            ("notification_queued", f"notification {notification_id} via {notify.channel}")
        )
    record_events(conn, payment.order_id, events, at=now)
    return verdict


def _mark_paid(conn: Connection, order_id: uuid.UUID, now: Any) -> None:
    # The order row is locked by lock_payment and classify() checked it is pending.
    conn.execute(
        _MARK_PAID, {"b_id": order_id, "status": OrderStatus.PAID.value, "updated_at": now}
    )
