"""The review queue's rules: which reason a finding gets, what it suggests, and resolving it.

A finding is an outcome orderpay refuses to act on (DESIGN.md section 5). It is kept as a
review item in the transaction that records it, with a reason code, what the provider said and
one suggested action built here. Reports of the same finding (another copy, reconcile asking
again, an MTN hint and a signed callback) share a subject, and a subject has at most one open
item: each keep_* function says what its subject distinguishes. Findings are opened under the
payment's or the order's lock and the open item is read FOR UPDATE, so a concurrent resolve is
seen; the partial unique index on the open subject is the backstop. Resolving needs the
operator's note; who and when are recorded on the item and on the order's events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from orderpay.domain.money import Money, parse_amount
from orderpay.domain.reviews import FindingMoney, ReviewReason, finding_money
from orderpay.domain.states import PAID_ORDER_STATUSES, OrderStatus, PaymentStatus
from orderpay.domain.validation import has_unstorable_characters
from orderpay.errors import InvalidField, InvalidInput
from orderpay.payments.review_texts import reported_text, suggested_action
from orderpay.store import order_events, refunds, reviews
from orderpay.store.db import Transactional, retrying
from orderpay.store.ids import short
from orderpay.store.locks import LockedPayment
from orderpay.store.payments import Payment
from orderpay.store.reviews import ReviewItem

MAX_NOTE_LENGTH = 2000
RESOLVED_EVENT = "review_resolved"


# --- Findings: opened in the transaction that records them ------------------------------------


@dataclass(frozen=True, slots=True)
class Kept:
    item_id: int
    opened: bool  # False: an item about the same finding was open already

    def __str__(self) -> str:
        if self.opened:
            return f"kept for review as item {self.item_id}"
        return f"kept for review (item {self.item_id}, open already)"


def keep(
    conn: Connection,
    *,
    reason: ReviewReason,
    subject: str,
    order_id: uuid.UUID,
    reported: str,
    action: str,
    payment_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
    event_id: int | None = None,
    money: FindingMoney | None = None,
) -> Kept:
    """Open an item for a finding, unless an item about its subject is open already. The
    caller holds the lock of what the subject names (the payment, or the order); the open
    item is read locked, so a resolve in flight is waited for and, if it closed the item, a
    new item is opened rather than the report attached to a resolved one."""
    existing = reviews.open_item_about(conn, subject)
    if existing is None:
        opened = reviews.open_item(
            conn,
            reason=reason.value,
            subject=subject,
            order_id=order_id,
            reported=reported,
            suggested_action=action,
            payment_id=payment_id,
            refund_id=refund_id,
            event_id=event_id,
            money=None if money is None else money.value,
        )
        if opened is not None:
            return Kept(opened, opened=True)
        existing = reviews.open_item_about(conn, subject)  # opened meanwhile: the backstop
        assert existing is not None, "the unique index said an item is open"
    return Kept(existing.id, opened=False)


def outcome_reason(locked: LockedPayment, target: PaymentStatus) -> ReviewReason:
    """Why a terminal outcome that contradicts our records is kept for review."""
    payment = locked.payment
    if target is not PaymentStatus.SUCCEEDED:
        return ReviewReason.OUTCOME_CONFLICT  # a failure after a success
    if payment.awaiting_confirmation:
        return ReviewReason.SUCCESS_AFTER_CANCEL  # failed by an operator without its word
    if locked.order_status is OrderStatus.CANCELLED:
        return ReviewReason.SUCCESS_ON_CANCELLED_ORDER
    if locked.order_status in PAID_ORDER_STATUSES:
        return ReviewReason.SECOND_PAYMENT  # another payment paid the order
    return ReviewReason.OUTCOME_CONFLICT  # a success after a failure


def keep_outcome_conflict(
    conn: Connection,
    locked: LockedPayment,
    target: PaymentStatus,
    reported: str,
    *,
    event_id: int | None,
) -> Kept:
    """A terminal outcome that contradicts the payment's status or its order's (a success
    after a failure or the reverse, a success after a forced cancel, a success for an order
    cancelled or paid by another payment).

    Subject: the payment alone (`payment:{id}`, as outcome_subject spells it). It has one
    terminal status, so it can be contradicted only one way, though a later report may read as
    another reason."""
    payment = locked.payment
    reason = outcome_reason(locked, target)
    action = suggested_action(
        reason,
        provider=payment.provider,
        amount=payment.amount,
        succeeded=target is PaymentStatus.SUCCEEDED,
        order_status=locked.order_status,
    )
    return keep(
        conn,
        reason=reason,
        subject=f"payment:{payment.id}",
        order_id=payment.order_id,
        reported=reported,
        action=action,
        payment_id=payment.id,
        event_id=event_id,
        money=_money_said(payment, target),
    )


def keep_amount_mismatch(
    conn: Connection,
    locked: LockedPayment,
    target: PaymentStatus,
    reported: str,
    reported_money: Money | str,
    *,
    event_id: int | None,
) -> Kept:
    """The provider reports outcome `target` with another amount or currency than the
    payment's. What to do depends on the outcome (a failure took no money) and on our record
    of the payment (a success for a payment not recorded succeeded paid for nothing).

    Subject: the payment and the outcome, so a success (money taken) is never folded into an
    open item about a failure."""
    payment = locked.payment
    action = suggested_action(
        ReviewReason.AMOUNT_MISMATCH,
        provider=payment.provider,
        amount=payment.amount,
        reported=reported_money,
        succeeded=target is PaymentStatus.SUCCEEDED,
        payment_status=payment.status,
    )
    return keep(
        conn,
        reason=ReviewReason.AMOUNT_MISMATCH,
        subject=f"payment:{payment.id}:amount:{target}",
        order_id=payment.order_id,
        reported=reported,
        action=action,
        payment_id=payment.id,
        event_id=event_id,
        money=_money_said(payment, target),
    )


def _money_said(payment: Payment, target: PaymentStatus) -> FindingMoney | None:
    return finding_money(
        reported_succeeded=target is PaymentStatus.SUCCEEDED,
        recorded_succeeded=payment.status is PaymentStatus.SUCCEEDED,
    )


def keep_sender_conflict(
    conn: Connection,
    locked: LockedPayment,
    reported: str,
    transaction_id: str | None,
    *,
    holder: uuid.UUID,
    event_id: int | None,
) -> Kept:
    """A sender reports an outcome for the payment under a transaction id another payment
    (`holder`) holds. Subject: the payment and the id."""
    payment = locked.payment
    action = (
        f"check with {payment.provider} which payment transaction {transaction_id} is (payment "
        f"{holder} holds it); if it is this one's, {payment.provider} took {payment.amount} for "
        "it: settle it with the provider's word (`orderpay reconcile`) or refund it"
    )
    return keep(
        conn,
        reason=ReviewReason.SENDER_ID_CONFLICT,
        subject=f"payment:{payment.id}:sender:{transaction_id}",
        order_id=payment.order_id,
        reported=reported,
        action=action,
        payment_id=payment.id,
        event_id=event_id,
        money=None,
    )


def keep_under_reference(
    conn: Connection,
    why: ReviewReason,
    *,
    order_id: uuid.UUID,
    order_currency: str,
    source: str,
    status: PaymentStatus,
    reference: str,
    amount: str | int | None,
    currency: str | None,
    reason: str | None,
    event_id: int,
) -> Kept:
    """An outcome under a reference that matches no payment of the order (none is named):
    `second_payment` on an order already paid (money taken twice?), or
    `success_on_cancelled_order` for a success on a cancelled order (money taken for an order
    no payment can settle any more).

    Subject: the order, the reference and the status: a success under a reference may be money
    taken twice, a failure under it is not."""
    money = _money_or_text(amount, currency or order_currency)
    reported = reported_text(
        f"{source} callback",
        status,
        amount=money,
        currency=currency,
        reference=reference,
        reason=reason,
    )
    action = suggested_action(
        why,
        provider="the provider",
        amount=None,
        reported=money,
        succeeded=status is PaymentStatus.SUCCEEDED,
    )
    return keep(
        conn,
        reason=why,
        subject=f"order:{order_id}:ref:{reference}:{status}",
        order_id=order_id,
        reported=reported,
        action=action,
        event_id=event_id,
    )


def keep_no_final_answer(
    conn: Connection,
    *,
    kind: str,
    item_id: uuid.UUID,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    provider: str,
    reported: str,
) -> Kept:
    """A payment or refund asked of its provider past the catch-up's deadline without a
    final answer. It says nothing of the money: the provider still may. Subject: the item."""
    refund = kind == "refund"
    action = (
        f"ask {provider} what became of {kind} {item_id} (its portal, or support); then settle "
        "it as the provider says (`orderpay payment cancel --force` for a payment it never "
        "took) and resolve this item. orderpay keeps asking daily"
    )
    return keep(
        conn,
        reason=ReviewReason.NO_FINAL_ANSWER,
        subject=f"{kind}:{item_id}:no_final_answer",
        order_id=order_id,
        reported=reported,
        action=action,
        payment_id=payment_id,
        refund_id=item_id if refund else None,
    )


def _money_or_text(amount: str | int | None, currency: str) -> Money | str | None:
    """A reported amount as money when it reads as one; else as it was sent, escaped (never
    an error: the finding is kept whatever the sender wrote, even a NUL)."""
    if amount is None:
        return None
    try:
        return parse_amount(str(amount), currency)
    except InvalidInput:
        return f"{str(amount)[:32]!a} {currency}"


# --- The operator's side ----------------------------------------------------------------------


def clean_note(raw: str) -> str:
    """The operator's note on a resolution: required, printable, bounded."""
    note = raw.strip()
    if not note:
        raise InvalidField("--note must say what was decided; it must not be empty", field="note")
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidField(f"--note is longer than {MAX_NOTE_LENGTH} characters", field="note")
    if has_unstorable_characters(note):
        raise InvalidField("--note must not contain control characters", field="note")
    return note


def resolve(
    db: Transactional,
    item_id: int,
    *,
    note: str,
    operator: str,
    refund_id: uuid.UUID | None = None,
) -> ReviewItem:
    """Resolve an open item with the operator's note (and the refund that settled it); its
    order's events say who and why.

    ReviewItemNotFound for an unknown id; ReviewItemResolved (nothing changes) when it was
    resolved already, by anyone: one resolution per item, two at once included. A refund
    that is not of the item's payment is refused (InvalidField), nothing changed.
    """
    why = clean_note(note)

    def apply(conn: Connection) -> ReviewItem:
        if refund_id is not None:
            _check_refund_of(conn, reviews.get_item(conn, item_id), refund_id)
        item = reviews.resolve_item(conn, item_id, operator=operator, note=why, refund_id=refund_id)
        about = f" (payment {short(item.payment_id)})" if item.payment_id is not None else ""
        by = f", by refund {short(refund_id)}" if refund_id is not None else ""
        order_events.record_event(
            conn,
            item.order_id,
            RESOLVED_EVENT,
            f"review item {item.id} ({item.reason}){about} resolved{by}: {why}",
            at=item.resolved_at,
            operator=operator,
        )
        return item

    return retrying(db, apply)


def _check_refund_of(conn: Connection, item: ReviewItem, refund_id: uuid.UUID) -> None:
    refund = refunds.get_refund(conn, refund_id)
    if item.payment_id is None or refund.payment_id != item.payment_id:
        raise InvalidField(
            f"refund {refund_id} is of payment {refund.payment_id}; review item {item.id} is "
            + (f"about payment {item.payment_id}" if item.payment_id else "about no payment"),
            field="refund",
        )


def outcome_subject(payment_id: uuid.UUID) -> str:
    """The subject of findings about a payment's outcome (see keep_outcome_conflict)."""
    return f"payment:{payment_id}"
