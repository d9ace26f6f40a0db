"""`POST /api/orders/` with an Idempotency-Key (DESIGN.md sections 5 and 7), on Postgres and
SQLite: a client that retries after losing the answer gets the order it made, not a second one.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from orderpay.shop.orders import place_order
from orderpay.shop.products import update_product
from orderpay.store.db import Database
from orderpay.store.schema import orders
from tests.builders import a_customer, a_product
from tests.conftest import count_rows
from tests.live_server import (
    API_TOKEN,
    TestClient,
    assert_error,
    listener,
    listener_client,
    listener_settings,
    post_in_parallel,
)
from tests.redis_helpers import wait_until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PARALLEL = 8


@pytest.fixture
def any_client(any_url: str) -> Iterator[TestClient]:
    """The listener in-process, on the database `any_db` opens."""
    with listener_client(listener_settings(any_url)) as in_process:
        yield in_process


def a_document(db: Database, quantity: int = 2) -> dict[str, Any]:
    customer, product = a_customer(db), a_product(db, price="12.50")
    return {"customer": customer.id, "items": [{"product": str(product.id), "quantity": quantity}]}


def post_order(client: TestClient, document: Any, key: str | bytes | None = None) -> httpx.Response:
    headers: list[tuple[str, str | bytes]] = list(AUTH.items())
    if key is not None:
        headers.append(("Idempotency-Key", key))
    answer: httpx.Response = client.post(
        "/api/orders/", content=json.dumps(document), headers=headers
    )
    return answer


def order_count(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(orders)).scalar_one())


# Replays


def test_replaying_a_key_returns_the_stored_order_with_the_first_status_and_body(
    any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)
    first = post_order(any_client, document, "order-1")

    again = post_order(any_client, document, "order-1")

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json() == first.json()


def test_a_replay_carries_the_replayed_header_and_the_first_answer_does_not(
    any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)
    first = post_order(any_client, document, "order-1")

    again = post_order(any_client, document, "order-1")

    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"


def test_replaying_a_key_creates_nothing(any_client: TestClient, any_db: Database) -> None:
    document = a_document(any_db)
    assert post_order(any_client, document, "order-1").status_code == 201
    before = count_rows(any_db)

    post_order(any_client, document, "order-1")

    assert count_rows(any_db) == before
    assert order_count(any_db) == 1


def test_a_replay_that_lists_the_same_items_in_another_order_is_the_same_request(
    any_client: TestClient, any_db: Database
) -> None:
    customer = a_customer(any_db)
    kenkey, sobolo = a_product(any_db, name="Kenkey"), a_product(any_db, name="Sobolo")
    items = [{"product": str(kenkey.id), "quantity": 2}, {"product": str(sobolo.id)}]
    first = post_order(any_client, {"customer": customer.id, "items": items}, "order-1")

    again = post_order(any_client, {"customer": customer.id, "items": items[::-1]}, "order-1")

    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert order_count(any_db) == 1


def test_a_replay_answers_with_the_order_even_once_its_product_is_no_longer_sold(
    client: TestClient, db: Database
) -> None:
    document = a_document(db)
    first = post_order(client, document, "order-1")
    with db.transaction() as conn:
        update_product(conn, uuid.UUID(document["items"][0]["product"]), active=False)

    again = post_order(client, document, "order-1")

    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]


def test_the_quoted_sf_string_form_of_a_key_names_the_same_key(
    client: TestClient, db: Database
) -> None:
    document = a_document(db)
    first = post_order(client, document, '"order-1"')

    again = post_order(client, document, "order-1")

    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_an_order_key_and_a_charge_key_of_the_same_value_do_not_collide(
    client: TestClient, db: Database
) -> None:
    order = post_order(client, a_document(db), "checkout-1").json()

    charged = client.post(
        "/api/payments/charge/",
        content=json.dumps({"order": order["id"]}),
        headers={**AUTH, "Idempotency-Key": "checkout-1"},
    )

    assert charged.status_code == 201, charged.text
    assert "Idempotent-Replayed" not in charged.headers


def test_without_a_key_the_same_body_twice_makes_two_orders(
    any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)

    first, second = post_order(any_client, document), post_order(any_client, document)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert "Idempotent-Replayed" not in second.headers
    assert order_count(any_db) == 2


# A key reused for another request, and malformed keys


def _other_customer(db: Database, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "customer": a_customer(db, name="Kofi Boateng").id}


def _other_quantity(db: Database, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "items": [{**document["items"][0], "quantity": 3}]}


def _other_product(db: Database, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "items": [{"product": str(a_product(db, name="Sobolo").id)}]}


def _one_more_item(db: Database, document: dict[str, Any]) -> dict[str, Any]:
    extra = {"product": str(a_product(db, name="Sobolo").id)}
    return {**document, "items": [*document["items"], extra]}


OTHER_REQUESTS = {
    "another customer": _other_customer,
    "another quantity": _other_quantity,
    "another product": _other_product,
    "one more item": _one_more_item,
}


@pytest.mark.parametrize("change", OTHER_REQUESTS.values(), ids=OTHER_REQUESTS.keys())
def test_reusing_a_key_for_another_order_is_422_and_changes_nothing(
    change: Any, any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)
    first = post_order(any_client, document, "order-1").json()
    other = change(any_db, document)
    before = count_rows(any_db)

    answer = post_order(any_client, other, "order-1")

    assert_error(answer, 422, "idempotency_key_reused")
    assert answer.json()["error"]["order"] == first["id"]
    assert count_rows(any_db) == before


MALFORMED_KEYS = {
    "empty": (b"", "idempotency_key_missing"),
    "a space": (b"two words", "invalid_idempotency_key"),
    "non-ASCII": ("k\u00e9y".encode(), "invalid_idempotency_key"),
    "too long": (b"x" * 256, "invalid_idempotency_key"),
    "quotes around nothing": (b'""', "idempotency_key_missing"),
}


@pytest.mark.parametrize(("key", "code"), MALFORMED_KEYS.values(), ids=MALFORMED_KEYS.keys())
def test_a_malformed_key_is_400_and_stores_nothing(
    key: bytes, code: str, any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)
    before = count_rows(any_db)

    answer = post_order(any_client, document, key)

    assert_error(answer, 400, code)
    assert count_rows(any_db) == before


def test_a_key_of_255_visible_characters_is_accepted(
    any_client: TestClient, any_db: Database
) -> None:
    document = a_document(any_db)
    key = "x" * 254 + "~"

    first, again = post_order(any_client, document, key), post_order(any_client, document, key)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]


# Concurrent requests with one key


@pytest.mark.slow
def test_concurrent_requests_with_one_key_make_one_order(any_url: str, any_db: Database) -> None:
    body = json.dumps(a_document(any_db)).encode()
    with listener(listener_settings(any_url)) as server:
        answers = post_in_parallel(
            server.url + "/api/orders/",
            [(body, lambda: {**AUTH, "Idempotency-Key": "order-1"})] * PARALLEL,
        )

    assert [answer.status_code for answer in answers] == [201] * PARALLEL, answers[0].text
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert Counter(answer.headers.get("Idempotent-Replayed") for answer in answers) == {
        None: 1,
        "true": PARALLEL - 1,
    }
    assert order_count(any_db) == 1


def sessions_waiting_on_a_lock(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_request_whose_key_is_taken_while_it_runs_replays_the_order_that_took_it(
    client: TestClient, db: Database
) -> None:
    """The race made to happen on Postgres: the request finds no order of its key, then its
    insert waits on a concurrent one that holds the key, and commits it."""
    document = a_document(db)
    items = [(uuid.UUID(item["product"]), item["quantity"]) for item in document["items"]]
    answers: list[httpx.Response | BaseException] = []

    def send() -> None:
        try:
            answers.append(post_order(client, document, "order-1"))
        except BaseException as error:  # reported by the main thread
            answers.append(error)

    with db.transaction() as concurrent:
        taken = place_order(
            concurrent, customer_id=document["customer"], items=items, key="order-1"
        )
        request = threading.Thread(target=send)
        request.start()
        wait_until(lambda: sessions_waiting_on_a_lock(db) == 1, what="the request to wait")
    request.join(30)

    assert len(answers) == 1
    answer = answers[0]
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == str(taken.order.id)
    assert answer.headers["Idempotent-Replayed"] == "true"
    assert order_count(db) == 1
