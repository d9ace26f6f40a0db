"""A signed success under a sender's transaction id another payment of the same provider holds
(DESIGN.md section 5, Callback; review reason `sender_id_conflict`).

The sender's first callback settles order A's payment under SENDER_ID, which it keeps as its
provider_transaction_id. A success for order B's pending payment then names SENDER_ID again:
two payments cannot hold one id of their provider, so nothing moves and an operator decides.
Every behaviour is checked on both paths of the listener on Postgres: the batch (its
settling statement refuses the id, and the ordinary transaction decides) and the ordinary
transaction alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orderpay.domain.signatures import standard_headers
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments import settlement
from orderpay.payments.charge import charge_order
from orderpay.payments.settlement import Settled
from orderpay.providers.simulator import SimulatorProvider
from orderpay.server import create_app
from orderpay.store.db import Database
from orderpay.store.locks import lock_payment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from tests.builders import a_key, an_order
from tests.conftest import Cli, count_rows
from tests.ledger_views import seen
from tests.live_server import (
    CALLBACK_PATH,
    SECRET,
    SENDER_ID,
    TestClient,
    a_pending_payment,
    app_client,
    listener_settings,
    sender_body,
)

# Order B's customer: a number no other row holds, to look for in the logs.
KOFI = "+233209876543"
KOFI_DIGITS = ("209876543", "0209876543")


@pytest.fixture(params=["batch", "ordinary"])
def listener_on(request: pytest.FixtureRequest, pg_url: str) -> Iterator[TestClient]:
    """The listener on Postgres, its callbacks settled in batches first, or never."""
    app = create_app(listener_settings(pg_url))
    with app_client(app) as client:
        app.callbacks.batches = request.param == "batch"
        if request.param == "batch":
            assert app.callbacks.batcher is not None, "no asyncpg pool: no batches"
        yield client


def post(client: TestClient, body: bytes, webhook_id: str = "msg_conflict") -> httpx.Response:
    """A signed callback, the sender's event id in Standard Webhooks headers: without one, a
    success under SENDER_ID would be a copy of the holder's by its reference."""
    headers = standard_headers(body, SECRET.encode(), webhook_id)
    answer: httpx.Response = client.post(CALLBACK_PATH, content=body, headers=headers)
    return answer


def holder_and_pending(client: TestClient, db: Database) -> tuple[Payment, Payment]:
    """Payment A, settled by the sender under SENDER_ID; payment B, of another order, pending."""
    holder = a_pending_payment(db)
    first = post(client, sender_body(holder.order_id), "msg_holder")
    assert first.json() == {"status": "processed", "payment": str(holder.id)}, first.text
    return holder, a_pending_payment(db, phone=KOFI)


def conflicting(client: TestClient, db: Database) -> tuple[Payment, Payment, httpx.Response]:
    """A and B, and the answer to a success for B's order under A's SENDER_ID."""
    holder, pending = holder_and_pending(client, db)
    return holder, pending, post(client, sender_body(pending.order_id))


def items(cli: Cli) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cli.items("review", "list", "--all")
    return found


class MtnLike(SimulatorProvider):
    """Another provider (its name is all that differs here): its ids are its own."""

    name = "mtn"


def held_by_another_provider(db: Database) -> Payment:
    """A payment of `mtn` that its provider settled under SENDER_ID."""
    order = an_order(db)
    payment = charge_order(
        db, MtnLike(), order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
    ).payment
    report = settlement.Report(PaymentStatus.SUCCEEDED, "mtn status", transaction_id=SENDER_ID)
    with db.transaction() as conn:
        locked = lock_payment(conn, payment.id)
        assert locked is not None
        assert settlement.settle(conn, locked, report, NotifyTarget()) is Settled.APPLIED
    return payment


def test_a_success_under_another_payments_transaction_id_answers_200_review(
    listener_on: TestClient, db: Database
) -> None:
    _, pending, answer = conflicting(listener_on, db)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "review", "payment": str(pending.id)}


def test_a_sender_id_conflict_keeps_the_callback_as_a_webhook_event(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    _, pending, _ = conflicting(listener_on, db)

    [event] = cli.items("webhook", "list", "--order", str(pending.order_id))
    assert (event["outcome"], event["payment"]) == ("review_sender", str(pending.id))
    assert event["dedupe_key"] == "msg_conflict"


def test_a_sender_id_conflict_records_the_event_the_item_and_the_timeline_and_nothing_else(
    listener_on: TestClient, db: Database
) -> None:
    _, pending = holder_and_pending(listener_on, db)
    before = count_rows(db)

    post(listener_on, sender_body(pending.order_id))

    grown = {"webhook_events": 1, "review_items": 1, "order_events": 1}
    assert count_rows(db) == {t: n + grown.get(t, 0) for t, n in before.items()}


def test_a_sender_id_conflict_opens_one_sender_id_conflict_item_about_the_payment_named(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    _, pending, _ = conflicting(listener_on, db)

    [item] = items(cli)
    assert (item["reason"], item["open"]) == ("sender_id_conflict", True)
    assert (item["order"], item["payment"]) == (str(pending.order_id), str(pending.id))
    assert SENDER_ID in item["reported"]


def test_a_sender_id_conflict_item_names_the_payment_that_holds_the_id(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    holder, _, _ = conflicting(listener_on, db)

    [item] = items(cli)
    assert str(holder.id) in item["reported"] + item["suggested_action"], item


def test_a_sender_id_conflict_item_names_the_callback_that_reported_it(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    _, pending, _ = conflicting(listener_on, db)

    [event] = cli.items("webhook", "list", "--order", str(pending.order_id))
    [item] = items(cli)
    assert item["event"] == event["id"]


def test_a_sender_id_conflict_moves_neither_payment_and_queues_no_notification(
    listener_on: TestClient, db: Database
) -> None:
    holder, pending = holder_and_pending(listener_on, db)
    held_before, pending_before = seen(db, holder), seen(db, pending)

    post(listener_on, sender_body(pending.order_id))

    after = seen(db, pending)
    assert (after.payment, after.order) == (PaymentStatus.PENDING, OrderStatus.PENDING)
    assert (after.transaction_id, after.notifications) == (None, 0)
    assert after.events == [*pending_before.events, "callback_sender_conflict"]
    assert seen(db, holder) == held_before  # still SENDER_ID's, one notification


def test_a_copy_of_a_sender_id_conflict_answers_duplicate_and_opens_no_second_item(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    _, pending, _ = conflicting(listener_on, db)
    before = count_rows(db)

    again = post(listener_on, sender_body(pending.order_id))

    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate", "payment": str(pending.id)}
    assert count_rows(db) == before
    assert len(items(cli)) == 1


def test_a_sender_id_conflict_logs_none_of_the_statements_parameters(
    listener_on: TestClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _, pending = holder_and_pending(listener_on, db)
    caplog.set_level(logging.DEBUG)  # every logger, every level

    answer = post(listener_on, sender_body(pending.order_id))

    assert answer.json()["status"] == "review"
    for record in caplog.records:
        logged = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        assert not any(digits in logged for digits in KOFI_DIGITS), logged


def test_an_id_a_payment_of_another_provider_holds_is_no_conflict(
    listener_on: TestClient, db: Database, cli: Cli
) -> None:
    held_by_another_provider(db)
    pending = a_pending_payment(db, phone=KOFI)

    answer = post(listener_on, sender_body(pending.order_id))

    assert answer.json() == {"status": "processed", "payment": str(pending.id)}, answer.text
    after = seen(db, pending)
    assert (after.payment, after.transaction_id) == (PaymentStatus.SUCCEEDED, SENDER_ID)
    assert items(cli) == []
