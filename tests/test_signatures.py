"""Callback signatures (DESIGN.md section 6; reference/specs.md section 2, items 11-12).

Signatures are computed here from the specs themselves (HMAC-SHA256 with the standard
library), not with orderpay's own signing code, so both sides of the contract are checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from orderpay.domain.signatures import verify
from orderpay.domain.states import PaymentStatus
from orderpay.errors import InvalidSignature
from orderpay.store.db import Database
from orderpay.store.payments import Payment, get_payment
from tests.conftest import count_rows
from tests.live_server import (
    CALLBACK_PATH,
    SECRET,
    a_pending_payment,
    listener_client,
    listener_settings,
)

OLD_SECRET = "old-callback-secret-aaaaaaaaaaaaaaaaaaaaaa"
NEW_SECRET = "new-callback-secret-bbbbbbbbbbbbbbbbbbbbbb"
WHSEC_KEY = bytes(range(32))  # Standard Webhooks: whsec_ + base64 of 24-64 random bytes
WHSEC_SECRET = "whsec_" + base64.b64encode(WHSEC_KEY).decode()
REFUSED = {"error": {"code": "invalid_signature", "message": "invalid signature"}}
TOLERANCE = 300


def hex_hmac(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def standard_signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def standard_headers(
    body: bytes, *keys: bytes, age: int = 0, webhook_id: str = "msg_2Kf9"
) -> dict[str, str]:
    """Standard Webhooks headers signed with every key (a sender mid-rotation sends several)."""
    timestamp = int(time.time()) - age
    signatures = " ".join(standard_signature(key, webhook_id, timestamp, body) for key in keys)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def document_of(payment: Payment) -> dict[str, str]:
    return {
        "provider_reference": str(payment.provider_reference),
        "order_id": str(payment.order_id),
        "status": "success",
        "amount": payment.amount.as_string(),
        "currency": payment.amount.currency,
    }


def sent_body(payment: Payment) -> bytes:
    """A body as a sender may format it: indented, keys unsorted (not the canonical form)."""
    return json.dumps(document_of(payment), indent=2).encode()


def canonical_body(payment: Payment) -> bytes:
    """The seed's re-serialisation of `sent_body(payment)`."""
    return json.dumps(document_of(payment), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Variant:
    secrets: str  # MOMO_WEBHOOK_SECRET
    headers: Callable[[Payment], dict[str, str]]  # the signature headers for sent_body()


ACCEPTED = {
    "hex of the raw body": Variant(
        SECRET, lambda p: {"X-Momo-Signature": hex_hmac(SECRET.encode(), sent_body(p))}
    ),
    "hex with a sha256= prefix": Variant(
        SECRET,
        lambda p: {"X-Momo-Signature": "sha256=" + hex_hmac(SECRET.encode(), sent_body(p))},
    ),
    "hex of the seed's canonical re-serialisation": Variant(
        SECRET, lambda p: {"X-Momo-Signature": hex_hmac(SECRET.encode(), canonical_body(p))}
    ),
    "standard webhooks headers": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), SECRET.encode())
    ),
    "standard webhooks, 290 s old": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), SECRET.encode(), age=290)
    ),
    "standard webhooks, 290 s ahead": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), SECRET.encode(), age=-290)
    ),
    "rotation: signed with the old secret": Variant(
        f"{OLD_SECRET},{NEW_SECRET}",
        lambda p: {"X-Momo-Signature": hex_hmac(OLD_SECRET.encode(), sent_body(p))},
    ),
    "rotation: signed with the new secret": Variant(
        f"{OLD_SECRET}, {NEW_SECRET}",
        lambda p: {"X-Momo-Signature": hex_hmac(NEW_SECRET.encode(), sent_body(p))},
    ),
    "rotation: standard webhooks with one signature per secret": Variant(
        NEW_SECRET,
        lambda p: standard_headers(sent_body(p), OLD_SECRET.encode(), NEW_SECRET.encode()),
    ),
    "a whsec_ secret, used as its decoded bytes": Variant(
        WHSEC_SECRET, lambda p: standard_headers(sent_body(p), WHSEC_KEY)
    ),
}

REFUSED_VARIANTS = {
    "a wrong signature": Variant(
        SECRET, lambda p: {"X-Momo-Signature": hex_hmac(SECRET.encode(), b"another body")}
    ),
    "no signature": Variant(SECRET, lambda p: {}),
    "an empty signature": Variant(SECRET, lambda p: {"X-Momo-Signature": ""}),
    "a wrong secret": Variant(
        SECRET, lambda p: {"X-Momo-Signature": hex_hmac(b"not-the-secret", sent_body(p))}
    ),
    "a secret retired by the rotation": Variant(
        NEW_SECRET, lambda p: {"X-Momo-Signature": hex_hmac(OLD_SECRET.encode(), sent_body(p))}
    ),
    "a whsec_ secret used as its text": Variant(
        WHSEC_SECRET, lambda p: standard_headers(sent_body(p), WHSEC_SECRET.encode())
    ),
    "standard webhooks, stale timestamp (310 s old)": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), SECRET.encode(), age=310)
    ),
    "standard webhooks, future timestamp (310 s ahead)": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), SECRET.encode(), age=-310)
    ),
    "standard webhooks, a wrong secret": Variant(
        SECRET, lambda p: standard_headers(sent_body(p), b"not-the-secret")
    ),
    "standard webhooks over a re-serialisation of the body": Variant(
        SECRET,
        lambda p: standard_headers(canonical_body(p), SECRET.encode()),
    ),
    "standard webhooks without a timestamp": Variant(
        SECRET,
        lambda p: {
            k: v
            for k, v in standard_headers(sent_body(p), SECRET.encode()).items()
            if k != "webhook-timestamp"
        },
    ),
    "standard webhooks with a non-numeric timestamp": Variant(
        SECRET,
        lambda p: {
            **standard_headers(sent_body(p), SECRET.encode()),
            "webhook-timestamp": "soon",
        },
    ),
}


def status_of(db: Database, payment: Payment) -> PaymentStatus:
    with db.transaction() as conn:
        return get_payment(conn, payment.id).status


@pytest.mark.parametrize("variant", ACCEPTED.values(), ids=ACCEPTED.keys())
@pytest.mark.slow
def test_a_callback_signed_by_any_accepted_scheme_is_processed(
    variant: Variant, sqlite_url: str, sqlite_db: Database
) -> None:
    payment = a_pending_payment(sqlite_db)
    settings = listener_settings(sqlite_url, MOMO_WEBHOOK_SECRET=variant.secrets)

    with listener_client(settings) as client:
        answer = client.post(
            CALLBACK_PATH, content=sent_body(payment), headers=variant.headers(payment)
        )

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"
    assert status_of(sqlite_db, payment) is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize("variant", REFUSED_VARIANTS.values(), ids=REFUSED_VARIANTS.keys())
@pytest.mark.slow
def test_a_callback_without_a_valid_signature_is_refused_with_401_and_nothing_stored(
    variant: Variant, sqlite_url: str, sqlite_db: Database
) -> None:
    payment = a_pending_payment(sqlite_db)
    before = count_rows(sqlite_db)
    settings = listener_settings(sqlite_url, MOMO_WEBHOOK_SECRET=variant.secrets)

    with listener_client(settings) as client:
        answer = client.post(
            CALLBACK_PATH, content=sent_body(payment), headers=variant.headers(payment)
        )

    assert answer.status_code == 401
    assert answer.json() == REFUSED  # the same few words whatever was wrong: no detail
    assert count_rows(sqlite_db) == before
    assert status_of(sqlite_db, payment) is PaymentStatus.PENDING


def test_a_badly_signed_body_is_refused_before_it_is_parsed(
    sqlite_url: str, sqlite_db: Database
) -> None:
    before = count_rows(sqlite_db)

    with listener_client(listener_settings(sqlite_url)) as client:
        answer = client.post(
            CALLBACK_PATH, content=b"{not json", headers={"X-Momo-Signature": "0" * 64}
        )

    assert answer.status_code == 401  # not 400: nothing looked inside the body
    assert answer.json() == REFUSED
    assert count_rows(sqlite_db) == before


def test_a_listener_without_a_configured_secret_has_no_signed_callback_route(
    sqlite_url: str, sqlite_db: Database
) -> None:
    payment = a_pending_payment(sqlite_db)
    before = count_rows(sqlite_db)
    body = sent_body(payment)

    with listener_client(listener_settings(sqlite_url, MOMO_WEBHOOK_SECRET="")) as client:
        answer = client.post(
            CALLBACK_PATH, content=body, headers={"X-Momo-Signature": hex_hmac(b"", body)}
        )

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert count_rows(sqlite_db) == before


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE], ids=["300 s old", "300 s ahead"])
def test_a_standard_webhooks_timestamp_at_the_edge_of_the_tolerance_verifies(offset: int) -> None:
    body, timestamp = b'{"status":"success"}', 1_800_000_000
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(b"k", "msg_1", timestamp, body),
    }

    verified = verify(body, headers, [b"k"], now=timestamp - offset)

    assert verified.webhook_id == "msg_1"


@pytest.mark.parametrize(
    "offset", [-TOLERANCE - 1, TOLERANCE + 1], ids=["301 s old", "301 s ahead"]
)
def test_a_standard_webhooks_timestamp_past_the_tolerance_is_refused(offset: int) -> None:
    body, timestamp = b'{"status":"success"}', 1_800_000_000
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(b"k", "msg_1", timestamp, body),
    }

    with pytest.raises(InvalidSignature):
        verify(body, headers, [b"k"], now=timestamp - offset)
