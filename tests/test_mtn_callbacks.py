"""POST/PUT /api/webhooks/mtn/: MTN's unsigned callbacks are hints, confirmed by MTN's status call.

A callback only names a payment to ask about; the money moves on what MTN's status call says
(reference/specs.md section 6, items 9 and 10). The listener answers at once and confirms on
threads of its own; `send` waits until those confirmations are over. MTN is the local fake.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from orderpay.config import Settings, load_settings
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order, claim_payment
from orderpay.providers.base import Accepted, CollectionRequest
from orderpay.providers.mtn import MtnProvider
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import (
    count_rows,
)
from tests.fake_mtn import DELAYED, ONGOING, REJECTS, FakeMtn
from tests.ledger_views import seen
from tests.live_server import TestClient, listener, listener_client

MTN_PATH = "/api/webhooks/mtn/"
SECRET = "x" * 40


def settings_for(database_url: str, mtn: FakeMtn) -> Settings:
    return load_settings(DATABASE_URL=database_url, MOMO_WEBHOOK_SECRET=SECRET, **mtn.env())


@pytest.fixture
def client(pg_url: str, mtn: FakeMtn) -> Iterator[TestClient]:
    with listener_client(settings_for(pg_url, mtn)) as test_client:
        yield test_client


def mtn_payment(
    db: Database, mtn: FakeMtn, payer: str = MTN_SANDBOX_PAYER, **options: Any
) -> Payment:
    """A 25.00 EUR order charged through MTN (the fake): its payment is pending."""
    order = an_order(db, phone=payer, currency="EUR")
    with mtn.provider(**options) as provider:
        return charge(db, provider, order.id)


def charge(db: Database, provider: MtnProvider, order_id: uuid.UUID) -> Payment:
    return charge_order(
        db, provider, order_id=order_id, key=a_key(), default_region="GH", lease_seconds=90
    ).payment


def settled_once(db: Database, payment: Payment) -> None:
    after = seen(db, payment)
    assert (after.payment, after.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert after.notifications == 1
    assert after.events.count("payment_succeeded") == 1
    assert after.events.count("order_paid") == 1


def send(client: TestClient, body: bytes, method: str = "POST") -> httpx.Response:
    answer: httpx.Response = client.request(
        method, MTN_PATH, content=body, headers={"Content-Type": "application/json"}
    )
    client.app.state.confirmer.wait()  # type: ignore[attr-defined]
    return answer


def as_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


# Forged callbacks: MTN's status call decides, so they change nothing.


@pytest.mark.parametrize("claimed", ["SUCCESSFUL", "FAILED"])
def test_a_forged_callback_for_a_payment_mtn_still_has_pending_changes_nothing(
    client: TestClient, db: Database, mtn: FakeMtn, claimed: str
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)  # MTN: PENDING
    before = seen(db, payment)
    forged = {**mtn.status_body(payment.id), "status": claimed}
    if claimed == "SUCCESSFUL":
        forged["financialTransactionId"] = "123456789"
    else:
        forged["reason"] = "APPROVAL_REJECTED"

    answer = send(client, as_bytes(forged))

    assert answer.status_code == 200, answer.text
    assert seen(db, payment) == before
    assert before.payment is PaymentStatus.PENDING
    assert mtn.calls("status") == 1  # it asked MTN, and MTN said PENDING


def test_a_forged_success_while_mtn_reports_created_changes_nothing(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + DELAYED)  # MTN: CREATED for a while
    before = seen(db, payment)
    forged = {**mtn.status_body(payment.id), "status": "SUCCESSFUL"}

    answer = send(client, as_bytes(forged))

    assert answer.status_code == 200, answer.text
    assert seen(db, payment) == before


def test_a_callback_while_mtns_status_call_fails_changes_nothing(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before = seen(db, payment)
    mtn.fail("status", 500)

    answer = send(client, as_bytes(mtn.status_body(payment.id)))

    assert answer.status_code == 200, answer.text
    assert seen(db, payment) == before  # reconcile settles it later


def test_a_success_mtn_reports_for_another_amount_never_pays_the_order(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.patch_body(payment.id, amount="1.00")

    answer = send(client, as_bytes(mtn.status_body(payment.id)))

    assert answer.status_code == 200, answer.text
    after = seen(db, payment)
    assert (after.payment, after.order, after.notifications) == (
        PaymentStatus.PENDING,
        OrderStatus.PENDING,
        0,
    )
    assert "callback_amount_mismatch" in after.events


# Genuine callbacks: confirmed, settled once.


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_genuine_success_callback_settles_the_payment_and_pays_the_order(
    client: TestClient, db: Database, mtn: FakeMtn, method: str
) -> None:
    payment = mtn_payment(db, mtn)

    answer = send(client, as_bytes(mtn.status_body(payment.id)), method)

    assert answer.status_code == 200, answer.text
    settled_once(db, payment)


def test_a_genuine_failure_callback_fails_the_payment_with_mtns_reason(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + REJECTS)

    answer = send(client, as_bytes(mtn.status_body(payment.id)))

    assert answer.status_code == 200, answer.text
    after = seen(db, payment)
    assert (after.payment, after.reason) == (PaymentStatus.FAILED, "APPROVAL_REJECTED")
    assert (after.order, after.notifications) == (OrderStatus.PENDING, 0)


def test_a_callback_naming_the_payment_by_reference_id_settles_it(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    body = {**mtn.status_body(payment.id), "referenceId": str(payment.id)}
    del body["externalId"]

    answer = send(client, as_bytes(body))

    assert answer.status_code == 200, answer.text
    settled_once(db, payment)


def test_the_same_callback_delivered_twice_settles_the_payment_once(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    body = as_bytes(mtn.status_body(payment.id))

    first = send(client, body)
    second = send(client, body, "PUT")

    assert (first.status_code, second.status_code) == (200, 200)
    settled_once(db, payment)


def test_a_callback_after_the_payment_settled_never_moves_it(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    send(client, as_bytes(mtn.status_body(payment.id)))
    late = {**mtn.status_body(payment.id), "status": "FAILED", "reason": "EXPIRED"}

    answer = send(client, as_bytes(late))

    assert answer.status_code == 200, answer.text
    settled_once(db, payment)


@pytest.mark.parametrize(
    ("copies", "methods"),
    [
        pytest.param(2, ("POST",), id="twice-3-min-apart"),
        pytest.param(1, ("POST", "PUT"), id="post-and-put"),
    ],
)
def test_mtn_calling_back_more_than_once_settles_the_payment_once(
    pg_url: str, db: Database, mtn: FakeMtn, copies: int, methods: tuple[str, ...]
) -> None:
    mtn.callback_copies, mtn.callback_methods = copies, methods
    with listener(settings_for(pg_url, mtn)) as server:
        payment = mtn_payment(db, mtn, callback_url=server.url + MTN_PATH)
        mtn.wait_for_deliveries(1)
        mtn.advance(mtn.callback_gap)

        deliveries = mtn.wait_for_deliveries(2)
    # The listener has stopped: its background confirmations have finished.

    assert [d.status for d in deliveries] == [200, 200]
    assert {d.method for d in deliveries} == set(methods)
    settled_once(db, payment)


# Callbacks that name nothing we know, or are not JSON: answered, nothing changes.


def test_a_callback_for_an_unknown_order_answers_200_and_changes_nothing(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    stranger = {**mtn.status_body(payment.id), "externalId": str(uuid.uuid4())}
    before = count_rows(db)

    answer = send(client, as_bytes(stranger))

    assert answer.status_code == 200, answer.text
    assert count_rows(db) == before
    assert mtn.calls("status") == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[]", id="an-array"),
        pytest.param(b'{"status": "SUCCESSFUL"}', id="no-external-id"),
        pytest.param(
            b'{"externalId": "order-1", "status": "SUCCESSFUL"}', id="external-id-not-uuid"
        ),
        pytest.param(b"", id="empty"),
    ],
)
def test_garbage_is_refused_with_400_and_changes_nothing(
    sqlite_url: str, mtn: FakeMtn, body: bytes
) -> None:
    """Refused before the database is asked anything: shown on the embedded SQLite default."""
    db = Database(sqlite_url)
    mtn_payment(db, mtn)
    before = count_rows(db)

    with listener_client(settings_for(sqlite_url, mtn)) as client:
        answer = send(client, body)

    after = count_rows(db)
    db.dispose()
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_payload"
    assert after == before
    assert mtn.calls("status") == 0


def test_a_callback_that_comes_before_the_charge_records_mtns_receipt_settles_the_payment(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    # MTN took the request and called back at once; the charge that sent it still holds its
    # lease, its answer not yet recorded. MTN's status settles it; the charge then finds the
    # payment moved on and only keeps MTN's reference.
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with db.transaction() as conn:
        claimed = claim_payment(
            conn,
            order_id=order.id,
            key=a_key(),
            payer_phone=MTN_SANDBOX_PAYER,
            provider="mtn",
            lease=timedelta(seconds=90),
        ).payment
    with mtn.provider() as provider:
        sent = provider.request_payment(
            CollectionRequest(claimed.id, order.id, claimed.amount, claimed.payer_phone)
        )
    assert isinstance(sent, Accepted)

    answer = send(client, as_bytes(mtn.status_body(claimed.id)))

    assert answer.status_code == 200, answer.text
    settled_once(db, claimed)
