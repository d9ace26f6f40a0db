"""MTN's own callbacks (`POST`/`PUT /api/webhooks/mtn/`): unsigned, so only hints.

A hint is recorded once (MTN was seen to deliver one callback twice), and names the payment to
ask about; confirmation.confirm_payment then asks MTN's status call before anything changes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from orderpay.errors import InvalidPayload
from orderpay.inbox import record_once
from orderpay.payments import Payment
from orderpay.settlement import LOCK_BY_ID, LOCK_OPEN_OF_ORDER, lock_payment
from orderpay.states import OPEN_PAYMENT_STATUSES

MTN_SOURCE = "mtn"


@dataclass(frozen=True, slots=True)
class Hint:
    order_id: uuid.UUID | None  # MTN's externalId: the order id we sent
    reference: uuid.UUID | None  # referenceId, when MTN includes it: our payment id
    status: str
    payload: str
    dedupe_key: str


def parse_hint(body: bytes) -> Hint:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidPayload("the body is not UTF-8 JSON") from None
    if b"\x00" in body:
        raise InvalidPayload("the body contains NUL characters")
    if not isinstance(document, dict):
        raise InvalidPayload("the body must be a JSON object")
    order_id, reference = _uuid(document.get("externalId")), _uuid(document.get("referenceId"))
    if order_id is None and reference is None:
        raise InvalidPayload("externalId (the order id) or referenceId is required")
    status = document.get("status")
    return Hint(
        order_id=order_id,
        reference=reference,
        status=status if isinstance(status, str) else "",
        payload=body.decode("utf-8"),
        # The same callback delivered twice has the same bytes.
        dedupe_key=hashlib.sha256(body).hexdigest(),
    )


def record_hint(conn: Connection, hint: Hint) -> Payment | None:
    """Record the hint once; the open payment it points at, or None (a duplicate, or nothing
    open to confirm: then nothing is recorded, since anyone can post unsigned bodies)."""
    payment = None
    if hint.reference is not None:
        locked = lock_payment(conn, LOCK_BY_ID, b_payment=hint.reference)
        payment = locked.payment if locked is not None else None
    if payment is None and hint.order_id is not None:
        locked = lock_payment(conn, LOCK_OPEN_OF_ORDER, b_order=hint.order_id)
        payment = locked.payment if locked is not None else None
    if payment is None:
        return None
    recorded = record_once(
        conn, source=MTN_SOURCE, dedupe_key=hint.dedupe_key, payload=hint.payload,
        outcome="to_confirm", order_id=payment.order_id, payment_id=payment.id,
    )  # fmt: skip
    if not recorded or payment.status not in OPEN_PAYMENT_STATUSES:
        return None
    return payment


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
