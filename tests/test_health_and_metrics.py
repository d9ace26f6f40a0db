"""GET /healthz, /readyz and /metrics (DESIGN.md section 6), and what the listener logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orderpay.payments.review import resolve
from orderpay.store.db import Database
from orderpay.store.paging import Window
from orderpay.store.reviews import list_items
from tests.builders import AMA, an_order
from tests.live_server import (
    API_TOKEN,
    CALLBACK_PATH,
    CLOSED_POSTGRES_URL,
    CLOSED_REDIS_URL,
    SECRET,
    TestClient,
    a_pending_payment,
    callback_body,
    listener_client,
    listener_settings,
    serve_webhooks,
    signed,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DECLINING_PAYER = "+46733123457"


def metric(client: TestClient | httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when the series does not exist yet)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def callbacks(client: TestClient | httpx.Client, outcome: str) -> float:
    """orderpay_callbacks_total of /api/webhooks/momo/ for one outcome."""
    return metric(client, "orderpay_callbacks_total", source="momo", outcome=outcome)


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    with listener_client(listener_settings(sqlite_url)) as in_process:
        yield in_process


# Health


def test_healthz_answers_200(client: TestClient) -> None:
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_healthz_answers_200_while_the_database_is_down() -> None:
    with listener_client(listener_settings(CLOSED_POSTGRES_URL)) as client:
        answer = client.get("/healthz")

    assert answer.status_code == 200


def test_readyz_answers_200_when_the_database_is_migrated(any_url: str) -> None:
    with listener_client(listener_settings(any_url)) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 200
    assert answer.json()["status"] == "ready"


def test_readyz_answers_503_when_the_database_is_not_migrated(empty_pg_url: str) -> None:
    with listener_client(listener_settings(empty_pg_url)) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "schema_out_of_date"


def test_readyz_answers_503_for_a_missing_sqlite_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"

    with listener_client(listener_settings(f"sqlite:///{path}")) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert not path.exists()


def test_readyz_answers_503_database_unavailable_when_the_database_is_down() -> None:
    with listener_client(listener_settings(CLOSED_POSTGRES_URL)) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "database_unavailable"


def test_a_503_for_a_database_that_is_down_names_no_host_port_or_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b'{"provider_reference": "r-1", "order_id": "%s", "status": "success"}' % (
        b"00000000-0000-4000-8000-000000000001"
    )

    with (
        caplog.at_level(logging.WARNING),
        listener_client(listener_settings(CLOSED_POSTGRES_URL)) as client,
    ):
        ready = client.get("/readyz")
        callback = client.post(CALLBACK_PATH, content=body, headers=signed(body))

    for answer in (ready, callback):
        assert answer.status_code == 503
        assert answer.json()["error"] == {
            "code": "database_unavailable",
            "message": "database unavailable; retry later",
        }
        assert "127.0.0.1" not in answer.text
        assert "root" not in answer.text
    # The operator's log has what the caller was not told.
    assert "postgresql+psycopg2://root@127.0.0.1:1/orderpay is unavailable" in caplog.text


def test_a_503_for_a_missing_schema_names_no_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"

    with listener_client(listener_settings(f"sqlite:///{path}")) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "the database schema is not current"
    assert str(tmp_path) not in answer.text


def test_a_database_the_listener_may_not_write_is_a_503_for_the_caller(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "shop.db"

    with listener_client(listener_settings(f"sqlite:///{missing}")) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "database_unavailable"
    assert str(tmp_path) not in answer.text


def test_readyz_does_not_need_redis(pg_url: str) -> None:
    with listener_client(listener_settings(pg_url, REDIS_URL=CLOSED_REDIS_URL)) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 200


# Metrics


def test_metrics_are_served_in_the_prometheus_text_format(client: TestClient) -> None:
    answer = client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {
        "orderpay_callbacks",
        "orderpay_charges",
        "orderpay_http_request_duration_seconds",
    } <= names


def test_a_processed_callback_is_counted_by_its_outcome(
    client: TestClient, sqlite_db: Database
) -> None:
    payment = a_pending_payment(sqlite_db)
    body = callback_body(payment)
    before = callbacks(client, "processed")

    client.post(CALLBACK_PATH, content=body, headers=signed(body))

    assert callbacks(client, "processed") == before + 1


def test_a_duplicate_callback_is_counted_as_duplicate(
    client: TestClient, sqlite_db: Database
) -> None:
    payment = a_pending_payment(sqlite_db)
    body = callback_body(payment)
    client.post(CALLBACK_PATH, content=body, headers=signed(body))
    before = callbacks(client, "duplicate")

    client.post(CALLBACK_PATH, content=body, headers=signed(body))

    assert callbacks(client, "duplicate") == before + 1


def test_a_refused_callback_is_counted_by_its_error_code(client: TestClient) -> None:
    before = callbacks(client, "invalid_signature")

    client.post(CALLBACK_PATH, content=b"{}", headers={"X-Momo-Signature": "00"})

    assert callbacks(client, "invalid_signature") == before + 1


@pytest.mark.parametrize(
    ("phone", "outcome"),
    [(AMA, "accepted"), (DECLINING_PAYER, "payment_declined")],
    ids=["accepted", "declined"],
)
def test_a_charge_through_the_api_is_counted_by_its_outcome(
    phone: str, outcome: str, client: TestClient, sqlite_db: Database
) -> None:
    order = an_order(sqlite_db)
    before = metric(client, "orderpay_charges_total", outcome=outcome)

    client.post(
        "/api/payments/charge/",
        content=json.dumps({"order": str(order.id), "phone": phone}),
        headers={**AUTH, "Idempotency-Key": "k-1"},
    )

    assert metric(client, "orderpay_charges_total", outcome=outcome) == before + 1


def test_a_replayed_charge_is_counted_as_replayed(client: TestClient, sqlite_db: Database) -> None:
    order = an_order(sqlite_db)
    body, headers = json.dumps({"order": str(order.id)}), {**AUTH, "Idempotency-Key": "k-1"}
    client.post("/api/payments/charge/", content=body, headers=headers)
    before = metric(client, "orderpay_charges_total", outcome="replayed")

    client.post("/api/payments/charge/", content=body, headers=headers)

    assert metric(client, "orderpay_charges_total", outcome="replayed") == before + 1


def test_request_durations_are_observed_per_route_template_not_per_path(
    client: TestClient, sqlite_db: Database
) -> None:
    order = an_order(sqlite_db)
    series = {"route": "/api/orders/{order_id}/", "method": "GET"}
    before = metric(client, "orderpay_http_request_duration_seconds_count", **series)

    client.get(f"/api/orders/{order.id}/", headers=AUTH)

    assert metric(client, "orderpay_http_request_duration_seconds_count", **series) == before + 1
    assert f"{order.id}" not in client.get("/metrics").text


@pytest.mark.slow
def test_metrics_of_several_workers_add_up_whichever_worker_answers(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    payments = [a_pending_payment(db) for _ in range(6)]
    env = {"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET}

    with serve_webhooks(tmp_path, env, "--workers", "2") as server:
        for payment in payments:  # a new connection each: either worker may take it
            body = callback_body(payment)
            answer = httpx.post(server.callback_url, content=body, headers=signed(body))
            assert answer.json()["status"] == "processed"
        scrapes = []
        for _ in range(8):
            with httpx.Client(base_url=server.url) as scraper:
                scrapes.append(callbacks(scraper, "processed"))

    assert scrapes == [len(payments)] * 8


# The review queue, counted at scrape time from the database

REVIEW_GAUGE = "orderpay_review_items_open"


def kept_for_review(client: TestClient | httpx.Client, db: Database) -> None:
    """A success reported for another amount than the payment's: one review item."""
    payment = a_pending_payment(db)
    body = callback_body(payment, "success", amount="1.00")
    answer = client.post(CALLBACK_PATH, content=body, headers=signed(body))
    assert answer.json()["status"] == "review"


def test_the_review_gauge_counts_the_open_items(client: TestClient, sqlite_db: Database) -> None:
    assert metric(client, REVIEW_GAUGE) == 0
    assert f"# TYPE {REVIEW_GAUGE} gauge" in client.get("/metrics").text

    kept_for_review(client, sqlite_db)
    kept_for_review(client, sqlite_db)

    assert metric(client, REVIEW_GAUGE) == 2


def test_a_resolved_item_leaves_the_review_gauge(client: TestClient, sqlite_db: Database) -> None:
    kept_for_review(client, sqlite_db)
    with sqlite_db.transaction() as conn:
        (item,) = list_items(conn, Window()).items
    assert metric(client, REVIEW_GAUGE) == 1

    resolve(sqlite_db, item.id, note="refunded", operator="akosua")

    assert metric(client, REVIEW_GAUGE) == 0


def test_metrics_are_served_without_the_review_gauge_while_the_database_is_down() -> None:
    with listener_client(listener_settings(CLOSED_POSTGRES_URL)) as down:
        answer = down.get("/metrics")

    assert answer.status_code == 200
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert "orderpay_http_request_duration_seconds" in names
    assert REVIEW_GAUGE not in names


@pytest.mark.slow
def test_the_review_gauge_is_the_databases_count_whichever_worker_answers(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    """Several workers each read the count: it is never added up across them."""
    env = {"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET}

    with serve_webhooks(tmp_path, env, "--workers", "2") as server:
        with httpx.Client(base_url=server.url) as sender:
            kept_for_review(sender, db)
        scrapes = []
        for _ in range(6):  # a new connection each: either worker may answer
            with httpx.Client(base_url=server.url) as scraper:
                scrapes.append(metric(scraper, REVIEW_GAUGE))

    assert scrapes == [1] * 6


# Logs


def test_the_listeners_logs_hold_no_secret_token_full_phone_number_or_query_string(
    sqlite_url: str, sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    payer = "+233201234567"
    order, paid = an_order(sqlite_db), a_pending_payment(sqlite_db)
    body = callback_body(paid)
    caplog.set_level(logging.DEBUG)

    with listener_client(listener_settings(sqlite_url)) as client:
        client.post(
            "/api/payments/charge/?api_token=query-secret-value",
            content=json.dumps({"order": str(order.id), "phone": payer}),
            headers={**AUTH, "Idempotency-Key": "k-1"},
        )
        client.post(CALLBACK_PATH + "?sig=query-secret-value", content=body, headers=signed(body))
        client.post(CALLBACK_PATH, content=b"{}", headers={"X-Momo-Signature": SECRET})
        client.get(f"/api/orders/{order.id}/?token={API_TOKEN}", headers=AUTH)

    logged = "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', '')} {record.exc_text or ''}"
        for record in caplog.records
        if record.name.startswith(("orderpay", "uvicorn"))  # not the test client's own log
    )
    assert "/api/payments/charge/" in logged  # the access log did log the requests
    for leak in (SECRET, API_TOKEN, payer, payer[1:], "0201234567", "query-secret-value"):
        assert leak not in logged
    assert "api_token=" not in logged
    assert "sig=" not in logged
