"""Settling a payment: what a provider's outcome means for our records.

The one decision for signed callbacks, MTN confirmations, reconcile and an operator's cancel.
The caller has locked the payment and its order (store.ledger.lock_*) and knows the outcome
the provider reports:
- an open payment (`initiated`, `pending`) moves to the outcome; on success the order becomes
  `paid` and the notification outbox row is written, all in the caller's transaction;
- the same terminal outcome again changes nothing (the provider's transaction id is kept if it
  was not known yet; a failure the operator forced is now confirmed);
- a different terminal outcome (success after failure, or the reverse), a success for an
  order that is no longer pending, and an amount or currency that differs from the
  payment's are kept for review: nothing moves, a review item is opened (payments/review.py:
  one per finding), an order event says why, and an order is never marked paid on them.
  The amount is checked first: an outcome of another amount is an amount finding whatever
  the payment's status, and its suggested action reads both (a success for a payment not
  recorded succeeded is all to refund; a failure took no money).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Connection

from orderpay.domain.money import Money
from orderpay.domain.states import OPEN_PAYMENT_STATUSES, OrderStatus, PaymentStatus
from orderpay.payments import review
from orderpay.store import ledger, order_events, webhook_events
from orderpay.store.locks import LockedPayment
from orderpay.store.notifications import NotifyTarget


class Settled(StrEnum):
    APPLIED = "processed"  # the payment moved (and the order, on success)
    UNCHANGED = "duplicate"  # it already had this outcome
    CONFLICT = "review_conflict"  # it already had the other terminal outcome
    MISMATCH = "review_amount"  # the reported amount or currency is not the payment's


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
    transaction_id: str | None = None,
    event_id: int | None = None,
    reference: str | None = None,
    operator: str | None = None,
) -> Settled:
    """Apply a provider's outcome to a locked payment; see the module docstring.

    `transaction_id`: the provider's own id of the money movement, kept on the payment.
    `event_id`: the inbox event that reported it, whose outcome is recorded with it.
    `reference`: the reference the report named (for a review item's `reported`).
    `operator`: who asked (an operator's cancel), recorded with a failure it writes.
    """
    payment = locked.payment
    verdict = classify(locked, target, amount, currency)
    if verdict is Settled.APPLIED and target is PaymentStatus.SUCCEEDED:
        event = None if event_id is None else (event_id, verdict.value)
        ledger.succeed(
            conn,
            locked,
            source=source,
            notify=notify,
            transaction_id=transaction_id,
            event=event,
        )
        return verdict
    if verdict is Settled.APPLIED:
        ledger.fail(
            conn,
            payment,
            reason=reason,
            transaction_id=transaction_id,
            detail=f"payment {payment.id} failed ({source}): {reason or 'no reason given'}",
            operator=operator,
        )
    elif verdict is Settled.UNCHANGED:
        if transaction_id is not None and payment.provider_transaction_id is None:
            ledger.note_transaction_id(conn, payment.id, transaction_id)
    elif verdict is Settled.MISMATCH:
        reported: Money | str = amount if amount is not None else f"currency {currency}"
        said = review.reported_text(
            _who(source, payment.provider),
            target,
            amount=amount,
            currency=currency,
            reference=reference,
            transaction_id=transaction_id,
            reason=reason,
            payer_phone=payment.payer_phone,
        )
        kept = review.keep_amount_mismatch(conn, locked, target, said, reported, event_id=event_id)
        order_events.record_event(
            conn,
            payment.order_id,
            "callback_amount_mismatch",
            f"{source} reported {target} of {reported} for payment {payment.id} of "
            f"{payment.amount}; {kept}, nothing changed",
        )
    else:
        unconfirmed = (
            ", failed by the operator without the provider's word: money to refund?"
            if payment.awaiting_confirmation
            else ""
        )
        said = review.reported_text(
            _who(source, payment.provider),
            target,
            amount=amount,
            currency=currency,
            reference=reference,
            transaction_id=transaction_id,
            reason=reason,
            payer_phone=payment.payer_phone,
        )
        kept = review.keep_outcome_conflict(conn, locked, target, said, event_id=event_id)
        order_events.record_event(
            conn,
            payment.order_id,
            "callback_conflict",
            f"{source} reported {target} for payment {payment.id}, which is {payment.status} "
            f"(order {locked.order_status}){unconfirmed}; {kept}, nothing changed",
        )
    if payment.awaiting_confirmation and verdict is not Settled.APPLIED:
        ledger.confirmed(conn, payment.id)  # the provider's word is in: stop asking
    if event_id is not None:
        webhook_events.decide(conn, event_id, verdict.value, payment.order_id, payment.id)
    return verdict


def _who(source: str, provider: str) -> str:
    """Who reported an outcome, for a review item: the source, and the provider if it does
    not name it ("reconcile, mtn"; "mtn callback, confirmed by status")."""
    return source if provider in source else f"{source}, {provider}"
