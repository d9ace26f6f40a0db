"""Settling a payment: what a provider's report of its outcome means for our records.

The one decision for signed callbacks (both paths), MTN confirmations, reconcile and an
operator's cancel. The caller has locked the payment and its order (store/locks.py), or, for
a batch of callbacks, read them and lets the settling statement check they did not change:
- an open payment (`initiated`, `pending`) moves to the outcome; on success the order becomes
  `paid` and the notification's outbox row is written (store/ledger.py);
- the same terminal outcome again changes nothing (the provider's transaction id is kept if it
  was not known yet; a failure the operator forced is now confirmed);
- a different terminal outcome, a success for an order that is no longer pending, and an
  amount or currency that differs from the payment's are kept for review (payments/review.py):
  nothing moves, and an order is never marked paid on them. The amount is checked first: an
  outcome of another amount is an amount finding whatever the payment's status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.domain.money import Money
from orderpay.domain.states import OPEN_PAYMENT_STATUSES, OrderStatus, PaymentStatus
from orderpay.payments import review, review_texts
from orderpay.store import ledger, order_events, webhook_events
from orderpay.store import payments as payment_rows
from orderpay.store.locks import LockedPayment
from orderpay.store.moves import PaymentMove
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment


class Settled(StrEnum):
    APPLIED = "processed"  # the payment moved (and the order, on success)
    UNCHANGED = "duplicate"  # it already had this outcome
    CONFLICT = "review_conflict"  # it already had the other terminal outcome
    MISMATCH = "review_amount"  # the reported amount or currency is not the payment's
    SENDER_CONFLICT = "review_sender"  # its sender's transaction id is another payment's


@dataclass(frozen=True, slots=True)
class Report:
    """A provider's word on a payment: its outcome, and what came with it.

    `source`: who reported it ("momo callback", "mtn status"). `transaction_id`: the
    provider's own id of the money movement, kept on the payment. `reference`: the reference
    the report named, for a review item.
    """

    outcome: PaymentStatus
    source: str
    reason: str | None = None
    amount: Money | None = None
    currency: str | None = None
    transaction_id: str | None = None
    reference: str | None = None


def classify(locked: LockedPayment, report: Report) -> Settled:
    """What the report would do to this payment, without doing it."""
    payment = locked.payment
    if report.amount is not None and report.amount != payment.amount:
        return Settled.MISMATCH
    if report.currency is not None and report.currency != payment.amount.currency:
        return Settled.MISMATCH
    if payment.status is report.outcome:
        return Settled.UNCHANGED
    if payment.status not in OPEN_PAYMENT_STATUSES:
        return Settled.CONFLICT
    if report.outcome is PaymentStatus.SUCCEEDED and locked.order_status is not OrderStatus.PENDING:
        return Settled.CONFLICT
    return Settled.APPLIED


def move_for(locked: LockedPayment, report: Report, *, operator: str | None = None) -> PaymentMove:
    """The move an APPLIED report makes. `operator`: who asked (an operator's cancel),
    recorded with a failure it writes."""
    return PaymentMove(
        locked,
        report.outcome,
        report.source,
        reason=report.reason,
        transaction_id=report.transaction_id,
        operator=None if report.outcome is PaymentStatus.SUCCEEDED else operator,
    )


def settle(
    conn: Connection,
    locked: LockedPayment,
    report: Report,
    notify: NotifyTarget,
    *,
    event_id: int | None = None,
    operator: str | None = None,
) -> Settled:
    """Apply a provider's report to a locked payment; see the module docstring.

    `event_id`: the webhook event that carried the report, whose outcome is recorded with it.
    `operator`: who asked (an operator's cancel), recorded with the order event it writes.
    """
    payment = locked.payment
    verdict = classify(locked, report)
    holder = _held_by_another(conn, payment, report.transaction_id)
    if holder is not None:
        verdict = Settled.SENDER_CONFLICT
        _keep_sender_conflict(conn, locked, report, holder, event_id)
    elif verdict is Settled.APPLIED:
        ledger.settle(conn, [move_for(locked, report, operator=operator)], notify)
    elif verdict is Settled.UNCHANGED:
        if report.transaction_id is not None and payment.provider_transaction_id is None:
            ledger.note_transaction_id(conn, payment.id, report.transaction_id)
    else:
        _keep_for_review(conn, locked, report, verdict, event_id)
    if payment.awaiting_confirmation and verdict in _CONFIRMING:
        ledger.confirmed(conn, payment.id)  # the provider's word is in: stop asking
    if event_id is not None:
        webhook_events.decide(conn, event_id, verdict.value, payment.order_id, payment.id)
    return verdict


# Verdicts that are the provider's word on a payment failed without it (the rest: it moved,
# or a sender's word that another payment's id makes doubtful).
_CONFIRMING = frozenset({Settled.UNCHANGED, Settled.CONFLICT, Settled.MISMATCH})


def _held_by_another(
    conn: Connection, payment: Payment, transaction_id: str | None
) -> uuid.UUID | None:
    """The other payment that holds the transaction id a report gives for a payment that has
    none (its provider's ids are unique): two senders' ids overlap, or a report names the
    wrong payment. Then nothing moves; an operator decides."""
    if transaction_id is None or payment.provider_transaction_id is not None:
        return None
    holder = payment_rows.holding_transaction(conn, payment.provider, transaction_id)
    return holder if holder != payment.id else None


def _what_was_reported(report: Report, payment: Payment) -> str:
    """A review item's account of the report: who said what, with its references."""
    return review_texts.reported_text(
        _who(report.source, payment.provider),
        report.outcome,
        amount=report.amount,
        currency=report.currency,
        reference=report.reference,
        transaction_id=report.transaction_id,
        reason=report.reason,
        payer_phone=payment.payer_phone,
    )


def _keep_sender_conflict(
    conn: Connection,
    locked: LockedPayment,
    report: Report,
    holder: uuid.UUID,
    event_id: int | None,
) -> None:
    payment = locked.payment
    said = _what_was_reported(report, payment)
    kept = review.keep_sender_conflict(
        conn, locked, said, report.transaction_id, holder=holder, event_id=event_id
    )
    order_events.record_event(
        conn,
        payment.order_id,
        "callback_sender_conflict",
        f"{report.source} reported {report.outcome} for payment {payment.id} under transaction "
        f"id {report.transaction_id!r}, which payment {holder} holds; {kept}, nothing changed",
    )


def _keep_for_review(
    conn: Connection,
    locked: LockedPayment,
    report: Report,
    verdict: Settled,
    event_id: int | None,
) -> None:
    payment = locked.payment
    said = _what_was_reported(report, payment)
    if verdict is Settled.MISMATCH:
        reported: Money | str = (
            report.amount if report.amount is not None else f"currency {report.currency}"
        )
        kept = review.keep_amount_mismatch(
            conn, locked, report.outcome, said, reported, event_id=event_id
        )
        order_events.record_event(
            conn,
            payment.order_id,
            "callback_amount_mismatch",
            f"{report.source} reported {report.outcome} of {reported} for payment {payment.id} "
            f"of {payment.amount}; {kept}, nothing changed",
        )
        return
    unconfirmed = (
        ", failed by the operator without the provider's word: money to refund?"
        if payment.awaiting_confirmation
        else ""
    )
    kept = review.keep_outcome_conflict(conn, locked, report.outcome, said, event_id=event_id)
    order_events.record_event(
        conn,
        payment.order_id,
        "callback_conflict",
        f"{report.source} reported {report.outcome} for payment {payment.id}, which is "
        f"{payment.status} (order {locked.order_status}){unconfirmed}; {kept}, nothing changed",
    )


def _who(source: str, provider: str) -> str:
    """Who reported an outcome, for a review item: the source, and the provider if it does
    not name it ("reconcile, mtn"; "mtn callback, confirmed by status")."""
    return source if provider in source else f"{source}, {provider}"
