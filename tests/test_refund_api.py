"""`POST /api/payments/{id}/refunds/` with `Idempotency-Key`: the charge route's rules."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from orderpay.domain.states import OrderStatus, RefundStatus
from orderpay.store.db import Database
from orderpay.store.orders import get_order
from tests.conftest import count_rows
from tests.live_server import API_TOKEN, TestClient, assert_error
from tests.refund_helpers import REFUSING_PAYER, a_paid_payment, refunds_of

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
REASON = "customer returned the goods"


def post_refund(
    client: TestClient,
    payment_id: uuid.UUID | str,
    key: str | None,
    body: Any = None,
    headers: dict[str, str] = AUTH,
    path: str = "/api/payments/{}/refunds/",
) -> httpx.Response:
    sent = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    document = {"reason": REASON} if body is None else body
    answer: httpx.Response = client.post(
        path.format(payment_id), content=json.dumps(document), headers=sent
    )
    return answer


def test_a_refund_answers_201_with_the_refund(client: TestClient, db: Database) -> None:
    payment = a_paid_payment(db)

    answer = post_refund(client, payment.id, "refund-1", {"amount": "10.00", "reason": REASON})

    assert answer.status_code == 201, answer.text
    document = answer.json()
    assert (document["status"], document["amount"], document["currency"]) == (
        "succeeded",
        "10.00",
        "GHS",
    )
    assert (document["payment"], document["reason"], document["replayed"]) == (
        str(payment.id),
        REASON,
        False,
    )
    assert document["operator"] == "api"
    assert "Idempotent-Replayed" not in answer.headers
    with db.transaction() as conn:
        assert get_order(conn, payment.order_id).status is OrderStatus.PARTIALLY_REFUNDED


def test_without_an_amount_the_route_refunds_what_remains(client: TestClient, db: Database) -> None:
    payment = a_paid_payment(db)

    answer = post_refund(client, payment.id, "refund-1")

    assert (answer.status_code, answer.json()["amount"]) == (201, "25.00")


def test_the_route_answers_without_its_trailing_slash(client: TestClient, db: Database) -> None:
    payment = a_paid_payment(db)

    answer = post_refund(client, payment.id, "refund-1", path="/api/payments/{}/refunds")

    assert answer.status_code == 201, answer.text


def test_a_replayed_key_answers_201_with_the_replay_header_and_the_same_refund(
    client: TestClient, db: Database
) -> None:
    payment = a_paid_payment(db)
    first = post_refund(client, payment.id, "refund-1", {"amount": "5.00", "reason": REASON})
    before = count_rows(db)

    again = post_refund(client, payment.id, "refund-1", {"amount": "5.00", "reason": REASON})

    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["replayed"] is True
    assert again.json()["id"] == first.json()["id"]
    assert count_rows(db) == before


def test_a_key_reused_for_another_amount_is_422_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    payment = a_paid_payment(db)
    post_refund(client, payment.id, "refund-1", {"amount": "5.00", "reason": REASON})
    before = count_rows(db)

    answer = post_refund(client, payment.id, "refund-1", {"amount": "6.00", "reason": REASON})

    assert_error(answer, 422, "idempotency_key_reused")
    assert count_rows(db) == before


def test_a_refund_above_what_remains_is_409_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    answer = post_refund(client, payment.id, "refund-1", {"amount": "25.01", "reason": REASON})

    assert_error(answer, 409, "refund_exceeds_payment")
    assert count_rows(db) == before


def test_a_refund_the_provider_declines_is_402(client: TestClient, db: Database) -> None:
    payment = a_paid_payment(db, phone=REFUSING_PAYER)

    answer = post_refund(client, payment.id, "refund-1")

    assert_error(answer, 402, "refund_declined")
    assert answer.json()["error"]["reason"] == "NOT_ENOUGH_FUNDS"
    assert [r.status for r in refunds_of(db, payment.id)] == [RefundStatus.FAILED]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"amount": "5.00", "reason": REASON, "amout": "5.00"}, "invalid_field"),
        ({"amount": "5.00", "reason": REASON, "note": "x"}, "invalid_field"),
        ({"amount": "5.00"}, "invalid_field"),
        ({"amount": 5, "reason": REASON}, "invalid_field"),
        ({"amount": "5.001", "reason": REASON}, "invalid_amount"),
        ({"amount": "0", "reason": REASON}, "invalid_amount"),
        ({"amount": "-5.00", "reason": REASON}, "invalid_amount"),
        ({"amount": "5.00", "currency": "UGX", "reason": REASON}, "currency_mismatch"),
        ([], "invalid_payload"),
        ({"amount": None, "reason": REASON}, "invalid_field"),
    ],
    ids=[
        "misspelt field",
        "unknown field",
        "no reason",
        "amount as a number",
        "too many decimals",
        "zero",
        "negative",
        "another currency",
        "not an object",
        "amount null",
    ],
)
@pytest.mark.slow
def test_a_bad_body_is_400_and_stores_nothing(
    client: TestClient, db: Database, body: Any, code: str
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    answer = post_refund(client, payment.id, "refund-1", body)

    assert_error(answer, 400, code)
    assert count_rows(db) == before


def test_an_unknown_field_is_named_in_the_answer(client: TestClient, db: Database) -> None:
    payment = a_paid_payment(db)

    answer = post_refund(client, payment.id, "refund-1", {"reason": REASON, "amout": "5.00"})

    assert answer.json()["error"]["fields"] == ["amout"]


def test_a_refund_without_an_idempotency_key_is_400_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    answer = post_refund(client, payment.id, None)

    assert_error(answer, 400, "idempotency_key_missing")
    assert count_rows(db) == before


@pytest.mark.parametrize("payment_id", [str(uuid.uuid4()), "not-a-uuid"], ids=["unknown", "bad"])
def test_a_refund_of_an_unknown_payment_is_404(
    client: TestClient, db: Database, payment_id: str
) -> None:
    before = count_rows(db)

    answer = post_refund(client, payment_id, "refund-1")

    assert_error(answer, 404, "payment_not_found")
    assert count_rows(db) == before


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token"}], ids=["no token", "wrong token"]
)
def test_a_refund_without_the_token_is_401_and_stores_nothing(
    client: TestClient, db: Database, headers: dict[str, str]
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    answer = post_refund(client, payment.id, "refund-1", headers=headers)

    assert_error(answer, 401, "invalid_token")
    assert count_rows(db) == before
