"""Callbacks racing each other: real threads against the real server on Postgres.

Providers retry and deliver twice; a listener behind a load balancer gets the copies at the same
moment. Whatever the interleaving, one outcome is applied once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from orderpay.domain.signatures import standard_headers
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.db import Database
from orderpay.store.notifications import notifications_of
from orderpay.store.order_events import events_of
from orderpay.store.orders import get_order
from orderpay.store.payments import Payment, get_payment
from tests.live_server import (
    SECRET,
    LiveServer,
    a_pending_payment,
    callback_body,
    listener,
    listener_settings,
    post_in_parallel,
    signed,
)

PARALLEL = 16


@pytest.fixture
def server(pg_url: str) -> Iterator[LiveServer]:
    with listener(listener_settings(pg_url)) as running:
        yield running


def event_counts(db: Database, payment: Payment) -> Counter[str]:
    with db.transaction() as conn:
        return Counter(e.event for e in events_of(conn, [payment.order_id])[payment.order_id])


def notification_count(db: Database, payment: Payment) -> int:
    with db.transaction() as conn:
        return len(notifications_of(conn, [payment.order_id]))


@pytest.mark.slow
def test_sixteen_identical_callbacks_in_parallel_all_answer_200_and_settle_once(
    server: LiveServer, db: Database
) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment, "success")

    answers = post_in_parallel(server.callback_url, [(body, lambda: signed(body))] * PARALLEL)

    assert [a.status_code for a in answers] == [200] * PARALLEL
    assert Counter(a.json()["status"] for a in answers) == {"processed": 1, "duplicate": 15}


def test_sixteen_identical_callbacks_in_parallel_make_one_transition_notification_and_paid_event(
    server: LiveServer, db: Database
) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment, "success")

    post_in_parallel(server.callback_url, [(body, lambda: signed(body))] * PARALLEL)

    events = event_counts(db, payment)
    assert (events["payment_succeeded"], events["order_paid"]) == (1, 1)
    assert notification_count(db, payment) == 1
    with db.transaction() as conn:
        assert get_order(conn, payment.order_id).status is OrderStatus.PAID


def test_sixteen_deliveries_of_one_standard_webhooks_message_in_parallel_settle_once(
    server: LiveServer, db: Database
) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment, "success")

    answers = post_in_parallel(
        server.callback_url,
        [(body, lambda: standard_headers(body, SECRET.encode(), "msg_once"))] * PARALLEL,
    )

    assert [a.status_code for a in answers] == [200] * PARALLEL
    assert Counter(a.json()["status"] for a in answers)["processed"] == 1
    assert event_counts(db, payment)["payment_succeeded"] == 1
    assert notification_count(db, payment) == 1


@pytest.mark.slow
def test_a_success_and_a_failure_racing_leave_one_terminal_state_and_a_consistent_order(
    server: LiveServer, db: Database
) -> None:
    payment = a_pending_payment(db)
    success = callback_body(payment, "success")
    failure = callback_body(payment, "failed", reason="EXPIRED")
    half = PARALLEL // 2

    answers = post_in_parallel(
        server.callback_url,
        [(success, lambda: signed(success))] * half + [(failure, lambda: signed(failure))] * half,
    )

    assert [a.status_code for a in answers] == [200] * PARALLEL
    assert Counter(a.json()["status"] for a in answers)["processed"] == 1
    with db.transaction() as conn:
        final = get_payment(conn, payment.id).status
        order = get_order(conn, payment.order_id).status
    events = event_counts(db, payment)
    assert events["payment_succeeded"] + events["payment_failed"] == 1
    if final is PaymentStatus.SUCCEEDED:
        assert (order, notification_count(db, payment)) == (OrderStatus.PAID, 1)
    else:
        assert (order, notification_count(db, payment)) == (OrderStatus.PENDING, 0)
