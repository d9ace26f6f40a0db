"""Idempotency keys: their format and the fingerprint of the request they stand for."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping

from orderpay.domain.money import Money
from orderpay.errors import IdempotencyKeyMissing, InvalidIdempotencyKey

MAX_KEY_LENGTH = 255
# Visible ASCII only: a key that differs from another only by white space or an invisible
# character is a bug waiting to happen, so such keys are refused rather than normalised.
_KEY = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$")


def check_key(key: str | None) -> str:
    """Return the key if it is well formed; refuse it before anything is written."""
    if key is None or key == "":
        raise IdempotencyKeyMissing(
            "an idempotency key is required (CLI: --key KEY; HTTP: Idempotency-Key header)"
        )
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"an idempotency key is 1-{MAX_KEY_LENGTH} visible ASCII characters "
            "(no spaces or control characters)"
        )
    return key


def charge_fingerprint(order_id: uuid.UUID, amount: Money, payer_phone: str) -> str:
    """sha256 of the canonical JSON of what a charge asks for."""
    canonical = json.dumps(
        {
            "command": "charge",
            "order": str(order_id),
            "amount": amount.minor_units,
            "currency": amount.currency,
            "payer": payer_phone,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_fingerprint(customer_id: int, quantities: Mapping[uuid.UUID, int]) -> str:
    """sha256 of the canonical JSON of what an order asks for: whose, and how many of each
    product. Lines are merged and sorted first, as the order stores them, so a retry that
    lists the same items in another order asks for the same thing.
    """
    canonical = json.dumps(
        {
            "command": "order",
            "customer": customer_id,
            "items": sorted([str(product), quantity] for product, quantity in quantities.items()),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def refund_fingerprint(payment_id: uuid.UUID, amount: Money | None, currency: str) -> str:
    """sha256 of the canonical JSON of what a refund asks for: which payment, how much
    (`amount` None: "what remains refundable", as asked), in which currency.

    The operator's reason is left out on purpose. It explains the refund and moves no money:
    a retry whose reason was reworded (or that a client builds with a timestamp) is the same
    refund, and replays it with the stored reason, instead of failing as key reuse. The
    requested amount, not the amount it resolved to, is what is compared: a replay of "refund
    the rest" after that refund succeeded finds nothing left, yet asks for the same thing.
    """
    canonical = json.dumps(
        {
            "command": "refund",
            "payment": str(payment_id),
            "amount": None if amount is None else amount.minor_units,
            "currency": currency,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
