"""POST/PUT /api/webhooks/mtn/ is narrow: anyone can post to it, so it costs and stores little.

The route exists only when MTN is the provider. What it stores is bounded: nothing for a
payment that is not an open MTN payment, at most one hint per (payment, status) however many
distinct bodies arrive, and only the callback's parsed fields, never the raw body. MTN's status
call confirms a hint at most once at a time per payment, on the confirmer's own threads, so a
flood of hints never holds up the signed callbacks of other payments (DESIGN.md section 5).
MTN is the local fake (tests/fake_mtn.py); the listener is in-process unless timing matters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.http.confirmer import CONFIRM_THREADS
from orderpay.payments.charge import charge_order
from orderpay.server import create_app
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from orderpay.store.schema import webhook_events
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import count_rows
from tests.fake_mtn import ONGOING, FakeMtn
from tests.ledger_views import current, order_status
from tests.live_server import (
    CALLBACK_PATH,
    TestClient,
    a_pending_payment,
    callback_body,
    listener_client,
    listener_settings,
    live_server,
    signed,
)

MTN_PATH = "/api/webhooks/mtn/"
JSON = {"Content-Type": "application/json"}
JUNK = "j" * 2048  # an extra field MTN never sends: must not end up in the database
# Longer than any test needs, well inside the MTN client's 20 s read timeout: a status call
# hangs until the test releases it.
HANG_SECONDS = 15.0


@pytest.fixture
def client(pg_url: str, mtn: FakeMtn) -> Iterator[TestClient]:
    """The listener in-process, with MTN (the fake) as the provider."""
    with listener_client(listener_settings(pg_url, **mtn.env())) as test_client:
        yield test_client


def mtn_payment(db: Database, mtn: FakeMtn, payer: str = MTN_SANDBOX_PAYER) -> Payment:
    """A 25.00 EUR order charged through MTN (the fake), with no callback URL: pending."""
    order = an_order(db, phone=payer, currency="EUR")
    with mtn.provider() as provider:
        return charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment


def mtn_events(db: Database) -> list[Any]:
    """The webhook_events rows the MTN route stored."""
    with db.transaction() as conn:
        return list(
            conn.execute(
                select(webhook_events).where(webhook_events.c.source == "mtn").order_by("id")
            )
        )


def variant(document: dict[str, Any], number: int) -> bytes:
    """A distinct body carrying `document`: an extra field, other whitespace, other order."""
    fields = {**document, f"note{number}": number}
    if number % 2:
        fields = dict(reversed(list(fields.items())))
    indent = (None, 0, 2, 4)[number % 4]
    text = json.dumps(fields, indent=indent)
    return (" " * (number % 3) + text + "\n" * (number % 2)).encode()


def hint(payment: Payment, mtn: FakeMtn, status: str = "SUCCESSFUL") -> dict[str, Any]:
    """MTN's callback about `payment`, claiming `status`, with a 2 KB field of junk."""
    document = {**mtn.status_body(payment.id), "status": status, "junk": JUNK}
    if status == "SUCCESSFUL":
        document["financialTransactionId"] = "987654321"
    else:
        document["reason"] = "APPROVAL_REJECTED"
    return document


def post(client: TestClient, body: bytes, method: str = "POST") -> httpx.Response:
    answer: httpx.Response = client.request(method, MTN_PATH, content=body, headers=JSON)
    return answer


def confirmations_done(client: TestClient) -> None:
    client.app.state.confirmer.wait()  # type: ignore[attr-defined]


# Only when MTN is the provider.


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    "with_mtn_settings", [False, True], ids=["simulator", "simulator-with-mtn-settings"]
)
def test_with_the_simulator_as_provider_the_mtn_route_answers_404_and_stores_nothing(
    pg_url: str, db: Database, mtn: FakeMtn, method: str, with_mtn_settings: bool
) -> None:
    payment = a_pending_payment(db)
    body = json.dumps(
        {
            "externalId": str(payment.order_id),
            "status": "SUCCESSFUL",
            "financialTransactionId": "123456789",
            "amount": payment.amount.as_string(),
            "currency": payment.amount.currency,
        }
    ).encode()
    env = {**mtn.env(), "ORDERPAY_PROVIDER": "simulator"} if with_mtn_settings else {}
    before = count_rows(db)

    with listener_client(listener_settings(pg_url, **env)) as client:
        answer = post(client, body, method)
        confirmations_done(client)

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert mtn.requests == []


# Hints about a payment that is not open: answered, stored nowhere, MTN not asked.


@pytest.mark.slow
def test_many_callbacks_for_a_settled_payment_are_answered_and_store_nothing(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    post(client, json.dumps(mtn.status_body(payment.id)).encode())
    confirmations_done(client)
    settled = current(db, payment)
    assert settled.status is PaymentStatus.SUCCEEDED
    before, asked = count_rows(db), mtn.calls("status")

    answers = [
        post(
            client,
            variant(hint(payment, mtn, ("SUCCESSFUL", "FAILED")[number % 2]), number),
            ("POST", "PUT")[number % 2],
        ).status_code
        for number in range(200)
    ]
    confirmations_done(client)

    assert answers == [200] * 200
    assert count_rows(db) == before  # webhook_events included
    assert current(db, payment) == settled
    assert mtn.calls("status") == asked  # MTN was asked nothing more


# Hints about an open MTN payment: one per (payment, status), only the parsed fields.


def test_many_distinct_callbacks_for_a_pending_payment_store_one_hint(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)  # MTN keeps it PENDING
    document = hint(payment, mtn)

    answers = [post(client, variant(document, number)).status_code for number in range(30)]
    confirmations_done(client)

    assert answers == [200] * 30
    (stored,) = mtn_events(db)
    assert (stored.payment_id, stored.order_id) == (payment.id, payment.order_id)
    assert json.loads(stored.payload)["status"] == "SUCCESSFUL"
    assert current(db, payment).status is PaymentStatus.PENDING  # MTN said PENDING
    assert mtn.calls("status") == 1  # asked once, not once per body


def test_a_stored_hint_holds_the_callbacks_parsed_fields_not_its_raw_body(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)
    document = hint(payment, mtn)
    body = variant(document, 3)

    answer = post(client, body)
    confirmations_done(client)

    assert answer.status_code == 200, answer.text
    (stored,) = mtn_events(db)
    fields = json.loads(stored.payload)
    assert fields["externalId"] == str(payment.order_id)
    assert fields["status"] == "SUCCESSFUL"
    assert fields["financialTransactionId"] == "987654321"
    assert fields.items() <= {k: v for k, v in document.items() if isinstance(v, str)}.items()
    assert "junk" not in fields
    assert "note3" not in fields
    assert JUNK not in stored.payload
    assert stored.payload != body.decode()
    assert len(stored.payload) < 1024


def test_callbacks_claiming_both_outcomes_store_one_hint_per_status(
    client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)
    claims = [hint(payment, mtn, "SUCCESSFUL"), hint(payment, mtn, "FAILED")]

    answers = [post(client, variant(claims[n % 2], n)).status_code for n in range(30)]
    confirmations_done(client)

    assert answers == [200] * 30
    stored = mtn_events(db)
    assert sorted(json.loads(row.payload)["status"] for row in stored) == ["FAILED", "SUCCESSFUL"]
    assert {row.payment_id for row in stored} == {payment.id}
    assert current(db, payment).status is PaymentStatus.PENDING


# Confirmation: at most once at a time per payment, never on the request threads.


@pytest.mark.slow
def test_hints_are_confirmed_one_at_a_time_per_payment_without_holding_up_signed_callbacks(
    pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    hinted = [mtn_payment(db, mtn) for _ in range(2 * CONFIRM_THREADS)]  # MTN: SUCCESSFUL
    simulated = a_pending_payment(db)  # a simulator payment on the same database
    hints = [
        variant(hint(payment, mtn), number) for payment in hinted for number in range(15)
    ]  # 60 distinct bodies, more than the listener has request threads
    momo = callback_body(simulated)
    mtn.hang("status", HANG_SECONDS, times=None)  # MTN's status call stops answering
    app = create_app(listener_settings(pg_url, **mtn.env()))

    with (
        live_server(app) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
        ThreadPoolExecutor(max_workers=len(hints)) as senders,
    ):
        posted = [senders.submit(http.post, MTN_PATH, content=b, headers=JSON) for b in hints]
        hanging = mtn.wait_for_in_flight("status", CONFIRM_THREADS)

        answer = http.post(CALLBACK_PATH, content=momo, headers=signed(momo))
        still_hanging = mtn.in_flight("status")

        mtn.release("status")
        hint_answers = [future.result().status_code for future in posted]
        app.state.confirmer.wait()

    assert hanging >= 1, "no status call reached MTN"
    assert still_hanging >= 1  # the signed callback was answered while MTN hung
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"
    assert current(db, simulated).status is PaymentStatus.SUCCEEDED
    assert hint_answers == [200] * len(hints)
    assert mtn.peak_in_flight_per_reference("status") == 1
    assert mtn.peak_in_flight("status") <= CONFIRM_THREADS
    assert mtn.calls("status") == len(hinted)  # one status call per payment, not per body
    for payment in hinted:
        assert current(db, payment).status is PaymentStatus.SUCCEEDED
        assert order_status(db, payment) is OrderStatus.PAID
