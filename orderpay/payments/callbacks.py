"""Signed payment callbacks (DESIGN.md section 5, Callback): validate, record once, settle.

The HTTP layer has already checked the signature over the raw bytes. Here the body is parsed
and validated, and `apply_callback` runs the ordinary transaction:
1. record the event before looking anything up: a copy of a recorded event is a duplicate
   whatever it names, and changes nothing;
2. find the payment it names (store/locks.py payment_named), locked with its order;
3. settle it (settlement.py), keeping the sender's own transaction id on the payment.
On Postgres the listener settles the common case in batches first (callback_batches.py),
with these same rules; whatever a batch does not settle comes here.

A callback that matches no payment of an existing order (it came before the charge recorded
the provider's receipt, say) is kept as `unmatched`, committed, and answered 404 so the sender
retries; a later copy, or `orderpay webhook replay`, tries the match again. At most
MAX_UNMATCHED_PER_ORDER are kept per order; a callback about an unknown order is not kept.
Kept for review instead (200 `review`), as no later match can settle them: any outcome under
an unknown reference for an order already paid (money taken twice?), and a success under one
for a cancelled order (money taken for nothing).

Trust: the callback secret is shared with the senders that sign (the simulator, standing for
the seed's signing sender). A signed callback about a payment of a provider that does not sign
with it (MTN) settles nothing: it is a hint, confirmed by that provider's status call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.domain.money import currency_code, parse_amount
from orderpay.domain.reviews import ReviewReason
from orderpay.domain.states import PAID_ORDER_STATUSES, OrderStatus, PaymentStatus
from orderpay.domain.validation import as_uuid, has_unstorable_characters, json_object, parse_uuid
from orderpay.errors import InvalidPayload, NotFound, OrderNotFound, PaymentNotFound
from orderpay.payments import review
from orderpay.payments.settlement import Report, Settled, settle
from orderpay.providers.capabilities import CAPABILITIES, CallbackTrust
from orderpay.store import locks, order_events, webhook_events
from orderpay.store.locks import LockedPayment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment

MAX_REFERENCE_LENGTH = 128
MAX_REASON_LENGTH = 255
STATUS_WORDS = {
    "success": PaymentStatus.SUCCEEDED,
    "successful": PaymentStatus.SUCCEEDED,  # MTN's SUCCESSFUL
    "failed": PaymentStatus.FAILED,
}
MOMO_SOURCE = "momo"
# Providers whose outcomes arrive signed with MOMO_WEBHOOK_SECRET (their capability record
# says so), so a signed callback is their word. Any other provider's payment is only hinted at
# by one.
SIGNING_PROVIDERS = frozenset(
    name for name, record in CAPABILITIES.items() if record.callbacks is CallbackTrust.SIGNED
)
# Unmatched callbacks kept per order: enough for every outcome of a few charges arriving early,
# and a bound on what a sender that names one order over and over can make us store.
MAX_UNMATCHED_PER_ORDER = 20
KEPT_UNMATCHED = "callback_kept_unmatched"  # the order event of each kept event


class Answer(StrEnum):
    """What the listener tells the sender (200, but UNMATCHED: 404, the result's `error`)."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    REVIEW = "review"
    RECEIVED = "received"  # a hint: the payment's own provider is asked before anything moves
    UNMATCHED = "unmatched"  # kept, committed; the sender is told `error` (404) and retries


@dataclass(frozen=True, slots=True)
class Callback:
    source: str
    dedupe_key: str
    provider_reference: str
    order_id: uuid.UUID
    status: PaymentStatus
    amount: str | int | None
    currency: str | None
    reason: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class CallbackResult:
    answer: Answer
    payment_id: uuid.UUID | None
    notification_queued: bool = False  # an outbox row was written: wake the relay on commit
    confirm: Payment | None = None  # a hint: ask this payment's provider, off the request
    error: NotFound | None = None  # UNMATCHED: what to answer, once the transaction committed


def parse_callback(body: bytes, *, webhook_id: str | None = None) -> Callback:
    """Validate a `/api/webhooks/momo/` body; raise InvalidPayload naming the problem."""
    document, text = json_object(body)
    reference = document.get("provider_reference")
    if (
        not isinstance(reference, str)
        or not 1 <= len(reference) <= MAX_REFERENCE_LENGTH
        or has_unstorable_characters(reference)
    ):
        raise InvalidPayload(
            f"provider_reference must be a string of 1-{MAX_REFERENCE_LENGTH} printable characters"
        )
    order_id = parse_uuid(document.get("order_id"), "order_id", error=InvalidPayload)
    word = document.get("status")
    status = STATUS_WORDS.get(word.lower()) if isinstance(word, str) else None
    if status is None:
        raise InvalidPayload("status must be success or failed (MTN: SUCCESSFUL or FAILED)")

    amount = document.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, str | int)):
        raise InvalidPayload('amount must be a decimal string such as "25.00"')
    currency = document.get("currency")
    if currency is not None:
        if not isinstance(currency, str):
            raise InvalidPayload("currency must be an ISO 4217 code")
        currency = currency_code(currency)
    reason = document.get("reason")
    if reason is not None and (
        not isinstance(reason, str)
        or len(reason) > MAX_REASON_LENGTH
        or has_unstorable_characters(reason)
    ):
        raise InvalidPayload(
            f"reason must be a string of at most {MAX_REASON_LENGTH} printable characters"
        )

    # Without a sender's event id, one outcome for one reference is one event.
    dedupe_key = webhook_id or f"{reference}:{status.value}"
    return Callback(
        source=MOMO_SOURCE,
        dedupe_key=dedupe_key,
        provider_reference=reference,
        order_id=order_id,
        status=status,
        amount=amount,
        currency=currency,
        reason=reason,
        payload=text,
    )


def report_of(callback: Callback, payment: Payment) -> Report:
    """What the callback reports about `payment`: an amount without a currency is in the
    payment's; the reference is the sender's own transaction id unless it is ours. Raises
    InvalidAmount for an amount the currency does not allow."""
    ours = callback.provider_reference in (str(payment.id), payment.provider_reference)
    amount = None
    if callback.amount is not None:
        amount = parse_amount(str(callback.amount), callback.currency or payment.amount.currency)
    return Report(
        callback.status,
        f"{callback.source} callback",
        reason=callback.reason,
        amount=amount,
        currency=callback.currency,
        transaction_id=None if ours else callback.provider_reference,
        reference=callback.provider_reference,
    )


def names_its_order(callback: Callback, locked: LockedPayment) -> bool:
    """Whether the payment a callback named by its id is one of the order it names."""
    return locked.payment.order_id == callback.order_id


def apply_callback(conn: Connection, callback: Callback, notify: NotifyTarget) -> CallbackResult:
    """Record the callback once and settle its payment, all in the caller's transaction.

    When no payment of its order matches (yet), the event is kept as `unmatched` and the result
    carries the error to answer (404 payment_not_found, the sender retries) once the caller has
    committed. Raises OrderNotFound for an unknown order, and PaymentNotFound past the bound of
    kept events: the transaction then rolls back and nothing is recorded.
    """
    event = webhook_events.receive(
        conn, source=callback.source, dedupe_key=callback.dedupe_key, payload=callback.payload
    )
    if event.id is None:
        return CallbackResult(Answer.DUPLICATE, event.payment_id)
    locked = locks.lock_named(
        conn, callback.order_id, as_uuid(callback.provider_reference), callback.provider_reference
    )
    if locked is None:
        return _unmatched(conn, callback, event.id, again=event.again)
    if not names_its_order(callback, locked):
        raise InvalidPayload("provider_reference belongs to another order")
    payment = locked.payment
    if payment.provider not in SIGNING_PROVIDERS:
        webhook_events.decide(conn, event.id, "hint", payment.order_id, payment.id)
        return CallbackResult(Answer.RECEIVED, payment.id, confirm=payment)
    verdict = settle(conn, locked, report_of(callback, payment), notify, event_id=event.id)
    if verdict is Settled.APPLIED:
        queued = callback.status is PaymentStatus.SUCCEEDED
        return CallbackResult(Answer.PROCESSED, payment.id, notification_queued=queued)
    if verdict is Settled.UNCHANGED:
        return CallbackResult(Answer.DUPLICATE, payment.id)
    return CallbackResult(Answer.REVIEW, payment.id)


def _unmatched(conn: Connection, callback: Callback, event: int, *, again: bool) -> CallbackResult:
    """No payment of the order matches. For an order already paid this is an outcome under
    another reference (possibly money taken twice), and for a cancelled order a success under
    one (money taken for an order that no payment can settle any more): kept for review.
    Otherwise the callback may simply be early, before the provider's receipt of a charge is
    recorded: kept as `unmatched` (within the bound), answered 404, and tried again when the
    sender retries. A failure for a cancelled order is kept that way too: it moved no money,
    so nothing needs a decision."""
    # Locked: two callbacks of one order count its kept events one after the other.
    order = locks.lock_order(conn, callback.order_id)
    if order is None:
        raise OrderNotFound(f"order {callback.order_id} does not exist")
    if order.status in PAID_ORDER_STATUSES:
        finding, state, question = ReviewReason.SECOND_PAYMENT, "paid", "a second payment?"
    elif order.status is OrderStatus.CANCELLED and callback.status is PaymentStatus.SUCCEEDED:
        finding, state, question = (
            ReviewReason.SUCCESS_ON_CANCELLED_ORDER,
            "cancelled",
            "money to refund?",
        )
    else:
        return _kept_unmatched(conn, callback, event, again=again)
    kept = review.keep_under_reference(
        conn,
        finding,
        order_id=order.id,
        order_currency=order.total.currency,
        source=callback.source,
        status=callback.status,
        reference=callback.provider_reference,
        amount=callback.amount,
        currency=callback.currency,
        reason=callback.reason,
        event_id=event,
    )
    order_events.record_event(
        conn,
        callback.order_id,
        "callback_unmatched",
        f"{callback.source} callback reported {callback.status} under reference "
        f"{callback.provider_reference!r}, which matches no payment of this {state} order; {kept} "
        f"({question}), nothing changed",
    )
    webhook_events.decide(conn, event, "review_unmatched", callback.order_id, None)
    return CallbackResult(Answer.REVIEW, None)


def _kept_unmatched(
    conn: Connection, callback: Callback, event: int, *, again: bool
) -> CallbackResult:
    """Kept as `unmatched` (within the bound) and answered 404: the sender retries."""
    error = PaymentNotFound(
        f"order {callback.order_id} has no payment awaiting an outcome; retry later"
    )
    if again:  # kept already: it stays as it is
        return CallbackResult(Answer.UNMATCHED, None, error=error)
    # Counted in the order events, whose rows are indexed by order (the inbox's are not, and an
    # index there would cost every callback its HOT update): the events ever kept, at most.
    if (
        order_events.count_events(conn, callback.order_id, KEPT_UNMATCHED)
        >= MAX_UNMATCHED_PER_ORDER
    ):
        raise error  # rolls back: nothing more is kept for this order
    webhook_events.decide(conn, event, webhook_events.UNMATCHED, callback.order_id, None)
    order_events.record_event(
        conn,
        callback.order_id,
        KEPT_UNMATCHED,
        f"{callback.source} callback reported {callback.status} under reference "
        f"{callback.provider_reference!r}, which matches no payment awaiting an outcome: "
        f"answered 404 and kept as webhook event {event}, tried again when the sender "
        "retries or by `orderpay webhook replay`",
    )
    return CallbackResult(Answer.UNMATCHED, None, error=error)
