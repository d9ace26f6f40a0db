"""Settling a refund: what a provider's outcome of a refund means for our records.

The one decision for the refund flow's status call and `orderpay reconcile`, in the caller's
transaction under the order's and then the payment's row lock (store/locks.py):
- an open refund (`initiated`, `pending`) moves to the outcome. A success writes the customer's
  `refund_sent` outbox row and makes the order `refunded` once the succeeded refunds add up to
  the payment, else `partially_refunded`; a failure frees its amount;
- the same terminal outcome again changes nothing (the provider's transaction id is kept);
- the other terminal outcome, or another amount, is kept for review (one open item per refund)
  with an order event saying why; nothing moves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from orderpay.domain.money import Money
from orderpay.domain.reviews import ReviewReason
from orderpay.domain.states import OrderStatus, PaymentStatus, RefundStatus, order_can_move
from orderpay.errors import ConcurrentUpdate
from orderpay.payments import review
from orderpay.payments.settlement import Settled
from orderpay.store import locks, order_events, outbox, refunds
from orderpay.store.notifications import NotifyTarget
from orderpay.store.orders import move_order
from orderpay.store.refund_rows import Refund


@dataclass(frozen=True, slots=True)
class SettledRefund:
    verdict: Settled
    refund: Refund  # as it is after settling
    notification_queued: bool = False


def classify_refund(refund: Refund, target: RefundStatus, amount: Money | None) -> Settled:
    """What an outcome would do to this refund, without doing it."""
    if amount is not None and amount != refund.amount:
        return Settled.MISMATCH
    if refund.status is target:
        return Settled.UNCHANGED
    if not refund.is_open:
        return Settled.CONFLICT
    return Settled.APPLIED


def settle_refund(
    conn: Connection,
    refund_id: uuid.UUID,
    target: RefundStatus,
    *,
    reason: str | None,
    amount: Money | None,
    source: str,
    notify: NotifyTarget,
    transaction_id: str | None = None,
) -> SettledRefund:
    """Apply a provider's outcome to a refund; see the module docstring. Raises
    ConcurrentUpdate (the caller runs it again: store.db.retrying) if the refund moved
    between reading it and writing it."""
    first = refunds.get_refund(conn, refund_id)
    order = locks.lock_order(conn, first.order_id)
    locked = locks.lock_payment(conn, first.payment_id)
    assert order is not None, "orders are never deleted"
    assert locked is not None, "payments are never deleted"
    refund = refunds.get_refund(conn, refund_id)  # as it is now, under the payment's lock
    verdict = classify_refund(refund, target, amount)
    if verdict is Settled.UNCHANGED:
        if transaction_id is not None and refund.provider_transaction_id is None:
            refunds.note_transaction_id(conn, refund.id, transaction_id)
        return SettledRefund(verdict, refund)
    if verdict is not Settled.APPLIED:
        _keep_for_review(conn, refund, target, amount, verdict, source)
        return SettledRefund(verdict, refund)
    if target is RefundStatus.FAILED:
        moved = refunds.move(
            conn,
            refund,
            RefundStatus.FAILED,
            event="refund_failed",
            reason=reason,
            transaction_id=transaction_id,
            detail=f"refund {refund.id} of {refund.amount} failed ({source}): "
            f"{reason or 'no reason given'}; its amount is refundable again",
        )
        if moved is None:
            raise ConcurrentUpdate(f"refund {refund.id} changed while it was being settled; retry")
        return SettledRefund(verdict, moved)
    moved = refunds.move(
        conn,
        refund,
        RefundStatus.SUCCEEDED,
        event="refund_succeeded",
        transaction_id=transaction_id,
        detail=f"refund {refund.id} of {refund.amount} succeeded ({source})",
    )
    if moved is None:
        raise ConcurrentUpdate(f"refund {refund.id} changed while it was being settled; retry")
    payment = locked.payment
    given = refunds.succeeded_total(conn, payment.id)
    whole = given >= payment.amount.minor_units
    status = OrderStatus.REFUNDED if whole else OrderStatus.PARTIALLY_REFUNDED
    # Only the payment that paid the order refunds it: money given back for a payment taken
    # after a cancel, or twice, leaves the order as it is (cancelled, or paid by the other).
    paid_the_order = payment.status is PaymentStatus.SUCCEEDED
    if paid_the_order and order.status is not status and order_can_move(order.status, status):
        move_order(
            conn,
            order,
            status,
            f"order_{status.value}",
            f"{Money(given, payment.amount.currency)} of payment {payment.id} "
            f"({payment.amount}) refunded",
        )
    queued = outbox.add_notification(
        conn,
        order_id=refund.order_id,
        payment_id=payment.id,
        refund_id=refund.id,
        recipient=notify.recipient_for(locked.customer_phone),
        target=notify,
    )
    if queued is not None:
        order_events.record_event(
            conn,
            refund.order_id,
            "notification_queued",
            f"notification {queued} via {notify.channel} (refund {refund.id})",
        )
    return SettledRefund(verdict, moved, notification_queued=queued is not None)


def _keep_for_review(
    conn: Connection,
    refund: Refund,
    target: RefundStatus,
    amount: Money | None,
    verdict: Settled,
    source: str,
) -> None:
    if verdict is Settled.MISMATCH:
        reason, event = ReviewReason.AMOUNT_MISMATCH, "refund_amount_mismatch"
        reported = f"{source} reported refund {refund.id} {target} for {amount}"
        action = (
            f"the provider moved another amount than the refund's {refund.amount}: check its "
            "statement, then settle the difference with the customer"
        )
    else:
        reason, event = ReviewReason.REFUND_CONFLICT, "refund_conflict"
        reported = f"{source} reported refund {refund.id} {target}; our record says {refund.status}"
        action = (
            "the money went back although the refund is recorded failed: do not refund it "
            "again; check the provider's statement"
            if target is RefundStatus.SUCCEEDED
            else "the refund is recorded succeeded but the provider says it failed: check with "
            "the provider, and refund again with a new key if the customer was not paid"
        )
    kept = review.keep(
        conn,
        reason=reason,
        subject=f"refund:{refund.id}",
        order_id=refund.order_id,
        reported=reported,
        action=action,
        payment_id=refund.payment_id,
        refund_id=refund.id,
    )
    order_events.record_event(conn, refund.order_id, event, f"{reported}; {kept}, nothing changed")
