"""Payment callbacks (DESIGN.md section 5, Callback): validate, record once, settle.

The HTTP layer has already checked the signature over the raw bytes. Here the body is parsed and
validated, and one transaction records the event (unique per source and dedupe key), locks the
payment and its order, and settles the payment (settlement.py).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from orderpay.errors import InvalidPayload, OrderNotFound, PaymentNotFound
from orderpay.fields import has_unstorable_characters
from orderpay.inbox import record_once
from orderpay.models import orders
from orderpay.money import Money, currency_code, parse_amount
from orderpay.outbox import NotifyTarget
from orderpay.settlement import (
    LOCK_BY_ID,
    LOCK_BY_REFERENCE,
    LOCK_OPEN_OF_ORDER,
    LockedPayment,
    Settled,
    classify,
    lock_payment,
    settle,
)
from orderpay.states import PaymentStatus

MAX_REFERENCE_LENGTH = 128
MAX_REASON_LENGTH = 255
STATUS_WORDS = {
    "success": PaymentStatus.SUCCEEDED,
    "successful": PaymentStatus.SUCCEEDED,  # MTN's SUCCESSFUL
    "failed": PaymentStatus.FAILED,
}
MOMO_SOURCE = "momo"


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
    outcome: Settled | None  # None: a duplicate event, nothing was looked at
    payment_id: uuid.UUID | None
    notification_queued: bool = False  # an outbox row was written: wake the relay on commit

    @property
    def answer(self) -> str:
        """The word the listener answers with: processed, duplicate or review."""
        if self.outcome is None or self.outcome is Settled.UNCHANGED:
            return "duplicate"
        if self.outcome is Settled.APPLIED:
            return "processed"
        return "review"


def parse_callback(body: bytes, *, webhook_id: str | None = None) -> Callback:
    """Validate a `/api/webhooks/momo/` body; raise InvalidPayload naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("the body is not UTF-8") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidPayload("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidPayload("the body must be a JSON object")

    reference = document.get("provider_reference")
    if (
        not isinstance(reference, str)
        or not 1 <= len(reference) <= MAX_REFERENCE_LENGTH
        or has_unstorable_characters(reference)
    ):
        raise InvalidPayload(
            f"provider_reference must be a string of 1-{MAX_REFERENCE_LENGTH} printable characters"
        )
    raw_order = document.get("order_id")
    if not isinstance(raw_order, str):
        raise InvalidPayload("order_id must be a UUID string")
    try:
        order_id = uuid.UUID(raw_order)
    except ValueError:
        raise InvalidPayload("order_id must be a UUID string") from None
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


def reported_amount(callback: Callback, payment_currency: str) -> Money | None:
    """The amount the callback reports (in its currency, else the payment's), or None."""
    if callback.amount is None:
        return None
    return parse_amount(str(callback.amount), callback.currency or payment_currency)


def apply_callback(conn: Connection, callback: Callback, notify: NotifyTarget) -> CallbackResult:
    """Record the callback once and settle its payment, all in the caller's transaction.

    Raises OrderNotFound / PaymentNotFound (HTTP 404: the sender retries later) when there is
    nothing to apply it to; the transaction then rolls back and nothing is recorded.
    """
    locked = _locate(conn, callback)
    amount = reported_amount(callback, locked.payment.amount.currency)
    verdict = classify(locked, callback.status, amount, callback.currency)
    payment = locked.payment
    if not record_once(
        conn, source=callback.source, dedupe_key=callback.dedupe_key, payload=callback.payload,
        outcome=verdict.value, order_id=payment.order_id, payment_id=payment.id,
    ):  # fmt: skip
        return CallbackResult(None, payment.id)
    settle(
        conn, locked, callback.status, reason=callback.reason, amount=amount,
        currency=callback.currency, source=f"{callback.source} callback", notify=notify,
    )  # fmt: skip
    queued = verdict is Settled.APPLIED and callback.status is PaymentStatus.SUCCEEDED
    return CallbackResult(verdict, locked.payment.id, queued)


def _locate(conn: Connection, callback: Callback) -> LockedPayment:
    """The payment the callback is about, locked with its order.

    The reference is our payment id (what we give providers) or the provider's own reference.
    Senders built on the seed send their own transaction id, which we may not know: then the
    order's open payment is the one meant.
    """
    attempts: list[tuple[Select[Any], dict[str, Any]]] = [
        (LOCK_BY_REFERENCE, {"b_reference": callback.provider_reference})
    ]
    with contextlib.suppress(ValueError):
        attempts.insert(0, (LOCK_BY_ID, {"b_payment": uuid.UUID(callback.provider_reference)}))
    for statement, params in attempts:
        locked = lock_payment(conn, statement, **params)
        if locked is None:
            continue
        if locked.payment.order_id != callback.order_id:
            raise InvalidPayload("provider_reference belongs to another order")
        return locked
    locked = lock_payment(conn, LOCK_OPEN_OF_ORDER, b_order=callback.order_id)
    if locked is not None:
        return locked
    if conn.execute(_ORDER_EXISTS, {"b_order": callback.order_id}).first() is None:
        raise OrderNotFound(f"order {callback.order_id} does not exist")
    raise PaymentNotFound(f"order {callback.order_id} has no payment awaiting an outcome")


_ORDER_EXISTS = select(orders.c.id).where(orders.c.id == bindparam("b_order"))
