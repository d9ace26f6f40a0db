"""Every route of the listener answers the same with or without its trailing slash (DESIGN.md
section 6). Without it, Starlette used to answer an empty 307 redirect, which a provider's or
merchant's POST does not follow: the callback was lost and nothing was said why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from orderpay.config import load_settings
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order
from orderpay.store.db import Database
from tests.builders import AMA, MTN_SANDBOX_PAYER, a_customer, a_key, a_product, an_order
from tests.conftest import count_rows
from tests.fake_mtn import FakeMtn
from tests.ledger_views import seen
from tests.live_server import (
    API_TOKEN,
    SECRET,
    TestClient,
    a_pending_payment,
    callback_body,
    listener_client,
    listener_settings,
    signed,
)
from tests.test_health_and_metrics import metric

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DLR_TOKEN = "dlr-token-7c1e0b5a9d"


def toggled(path: str) -> str:
    """`path` with its trailing slash added or removed (a query string kept)."""
    route, _, query = path.partition("?")
    other = route.removesuffix("/") if route.endswith("/") else route + "/"
    return other + (f"?{query}" if query else "")


@pytest.fixture
def client(pg_url: str) -> Iterator[TestClient]:
    settings = listener_settings(pg_url, ORDERPAY_SMS_DLR_TOKEN=DLR_TOKEN)
    with listener_client(settings) as running:
        yield running


def unfollowed(client: TestClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The answer itself, as a sender that does not follow redirects sees it."""
    answer: httpx.Response = client.request(method, path, follow_redirects=False, **kwargs)
    return answer


# Reads answer the same either way.


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_and_metrics_answer_200_with_a_trailing_slash_too(
    client: TestClient, path: str
) -> None:
    canonical = unfollowed(client, "GET", path)

    slashed = unfollowed(client, "GET", toggled(path))

    assert (slashed.status_code, canonical.status_code) == (200, 200)
    assert slashed.headers["content-type"] == canonical.headers["content-type"]
    if path != "/metrics":  # the metrics count the first request
        assert slashed.json() == canonical.json()


def test_an_order_is_read_the_same_without_the_trailing_slash(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)

    with_slash = unfollowed(client, "GET", f"/api/orders/{order.id}/", headers=AUTH)
    without = unfollowed(client, "GET", f"/api/orders/{order.id}", headers=AUTH)

    assert (without.status_code, with_slash.status_code) == (200, 200)
    assert without.json() == with_slash.json()


def test_without_the_trailing_slash_reading_an_order_still_needs_the_token(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)

    answer = unfollowed(client, "GET", f"/api/orders/{order.id}")

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_token"


# Writes are applied, not redirected.


def test_an_order_is_created_by_post_without_the_trailing_slash(
    client: TestClient, db: Database
) -> None:
    customer, product = a_customer(db), a_product(db, price="12.50")
    body = {"customer": customer.id, "items": [{"product": str(product.id), "quantity": 2}]}

    answer = unfollowed(client, "POST", "/api/orders", content=json.dumps(body), headers=AUTH)

    assert answer.status_code == 201, answer.text
    assert answer.json()["total_amount"] == "25.00"
    assert count_rows(db)["orders"] == 1


def test_an_order_is_charged_by_post_without_the_trailing_slash(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)

    answer = unfollowed(
        client,
        "POST",
        "/api/payments/charge",
        content=json.dumps({"order": str(order.id)}),
        headers={**AUTH, "Idempotency-Key": a_key()},
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "pending"
    assert count_rows(db)["payments"] == 1


def test_a_signed_callback_without_the_trailing_slash_settles_the_payment(
    client: TestClient, db: Database
) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment)

    answer = unfollowed(client, "POST", "/api/webhooks/momo", content=body, headers=signed(body))

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"
    after = seen(db, payment)
    assert (after.payment, after.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)


def test_a_badly_signed_callback_without_the_trailing_slash_is_401_and_changes_nothing(
    client: TestClient, db: Database
) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment)
    before = count_rows(db)

    answer = unfollowed(
        client, "POST", "/api/webhooks/momo", content=body, headers=signed(body, "wrong" * 8)
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert count_rows(db) == before


@pytest.mark.slow
def test_a_delivery_report_without_the_trailing_slash_gets_the_same_answer(
    client: TestClient, db: Database
) -> None:
    report = urlencode({"id": "ATXid_unknown", "status": "Success", "phoneNumber": AMA})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    path = f"/api/webhooks/sms-dlr/?token={DLR_TOKEN}"
    with_slash = unfollowed(client, "POST", path, content=report, headers=form)
    before = count_rows(db)

    without = unfollowed(client, "POST", toggled(path), content=report, headers=form)

    assert with_slash.status_code == 404, with_slash.text  # no notification sent as that id
    assert with_slash.json()["error"]["code"] == "notification_not_found"
    assert (without.status_code, without.json()) == (404, with_slash.json())
    assert count_rows(db) == before


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.slow
def test_mtns_callback_without_the_trailing_slash_is_confirmed_and_settles(
    pg_url: str, db: Database, mtn: FakeMtn, method: str
) -> None:
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with mtn.provider() as provider:
        payment = charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment
    settings = load_settings(DATABASE_URL=pg_url, MOMO_WEBHOOK_SECRET=SECRET, **mtn.env())

    body = json.dumps(mtn.status_body(payment.id))

    with listener_client(settings) as mtn_client:
        answer = unfollowed(
            mtn_client,
            method,
            "/api/webhooks/mtn",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        mtn_client.app.state.confirmer.wait()  # type: ignore[attr-defined]

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "received"}
    assert seen(db, payment).payment is PaymentStatus.SUCCEEDED


# Metrics keep one series per route, whichever form was called.


def test_both_forms_of_a_route_are_observed_under_one_route_label(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    series = {"route": "/api/orders/{order_id}/", "method": "GET"}
    before = metric(client, "orderpay_http_request_duration_seconds_count", **series)

    client.get(f"/api/orders/{order.id}/", headers=AUTH)
    client.get(f"/api/orders/{order.id}", headers=AUTH)

    after = metric(client, "orderpay_http_request_duration_seconds_count", **series)
    assert after == before + 2
    assert 'route="/api/orders/{order_id}"' not in client.get("/metrics").text
