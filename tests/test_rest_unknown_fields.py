"""The REST API refuses fields it does not know instead of ignoring them.

`{"order": ..., "payer_phone": "+233..."}` used to charge the customer's default phone (the
field is `phone`), and `{"product": ..., "qty": 3}` ordered one: a misspelt field silently
fell back to a default. Now any unknown field is 400 `invalid_field`, naming it, and nothing is
stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from orderpay.store.db import Database
from tests.builders import a_customer, a_key, a_product, an_order
from tests.conftest import count_rows
from tests.live_server import (
    API_TOKEN,
    TestClient,
    assert_error,
    listener_client,
    listener_settings,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
OTHER_PAYER = "+233201234567"


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    with listener_client(listener_settings(sqlite_url)) as running:
        yield running


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def post(client: TestClient, path: str, document: Any, **headers: str) -> Any:
    return client.post(path, content=json.dumps(document), headers={**AUTH, **headers})


def charge(client: TestClient, document: Any) -> Any:
    return post(client, "/api/payments/charge/", document, **{"Idempotency-Key": a_key()})


# POST /api/payments/charge/ {"order", "phone"}


def test_a_charge_naming_the_payer_in_an_unknown_field_is_400_and_charges_nobody(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    before = count_rows(db)

    answer = charge(client, {"order": str(order.id), "payer_phone": OTHER_PAYER})

    assert_error(answer, 400, "invalid_field")
    error = answer.json()["error"]
    assert "payer_phone" in error["message"]
    assert error["fields"] == ["payer_phone"]
    assert count_rows(db) == before


def test_a_charge_with_several_unknown_fields_names_each_of_them(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    before = count_rows(db)

    answer = charge(client, {"order": str(order.id), "amount": "1.00", "msisdn": OTHER_PAYER})

    assert_error(answer, 400, "invalid_field")
    assert answer.json()["error"]["fields"] == ["amount", "msisdn"]
    assert "order, phone" in answer.json()["error"]["message"]  # what it does accept
    assert count_rows(db) == before


def test_a_charge_with_the_phone_field_charges_that_phone(client: TestClient, db: Database) -> None:
    order = an_order(db)

    answer = charge(client, {"order": str(order.id), "phone": OTHER_PAYER})

    assert answer.status_code == 201, answer.text
    assert answer.json()["payer_phone"] == OTHER_PAYER


# POST /api/orders/ {"customer", "items": [{"product", "quantity"}]}


def an_order_body(db: Database, **item: Any) -> dict[str, Any]:
    customer, product = a_customer(db), a_product(db, price="12.50")
    return {"customer": customer.id, "items": [{"product": str(product.id), **item}]}


def test_an_order_with_an_unknown_field_is_400_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    body = {**an_order_body(db), "customer_phone": OTHER_PAYER}
    before = count_rows(db)

    answer = post(client, "/api/orders/", body)

    assert_error(answer, 400, "invalid_field")
    assert answer.json()["error"]["fields"] == ["customer_phone"]
    assert "customer_phone" in answer.json()["error"]["message"]
    assert count_rows(db) == before


def test_an_item_with_a_misspelt_quantity_is_400_and_orders_nothing(
    client: TestClient, db: Database
) -> None:
    body = an_order_body(db, qty=3)
    before = count_rows(db)

    answer = post(client, "/api/orders/", body)

    assert_error(answer, 400, "invalid_field")
    error = answer.json()["error"]
    assert error["fields"] == ["qty"]
    assert "items[0]" in error["message"]
    assert "product, quantity" in error["message"]
    assert count_rows(db) == before


def test_an_order_with_only_known_fields_is_created(client: TestClient, db: Database) -> None:
    answer = post(client, "/api/orders/", an_order_body(db, quantity=3))

    assert answer.status_code == 201, answer.text
    assert answer.json()["total_amount"] == "37.50"


def test_a_body_with_many_long_unknown_fields_is_answered_with_a_short_error(
    client: TestClient, db: Database
) -> None:
    order = an_order(db)
    junk = {f"{'x' * 200}{n}": n for n in range(200)}  # about 40 KiB
    before = count_rows(db)

    answer = charge(client, {"order": str(order.id), **junk})

    assert_error(answer, 400, "invalid_field")
    assert len(answer.content) < 2000
    assert "and 190 more" in answer.json()["error"]["message"]
    assert count_rows(db) == before
