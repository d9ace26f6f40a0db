"""The bare ASGI callback route (orderpay/http/momo_route.py) answers as the Starlette route did.

POST /api/webhooks/momo/ (and without its slash) runs in front of the Starlette app: the same
64 KiB limit, signature check, bodies, status codes and headers (DESIGN.md sections 5-7). On
Postgres it settles on the event loop through an asyncpg pool when the fast path decides, and
through the ordinary transaction otherwise; on SQLite always the ordinary way. It counts every
callback, observes no latency histogram, and logs one line per callback that is not processed.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.http.momo_route import SUCCESS_LOG_SAMPLE
from orderpay.payments.callbacks import CallbackResult
from orderpay.server import Listener, create_app
from orderpay.store.db import Database
from orderpay.store.schema import payments
from tests.builders import an_order
from tests.conftest import count_rows
from tests.ledger_views import seen
from tests.live_server import (
    CALLBACK_PATH,
    CLOSED_POSTGRES_URL,
    SENDER_ID,
    TestClient,
    a_pending_payment,
    app_client,
    assert_error,
    callback_body,
    listener_settings,
    live_server,
    sender_body,
    signed,
)

MAX_BODY = 64 * 1024
BOTH_FORMS = ["/api/webhooks/momo/", "/api/webhooks/momo"]


@pytest.fixture
def any_client(any_url: str) -> Iterator[TestClient]:
    """The listener in-process (lifespan run) on Postgres and on SQLite."""
    with app_client(create_app(listener_settings(any_url))) as in_process:
        yield in_process


def post(
    client: TestClient, body: bytes, path: str = CALLBACK_PATH, **headers: str
) -> httpx.Response:
    answer: httpx.Response = client.post(path, content=body, headers=signed(body) | headers)
    return answer


def samples(client: TestClient | httpx.Client, name: str, **labels: str) -> list[float]:
    """Every sample named `name` on /metrics whose labels include `labels`."""
    text = client.get("/metrics").text
    return [
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


# The counters are the process's: tests compare before and after.
def processed_count(client: TestClient) -> float:
    return sum(samples(client, "orderpay_callbacks_total", source="momo", outcome="processed"))


def refused_count(client: TestClient) -> float:
    labels = {"source": "momo", "outcome": "invalid_signature"}
    return sum(samples(client, "orderpay_callbacks_total", **labels))


def latency_count(client: TestClient, route: str) -> float:
    return sum(samples(client, "orderpay_http_request_duration_seconds_count", route=route))


# Answers, on Postgres and SQLite


@pytest.mark.parametrize("path", BOTH_FORMS)
def test_a_success_answers_processed_on_both_forms_of_the_path(
    any_client: TestClient, any_url: str, path: str
) -> None:
    db = Database(any_url)
    payment = a_pending_payment(db)

    answer = post(any_client, callback_body(payment), path)

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"status": "processed", "payment": str(payment.id)}
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    db.dispose()


def test_a_second_copy_answers_duplicate(any_client: TestClient, any_url: str) -> None:
    db = Database(any_url)
    payment = a_pending_payment(db)
    post(any_client, callback_body(payment))

    answer = post(any_client, callback_body(payment))

    assert answer.json() == {"status": "duplicate", "payment": str(payment.id)}
    db.dispose()


def test_a_body_declared_over_64_kib_is_413_and_stores_nothing(
    any_client: TestClient, any_url: str
) -> None:
    db = Database(any_url)
    before = count_rows(db)
    body = b"{" + b" " * MAX_BODY + b"}"

    answer = post(any_client, body)

    assert_error(answer, 413, "payload_too_large")
    assert count_rows(db) == before
    db.dispose()


def test_a_body_of_exactly_64_kib_is_read(any_client: TestClient) -> None:
    body = b"{" + b" " * (MAX_BODY - 2) + b"}"  # a valid signature, an empty object

    answer = post(any_client, body)

    assert_error(answer, 400, "invalid_payload")  # read and parsed, not refused for its size


def test_a_chunked_body_over_64_kib_without_a_length_is_413(pg_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 1):
            yield b" " * 1024

    with live_server(create_app(listener_settings(pg_url))) as server:
        answer = httpx.post(server.callback_url, content=chunks(), headers=signed(b""))

    assert "content-length" not in answer.request.headers
    assert_error(answer, 413, "payload_too_large")


def test_a_bad_signature_is_401_without_detail_and_counted(
    any_client: TestClient, any_url: str
) -> None:
    db = Database(any_url)
    body = callback_body(a_pending_payment(db))
    before = count_rows(db)
    refused = refused_count(any_client)

    answer = any_client.post(CALLBACK_PATH, content=body, headers={"X-Momo-Signature": "00" * 32})

    assert_error(answer, 401, "invalid_signature")
    assert answer.json()["error"]["message"] == "invalid signature"
    assert count_rows(db) == before
    assert refused_count(any_client) == refused + 1
    db.dispose()


def test_an_invalid_body_is_400_invalid_payload(any_client: TestClient) -> None:
    answer = post(any_client, b'{"provider_reference": "r-1", "status": "success"}')

    assert_error(answer, 400, "invalid_payload")


def test_an_unknown_order_is_404_order_not_found(any_client: TestClient) -> None:
    body = json.dumps(
        {"provider_reference": "ref-1", "order_id": str(uuid.uuid4()), "status": "success"}
    ).encode()

    assert_error(post(any_client, body), 404, "order_not_found")


def test_an_order_without_a_payment_awaiting_an_outcome_is_404_payment_not_found(
    any_client: TestClient, any_url: str
) -> None:
    db = Database(any_url)
    order = an_order(db)
    body = json.dumps(
        {"provider_reference": "ref-1", "order_id": str(order.id), "status": "success"}
    ).encode()

    assert_error(post(any_client, body), 404, "payment_not_found")
    db.dispose()


def test_without_a_secret_the_route_is_404(any_url: str) -> None:
    app = create_app(listener_settings(any_url, MOMO_WEBHOOK_SECRET=None))
    body = b'{"provider_reference": "r-1"}'

    with app_client(app) as client:
        answer = post(client, body)

    assert_error(answer, 404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("path", BOTH_FORMS)
def test_another_method_is_405_allowing_post(
    any_client: TestClient, method: str, path: str
) -> None:
    answer = any_client.request(method, path)

    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    if method != "HEAD":
        assert answer.json() == {
            "error": {"code": "method_not_allowed", "message": "Method Not Allowed"}
        }


def test_a_database_that_is_down_is_503_with_retry_after() -> None:
    body = b'{"provider_reference": "r-1", "order_id": "%s", "status": "success"}' % (
        b"00000000-0000-4000-8000-000000000001"
    )
    app = create_app(listener_settings(CLOSED_POSTGRES_URL))

    with app_client(app) as client:
        answer = post(client, body)

    assert_error(answer, 503, "database_unavailable")
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"]["message"] == "database unavailable; retry later"


def test_other_routes_are_still_starlettes(any_client: TestClient) -> None:
    assert any_client.get("/healthz").json() == {"status": "ok"}
    assert_error(any_client.get("/api/webhooks/momo/extra"), 404, "not_found")


# Metrics and logs


def test_a_success_is_counted_without_a_latency_sample(
    any_client: TestClient, any_url: str
) -> None:
    db = Database(any_url)
    payment = a_pending_payment(db)
    processed, healthz = processed_count(any_client), latency_count(any_client, "/healthz")
    unmatched = latency_count(any_client, "unmatched")

    post(any_client, callback_body(payment))
    any_client.get("/healthz")  # a route that is observed, for contrast

    assert processed_count(any_client) == processed + 1
    assert latency_count(any_client, "/healthz") == healthz + 1
    assert latency_count(any_client, "/api/webhooks/momo/") == 0
    assert latency_count(any_client, "unmatched") == unmatched
    db.dispose()


def callback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "orderpay.server" and "callback" in record.getMessage()
    ]


def test_processed_callbacks_are_logged_one_in_the_sample(
    any_client: TestClient, any_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(any_url)
    payments = [a_pending_payment(db) for _ in range(3)]
    caplog.set_level(logging.INFO, logger="orderpay.server")

    for payment in payments:
        assert post(any_client, callback_body(payment)).json()["status"] == "processed"

    lines = callback_lines(caplog)
    assert len(lines) == 1  # the first of SUCCESS_LOG_SAMPLE
    assert f"1 processed callback in {SUCCESS_LOG_SAMPLE} logged" in lines[0]
    db.dispose()


def test_each_callback_that_is_not_processed_has_one_log_line(
    any_client: TestClient, any_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(any_url)
    payment = a_pending_payment(db)
    post(any_client, callback_body(payment))
    caplog.set_level(logging.INFO, logger="orderpay.server")
    caplog.clear()  # the first copy's line, had the root logger let it through

    post(any_client, callback_body(payment))  # duplicate
    post(any_client, b'{"status": "success"}')  # 400
    any_client.post(CALLBACK_PATH, content=b"{}", headers={"X-Momo-Signature": "00"})  # 401

    lines = callback_lines(caplog)
    assert len(lines) == 3, lines
    assert "duplicate" in lines[0]
    assert "invalid_payload" in lines[1]
    assert "callback refused" in lines[2]
    db.dispose()


# The fast path and the ordinary transaction answer alike (Postgres; SQLite has one path)


class Spy:
    """Records what the fast path decided (None: it fell back), and delegates to it."""

    def __init__(self, app: Listener) -> None:
        batcher = app.callbacks.batcher
        assert batcher is not None, "no batches: the asyncpg pool was not made"
        self.settle = batcher.settle
        self.decided: list[CallbackResult | None] = []
        batcher.settle = self  # type: ignore[method-assign]

    async def __call__(self, callback: Any) -> CallbackResult | None:
        result = await self.settle(callback)
        self.decided.append(result)
        return result


@pytest.fixture(params=["fast", "ordinary"])
def either_path(request: pytest.FixtureRequest, pg_url: str) -> Iterator[TestClient]:
    """The listener on Postgres with its fast path on, or off (the ordinary transaction)."""
    app = create_app(listener_settings(pg_url))
    with app_client(app) as client:
        app.callbacks.batches = request.param == "fast"
        yield client


def test_on_postgres_a_pool_is_made_at_start_and_closed_at_shutdown(pg_url: str) -> None:
    app = create_app(listener_settings(pg_url))

    with app_client(app):
        pool = app.callbacks.pool
        assert pool is not None

    assert app.callbacks.pool is None
    assert pool.is_closing()


def test_on_sqlite_no_pool_is_made(sqlite_url: str) -> None:
    app = create_app(listener_settings(sqlite_url))

    with app_client(app) as client:
        body = b'{"status": "success"}'
        post(client, body)
        assert app.callbacks.pool is None


@pytest.mark.slow
def test_a_success_is_settled_by_the_fast_path_in_one_round_trip(pg_url: str) -> None:
    app = create_app(listener_settings(pg_url))
    db = Database(pg_url)
    payment = a_pending_payment(db)

    with app_client(app) as client:
        spy = Spy(app)
        answer = post(client, callback_body(payment))

    assert answer.json() == {"status": "processed", "payment": str(payment.id)}
    assert len(spy.decided) == 1
    assert spy.decided[0] is not None  # decided there: no fallback
    db.dispose()


def test_each_callback_answers_the_same_through_either_path(
    either_path: TestClient, pg_url: str
) -> None:
    db = Database(pg_url)
    paid, failed, mismatched = (a_pending_payment(db) for _ in range(3))
    order = an_order(db)
    cases = [
        (callback_body(paid), 200, {"status": "processed", "payment": str(paid.id)}),
        (callback_body(paid), 200, {"status": "duplicate", "payment": str(paid.id)}),
        (callback_body(failed, "failed"), 200, {"status": "processed", "payment": str(failed.id)}),
        (callback_body(failed, "success"), 200, {"status": "review", "payment": str(failed.id)}),
        (
            callback_body(mismatched, amount="1.00"),
            200,
            {"status": "review", "payment": str(mismatched.id)},
        ),
        (
            json.dumps(
                {"provider_reference": "r-9", "order_id": str(order.id), "status": "success"}
            ).encode(),
            404,
            "payment_not_found",
        ),
        (
            json.dumps(
                {"provider_reference": "r-9", "order_id": str(uuid.uuid4()), "status": "success"}
            ).encode(),
            404,
            "order_not_found",
        ),
    ]

    for body, status, expected in cases:
        answer = post(either_path, body)
        assert answer.status_code == status, (body, answer.text)
        if isinstance(expected, str):
            assert_error(answer, status, expected)
        else:
            assert answer.json() == expected
    db.dispose()


@pytest.mark.slow
def test_a_seed_style_success_is_settled_by_the_fast_path_too(pg_url: str) -> None:
    app = create_app(listener_settings(pg_url))
    db = Database(pg_url)
    payment = a_pending_payment(db)
    with db.transaction() as conn:  # the sender named it before, as the seed's senders did
        conn.execute(
            update(payments).where(payments.c.id == payment.id),
            {"provider_transaction_id": SENDER_ID},
        )

    with app_client(app) as client:
        spy = Spy(app)
        answer = post(client, sender_body(payment.order_id, SENDER_ID))

    assert answer.json() == {"status": "processed", "payment": str(payment.id)}
    assert len(spy.decided) == 1
    assert spy.decided[0] is not None  # decided there: no fallback
    db.dispose()
