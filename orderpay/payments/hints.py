"""MTN's own callbacks (`POST`/`PUT /api/webhooks/mtn/`): unsigned, so only hints.

Anyone can post to this route, so what it stores is bounded: only a hint about an MTN payment
whose outcome is awaited (open, or failed by an operator without MTN's word) is recorded, once
per (payment, status), as the fields MTN's callback carries (never the raw body). The hint
names the payment to ask about; confirmation.confirm_payment then asks MTN's status call
before anything changes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from orderpay.domain.validation import as_uuid, has_unstorable_characters, json_object
from orderpay.errors import InvalidPayload
from orderpay.store import webhook_events
from orderpay.store.payments import (
    Payment,
    find_payment,
    payment_to_confirm_of_order,
    to_confirm,
)

MTN_SOURCE = "mtn"
MTN_PROVIDER = "mtn"
# The fields of MTN's callback kept with a hint, each at most this long.
HINT_FIELDS = (
    "externalId",
    "referenceId",
    "status",
    "financialTransactionId",
    "amount",
    "currency",
    "reason",
)
MAX_FIELD_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Hint:
    order_id: uuid.UUID | None  # MTN's externalId: the order id we sent
    reference: uuid.UUID | None  # referenceId, when MTN includes it: our payment id
    status: str
    fields: dict[str, str]  # what is stored: the callback's own fields, bounded


def parse_hint(body: bytes) -> Hint:
    document, _ = json_object(body)
    order_id, reference = as_uuid(document.get("externalId")), as_uuid(document.get("referenceId"))
    if order_id is None and reference is None:
        raise InvalidPayload("externalId (the order id) or referenceId is required")
    fields = {}
    for name in HINT_FIELDS:
        value = document.get(name)
        if name == "reason" and isinstance(value, dict):
            value = value.get("code")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not has_unstorable_characters(value):
            fields[name] = value[:MAX_FIELD_LENGTH]
    return Hint(order_id, reference, fields.get("status", "").upper(), fields)


def record_hint(conn: Connection, hint: Hint) -> Payment | None:
    """Record the hint once per (payment, status); the open MTN payment to confirm, or None
    (nothing open to confirm, or a hint already recorded: then nothing is written)."""
    payment = find_payment(conn, hint.reference) if hint.reference is not None else None
    if payment is None and hint.order_id is not None:
        payment = payment_to_confirm_of_order(conn, hint.order_id)
    if payment is None or payment.provider != MTN_PROVIDER or not to_confirm(payment):
        return None
    recorded = webhook_events.record_once(
        conn,
        source=MTN_SOURCE,
        dedupe_key=f"{payment.id}:{hint.status or 'UNKNOWN'}",
        payload=json.dumps(hint.fields, sort_keys=True),
        outcome="to_confirm",
        order_id=payment.order_id,
        payment_id=payment.id,
    )
    return payment if recorded else None
