"""The seed's REST API behind a bearer token (DESIGN.md sections 5-8)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from orderpay.domain.states import PaymentStatus
from orderpay.payments.charge import claim_payment
from orderpay.shop.orders import cancel_order
from orderpay.store.db import Database
from orderpay.store.payments import Payment, get_payment
from tests.builders import a_customer, a_product, an_order
from tests.conftest import count_rows
from tests.live_server import (
    API_TOKEN,
    CALLBACK_PATH,
    TestClient,
    assert_error,
    callback_body,
    listener_client,
    listener_settings,
    signed,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DECLINING_PAYER = "+46733123457"  # MTN sandbox: NOT_ALLOWED when the request is made


def create_order(
    client: TestClient, document: Any, headers: dict[str, str] = AUTH
) -> httpx.Response:
    answer: httpx.Response = client.post(
        "/api/orders/", content=json.dumps(document), headers=headers
    )
    return answer


def charge(
    client: TestClient, order_id: uuid.UUID, key: str | None, **fields: Any
) -> httpx.Response:
    headers = dict(AUTH)
    if key is not None:
        headers["Idempotency-Key"] = key
    body = json.dumps({"order": str(order_id), **fields})
    answer: httpx.Response = client.post("/api/payments/charge/", content=body, headers=headers)
    return answer


def an_order_document(db: Database, quantity: int = 2) -> dict[str, Any]:
    customer, product = a_customer(db), a_product(db, price="12.50")
    return {"customer": customer.id, "items": [{"product": str(product.id), "quantity": quantity}]}


# The token


def _requests(db: Database) -> dict[str, tuple[str, str, dict[str, str], bytes]]:
    """One well-formed request per route of the API (method, path, extra headers, body)."""
    order = an_order(db)
    return {
        "create order": ("POST", "/api/orders/", {}, json.dumps(an_order_document(db)).encode()),
        "get order": ("GET", f"/api/orders/{order.id}/", {}, b""),
        "charge": (
            "POST",
            "/api/payments/charge/",
            {"Idempotency-Key": "k-1"},
            json.dumps({"order": str(order.id)}).encode(),
        ),
    }


ROUTES = ["create order", "get order", "charge"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
def test_without_a_configured_token_every_route_of_the_api_answers_404(
    route: str, token: str | None, sqlite_url: str, sqlite_db: Database
) -> None:
    method, path, headers, body = _requests(sqlite_db)[route]
    before = count_rows(sqlite_db)
    settings = listener_settings(sqlite_url, ORDERPAY_API_TOKEN=token)

    with listener_client(settings) as client:
        answer = client.request(
            method, path, content=body, headers={**headers, "Authorization": "Bearer "}
        )

    assert_error(answer, 404, "not_found")
    assert count_rows(sqlite_db) == before


@pytest.mark.parametrize("route", ROUTES)
def test_a_request_without_a_token_is_401_with_a_bearer_challenge(
    route: str, sqlite_url: str, sqlite_db: Database
) -> None:
    method, path, headers, body = _requests(sqlite_db)[route]
    before = count_rows(sqlite_db)

    with listener_client(listener_settings(sqlite_url)) as client:
        answer = client.request(method, path, content=body, headers=headers)

    assert_error(answer, 401, "invalid_token")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert count_rows(sqlite_db) == before


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong-token", f"Bearer {API_TOKEN}x", f"Basic {API_TOKEN}", API_TOKEN, "Bearer"],
    ids=["wrong token", "token with a suffix", "basic scheme", "no scheme", "scheme only"],
)
def test_a_request_with_a_wrong_token_is_401_with_a_bearer_challenge(
    authorization: str, sqlite_url: str, sqlite_db: Database
) -> None:
    document = an_order_document(sqlite_db)
    before = count_rows(sqlite_db)

    with listener_client(listener_settings(sqlite_url)) as client:
        answer = create_order(client, document, {"Authorization": authorization})

    assert_error(answer, 401, "invalid_token")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert count_rows(sqlite_db) == before


# POST /api/orders/ and GET /api/orders/{id}/


def test_creating_an_order_answers_201_with_the_order_and_its_computed_total(
    client: TestClient, db: Database
) -> None:
    document = an_order_document(db, quantity=3)

    answer = create_order(client, document)

    assert answer.status_code == 201
    order = answer.json()
    assert order["total_amount"] == "37.50"  # 3 x 12.50
    assert (order["status"], order["currency"]) == ("pending", "GHS")
    assert order["customer"] == document["customer"]
    assert order["items"] == [
        {
            "product": document["items"][0]["product"],
            "name": "Kenkey",
            "quantity": 3,
            "unit_price": "12.50",
            "line_total": "37.50",
        }
    ]


def test_an_order_body_claiming_a_total_or_a_status_is_400_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    document = an_order_document(db, quantity=3)
    before = count_rows(db)

    answer = create_order(client, {**document, "total_amount": "0.01", "status": "paid"})

    assert_error(answer, 400, "invalid_field")  # the total is computed, never taken from input
    assert answer.json()["error"]["fields"] == ["total_amount", "status"]
    assert count_rows(db) == before


def test_an_order_has_the_shape_of_the_design(client: TestClient, db: Database) -> None:
    answer = create_order(client, an_order_document(db))

    order = answer.json()
    assert {
        "id",
        "customer",
        "status",
        "currency",
        "total_amount",
        "items",
        "payments",
        "notifications",
        "events",
        "created_at",
        "updated_at",
    } <= set(order)
    uuid.UUID(order["id"])
    assert (order["payments"], order["notifications"]) == ([], [])
    assert [set(event) for event in order["events"]] == [{"at", "event", "detail", "operator"}]
    assert order["events"][0]["event"] == "order_created"


def test_a_created_order_is_read_back_with_get(client: TestClient, db: Database) -> None:
    created = create_order(client, an_order_document(db)).json()

    answer = client.get(f"/api/orders/{created['id']}/", headers=AUTH)

    assert answer.status_code == 200
    assert answer.json() == created


def test_an_order_read_with_get_lists_its_payments(client: TestClient, db: Database) -> None:
    order = an_order(db)
    payment = charge(client, order.id, "k-1").json()

    answer = client.get(f"/api/orders/{order.id}/", headers=AUTH)

    assert [p["id"] for p in answer.json()["payments"]] == [payment["id"]]


@pytest.mark.parametrize(
    "order_id", [str(uuid.uuid4()), "not-a-uuid", "1"], ids=["unknown", "malformed", "numeric"]
)
def test_getting_an_unknown_or_malformed_order_id_is_404(
    order_id: str, sqlite_client: TestClient
) -> None:
    answer = sqlite_client.get(f"/api/orders/{order_id}/", headers=AUTH)

    assert_error(answer, 404, "order_not_found")


BAD_ORDER_BODIES: dict[str, tuple[Any, str]] = {
    "not JSON": ("{oops", "invalid_payload"),
    "a JSON array": ([], "invalid_payload"),
    "no customer": ({"items": "ITEMS"}, "invalid_field"),
    "a customer as a string": ({"customer": "1", "items": "ITEMS"}, "invalid_field"),
    "a customer as a boolean": ({"customer": True, "items": "ITEMS"}, "invalid_field"),
    "a customer as a float": ({"customer": 1.0, "items": "ITEMS"}, "invalid_field"),
    "no items": ({"customer": "CUSTOMER"}, "invalid_field"),
    "items not a list": ({"customer": "CUSTOMER", "items": {"product": "x"}}, "invalid_field"),
    "no item": ({"customer": "CUSTOMER", "items": []}, "invalid_field"),
    "an item not an object": ({"customer": "CUSTOMER", "items": ["PRODUCT"]}, "invalid_field"),
    "an item without a product": (
        {"customer": "CUSTOMER", "items": [{"quantity": 1}]},
        "invalid_field",
    ),
    "a product id not a UUID": (
        {"customer": "CUSTOMER", "items": [{"product": "kenkey"}]},
        "invalid_field",
    ),
    "a quantity of zero": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT", "quantity": 0}]},
        "invalid_quantity",
    ),
    "a negative quantity": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT", "quantity": -2}]},
        "invalid_quantity",
    ),
    "a quantity as a string": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT", "quantity": "2"}]},
        "invalid_quantity",
    ),
    "a fractional quantity": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT", "quantity": 1.5}]},
        "invalid_quantity",
    ),
    "a huge quantity": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT", "quantity": 10**20}]},
        "invalid_quantity",
    ),
    "items in two currencies": (
        {"customer": "CUSTOMER", "items": [{"product": "PRODUCT"}, {"product": "KES_PRODUCT"}]},
        "currency_mismatch",
    ),
}


def _fill(template: Any, values: dict[str, Any]) -> Any:
    """Replace the placeholders CUSTOMER, PRODUCT, KES_PRODUCT and ITEMS in a body template."""
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return values.get(template, template) if isinstance(template, str) else template


@pytest.mark.parametrize(
    ("template", "code"), BAD_ORDER_BODIES.values(), ids=BAD_ORDER_BODIES.keys()
)
@pytest.mark.slow
def test_a_bad_order_body_is_400_and_stores_nothing(
    template: Any, code: str, sqlite_client: TestClient, sqlite_db: Database
) -> None:
    customer, product = a_customer(sqlite_db), a_product(sqlite_db)
    kes_product = a_product(sqlite_db, name="Ugali", price="100.00", currency="KES")
    values = {
        "CUSTOMER": customer.id,
        "PRODUCT": str(product.id),
        "KES_PRODUCT": str(kes_product.id),
        "ITEMS": [{"product": str(product.id)}],
    }
    body = template if isinstance(template, str) else json.dumps(_fill(template, values))
    before = count_rows(sqlite_db)

    answer = sqlite_client.post("/api/orders/", content=body, headers=AUTH)

    assert_error(answer, 400, code)
    assert count_rows(sqlite_db) == before


def test_an_order_for_an_unknown_customer_is_404_and_stores_nothing(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    product = a_product(sqlite_db)
    before = count_rows(sqlite_db)

    answer = create_order(
        sqlite_client, {"customer": 999_999, "items": [{"product": str(product.id)}]}
    )

    assert_error(answer, 404, "customer_not_found")
    assert count_rows(sqlite_db) == before


def test_an_order_for_an_unknown_product_is_404_and_stores_nothing(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    customer = a_customer(sqlite_db)
    before = count_rows(sqlite_db)

    answer = create_order(
        sqlite_client, {"customer": customer.id, "items": [{"product": str(uuid.uuid4())}]}
    )

    assert_error(answer, 404, "product_not_found")
    assert count_rows(sqlite_db) == before


# POST /api/payments/charge/


def test_charging_an_order_answers_201_with_the_pending_payment(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)

    answer = charge(client, order.id, "k-1")

    assert answer.status_code == 201
    payment = answer.json()
    assert payment["status"] == "pending"
    assert (payment["amount"], payment["currency"]) == ("25.00", "GHS")
    assert (payment["order"], payment["idempotency_key"]) == (str(order.id), "k-1")
    assert payment["replayed"] is False
    assert "Idempotent-Replayed" not in answer.headers


def test_a_charge_without_an_idempotency_key_is_400_and_stores_nothing(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    order = an_order(sqlite_db)
    before = count_rows(sqlite_db)

    answer = charge(sqlite_client, order.id, None)

    assert_error(answer, 400, "idempotency_key_missing")
    assert count_rows(sqlite_db) == before


@pytest.mark.parametrize(
    "key", ["two words", "k\u00e9y", "x" * 256], ids=["space", "non-ascii", "too long"]
)
def test_a_malformed_idempotency_key_is_400_and_stores_nothing(
    key: str, sqlite_client: TestClient, sqlite_db: Database
) -> None:
    order = an_order(sqlite_db)
    before = count_rows(sqlite_db)

    answer = sqlite_client.post(
        "/api/payments/charge/",
        content=json.dumps({"order": str(order.id)}),
        headers=[*AUTH.items(), ("Idempotency-Key", key.encode())],
    )

    assert_error(answer, 400, "invalid_idempotency_key")
    assert count_rows(sqlite_db) == before


def test_the_quoted_sf_string_form_of_a_key_names_the_same_key(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    first = charge(client, order.id, '"k-1"')

    again = charge(client, order.id, "k-1")

    assert first.status_code == 201
    assert first.json()["idempotency_key"] == "k-1"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_replaying_a_key_answers_the_first_status_with_the_payment_and_the_replayed_header(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    first = charge(client, order.id, "k-1")

    again = charge(client, order.id, "k-1")

    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == {**first.json(), "replayed": True}


def test_a_replay_makes_no_second_payment(client: TestClient, db: Database) -> None:
    order = an_order(db)
    charge(client, order.id, "k-1")
    before = count_rows(db)

    charge(client, order.id, "k-1")

    assert count_rows(db) == before


@pytest.mark.parametrize(
    "other",
    [{"phone": "0201234567"}, {"order": "ANOTHER_ORDER"}],
    ids=["another payer", "another order"],
)
def test_reusing_a_key_for_another_request_is_422_and_changes_nothing(
    other: dict[str, str], client: TestClient, db: Database
) -> None:
    order, another = an_order(db), an_order(db)
    charge(client, order.id, "k-1")
    before = count_rows(db)
    fields = {k: (str(another.id) if v == "ANOTHER_ORDER" else v) for k, v in other.items()}

    answer = client.post(
        "/api/payments/charge/",
        content=json.dumps({"order": str(order.id), **fields}),
        headers={**AUTH, "Idempotency-Key": "k-1"},
    )

    assert_error(answer, 422, "idempotency_key_reused")
    assert count_rows(db) == before


def test_a_key_whose_charge_is_in_flight_is_409_and_changes_nothing(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    with db.transaction() as conn:  # step 1 done, the provider not yet answered: a live lease
        claim_payment(
            conn,
            order_id=order.id,
            key="k-1",
            payer_phone=None,
            provider="simulator",
            lease=timedelta(seconds=90),
        )
    before = count_rows(db)

    answer = charge(client, order.id, "k-1")

    assert_error(answer, 409, "idempotency_key_in_use")
    assert count_rows(db) == before


def test_a_second_key_while_a_payment_is_live_is_409_payment_in_progress(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    charge(client, order.id, "k-1")
    before = count_rows(db)

    answer = charge(client, order.id, "k-2")

    assert_error(answer, 409, "payment_in_progress")
    assert count_rows(db) == before


def test_charging_a_paid_order_is_409_order_already_paid(client: TestClient, db: Database) -> None:
    order = an_order(db)
    payment = charge(client, order.id, "k-1").json()
    body = callback_body(_as_payment(db, payment["id"]), "success")
    assert client.post(CALLBACK_PATH, content=body, headers=signed(body)).status_code == 200
    before = count_rows(db)

    answer = charge(client, order.id, "k-2")

    assert_error(answer, 409, "order_already_paid")
    assert count_rows(db) == before


def test_charging_a_cancelled_order_is_409_order_cancelled(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    with db.transaction() as conn:
        cancel_order(conn, order.id)
    before = count_rows(db)

    answer = charge(client, order.id, "k-1")

    assert_error(answer, 409, "order_cancelled")
    assert count_rows(db) == before


def test_a_declined_payer_is_402_payment_declined(client: TestClient, db: Database) -> None:
    order = an_order(db)

    answer = charge(client, order.id, "k-1", phone=DECLINING_PAYER)

    assert_error(answer, 402, "payment_declined")
    assert "Idempotent-Replayed" not in answer.headers
    with db.transaction() as conn:
        payment = get_payment(conn, uuid.UUID(answer.json()["error"]["payment"]))
    assert (payment.status, payment.failure_reason) == (PaymentStatus.FAILED, "NOT_ALLOWED")


def test_a_declined_charge_replays_as_402_with_the_replayed_header(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    first = charge(client, order.id, "k-1", phone=DECLINING_PAYER)

    again = charge(client, order.id, "k-1", phone=DECLINING_PAYER)

    assert_error(again, 402, "payment_declined")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["error"]["payment"] == first.json()["error"]["payment"]


def test_charging_an_unknown_order_is_404_and_stores_nothing(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    before = count_rows(sqlite_db)

    answer = charge(sqlite_client, uuid.uuid4(), "k-1")

    assert_error(answer, 404, "order_not_found")
    assert count_rows(sqlite_db) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{oops", "invalid_payload"),
        ('["ORDER"]', "invalid_payload"),
        ("{}", "invalid_field"),
        ('{"order": "not-a-uuid"}', "invalid_field"),
        ('{"order": "ORDER", "phone": 233241234567}', "invalid_field"),
        ('{"order": "ORDER", "phone": "12"}', "invalid_phone"),
        ('{"order": "ORDER", "phone": "+233 24 123 4567 ext 9999999999999999"}', "invalid_phone"),
    ],
    ids=[
        "not JSON",
        "a JSON array",
        "no order",
        "an order id not a UUID",
        "a numeric phone",
        "a short phone",
        "an overlong phone",
    ],
)
@pytest.mark.slow
def test_a_bad_charge_body_is_400_and_stores_nothing(
    body: str, code: str, sqlite_client: TestClient, sqlite_db: Database
) -> None:
    order = an_order(sqlite_db)
    before = count_rows(sqlite_db)

    answer = sqlite_client.post(
        "/api/payments/charge/",
        content=body.replace("ORDER", str(order.id)),
        headers={**AUTH, "Idempotency-Key": "k-1"},
    )

    assert_error(answer, 400, code)
    assert count_rows(sqlite_db) == before


def _as_payment(db: Database, payment_id: str) -> Payment:
    with db.transaction() as conn:
        return get_payment(conn, uuid.UUID(payment_id))
