"""Delivering a settled payment's notification: the outbox row, the attempt, retries, timeouts.

These run the delivery service (orderpay.notify.delivery) and the embedded drain
(orderpay.notify.drain) in-process against a real database and a local SMS gateway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.notify.channels import LogChannel, SmsChannel
from orderpay.notify.delivery import (
    Channels,
    Delivery,
    DeliveryResult,
    RetryPolicy,
    compile_ahead,
)
from orderpay.notify.drain import Drain
from orderpay.notify.in_flight import deliver_batch
from orderpay.notify.messages import order_reference
from orderpay.payments.callbacks import apply_callback, parse_callback
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import events_of
from orderpay.store.outbox import claim_among, claim_next_due
from orderpay.store.schema import notifications, webhook_events
from tests.builders import AMA
from tests.conftest import count_rows
from tests.http_recorder import Answer
from tests.redis_helpers import (
    HANG,
    LOG_TARGET,
    MERCHANT,
    Gateway,
    a_gateway,
    a_settled_payment,
    apply_success,
    at_answer,
    event_names,
    notification,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    wait_until,
)

FAST = RetryPolicy(intervals=(1, 1, 1, 1, 1), lease_seconds=30)
LEASE = timedelta(seconds=FAST.lease_seconds)
HTTP_500 = Answer(500, b'{"error": "internal"}')


def deliver(
    db: Database,
    channels: Channels,
    notification_id: int,
    *,
    merchant_name: str,
    policy: RetryPolicy,
) -> DeliveryResult:
    """One delivery attempt of one notification: a batch of one, as an RQ job runs it."""
    batch = deliver_batch(
        db, channels, [notification_id], merchant_name=merchant_name, policy=policy
    )
    return batch.results[0]


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with a_gateway() as running:
        yield running


def drain_with(db: Database, channel: SmsChannel, policy: RetryPolicy = FAST) -> Drain:
    return Drain(db, serving(channel), policy, MERCHANT)


def drain_until_settled(drain: Drain, db: Database, nid: int, timeout: float = 15.0) -> None:
    """Drain again and again (as a running worker would) until the row is no longer pending."""

    def settled() -> bool:
        drain.drain_due()
        return notification(db, nid).status is not NotificationStatus.PENDING

    wait_until(settled, timeout=timeout, interval=0.1, what=f"notification {nid} to settle")


def count_notifications(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(notifications)).scalar_one())


# --- The outbox row -------------------------------------------------------------------------


def test_a_settled_payment_leaves_one_pending_notification_due_now(any_db: Database) -> None:
    settled = a_settled_payment(any_db)

    row = notification(any_db, settled.notification_id)

    assert row.status is NotificationStatus.PENDING
    assert (row.attempts, row.enqueued_at, row.sent_at) == (0, None, None)
    assert row.recipient == AMA
    assert row.due_at <= utcnow()
    assert event_names(any_db, settled.order_id)[-1] == "notification_queued"


def test_settling_writes_the_payment_paid_and_queued_events_in_order_with_their_details(
    any_db: Database,
) -> None:
    settled = a_settled_payment(any_db, price="12.50", quantity=2)

    with any_db.transaction() as conn:
        timeline = events_of(conn, [settled.order_id])[settled.order_id]

    p, n = settled.payment_id, settled.notification_id
    assert [(e.event, e.detail) for e in timeline[-3:]] == [
        ("payment_succeeded", f"payment {p} of 25.00 GHS succeeded (momo callback)"),
        ("order_paid", f"paid by payment {p}"),
        ("notification_queued", f"notification {n} via sms"),
    ]
    assert len({e.at for e in timeline[-3:]}) == 1


def test_a_merchant_webhook_target_queues_the_notification_to_the_merchants_url(
    any_db: Database,
) -> None:
    target = NotifyTarget(channel="webhook", webhook_url="https://merchant.example/hooks")

    settled = a_settled_payment(any_db, target=target)

    row = notification(any_db, settled.notification_id)
    assert (row.channel, row.recipient) == ("webhook", "https://merchant.example/hooks")
    assert event_names(any_db, settled.order_id)[-1] == "notification_queued"


def test_a_replayed_callback_leaves_one_notification(any_db: Database) -> None:
    settled = a_settled_payment(any_db)

    apply_success(any_db, settled.callback, NotifyTarget())

    assert count_notifications(any_db) == 1
    with any_db.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_events)).scalar_one() == 1


def test_the_same_outcome_under_another_event_id_leaves_one_notification(db: Database) -> None:
    settled = a_settled_payment(db)

    with db.transaction() as conn:
        apply_callback(conn, parse_callback(settled.callback, webhook_id="evt-2"), NotifyTarget())

    assert count_notifications(db) == 1
    assert event_names(db, settled.order_id).count("notification_queued") == 1


# --- One attempt ----------------------------------------------------------------------------


def test_delivering_marks_the_notification_sent_with_the_gateways_message_id(
    any_db: Database, gateway: Gateway
) -> None:
    settled = a_settled_payment(any_db)

    with closing(sms_channel(gateway)) as channel:
        results = drain_with(any_db, channel).drain_due()

    row = notification(any_db, settled.notification_id)
    ((_, message_id),) = gateway.answered
    assert [r.outcome for r in results] == [Delivery.SENT]
    assert row.status is NotificationStatus.SENT
    assert row.gateway_message_id == message_id
    assert row.attempts == 1
    assert row.sent_at is not None
    assert row.last_error is None
    assert event_names(any_db, settled.order_id)[-1] == "notification_sent"


def test_the_message_names_the_order_reference_the_amount_and_the_merchant(
    db: Database, gateway: Gateway
) -> None:
    settled = a_settled_payment(db)

    with closing(sms_channel(gateway)) as channel:
        drain_with(db, channel).drain_due()

    (form,) = gateway.sms_forms()
    text = form["message"]
    assert order_reference(settled.order_id) in text
    assert settled.order_id.hex[:8].upper() in text
    assert "GHS 25.00" in text
    assert MERCHANT in text
    assert notification(db, settled.notification_id).body == text


def test_a_ghs_amount_is_written_with_two_decimals_and_grouped_thousands(
    db: Database, gateway: Gateway
) -> None:
    a_settled_payment(db, price="625.00", currency="GHS", quantity=2)

    with closing(sms_channel(gateway)) as channel:
        drain_with(db, channel).drain_due()

    (form,) = gateway.sms_forms()
    assert "GHS 1,250.00" in form["message"]


def test_a_ugx_amount_is_written_without_decimals(db: Database, gateway: Gateway) -> None:
    a_settled_payment(db, price="1500", currency="UGX", quantity=2)

    with closing(sms_channel(gateway)) as channel:
        drain_with(db, channel).drain_due()

    (form,) = gateway.sms_forms()
    assert "UGX 3,000 " in form["message"]
    assert "3,000." not in form["message"]


def test_delivering_a_sent_notification_again_sends_nothing(db: Database, gateway: Gateway) -> None:
    settled = a_settled_payment(db)
    with closing(sms_channel(gateway)) as channel:
        first = deliver(
            db, serving(channel), settled.notification_id, merchant_name=MERCHANT, policy=FAST
        )

        again = deliver(
            db, serving(channel), settled.notification_id, merchant_name=MERCHANT, policy=FAST
        )

    assert (first.outcome, again.outcome) == (Delivery.SENT, Delivery.SKIPPED)
    assert gateway.count() == 1
    assert event_names(db, settled.order_id).count("notification_sent") == 1


@pytest.mark.slow
def test_a_duplicate_job_while_the_first_attempt_holds_its_lease_sends_nothing(
    db: Database, gateway: Gateway
) -> None:
    # A short lease, as ORDERPAY_NOTIFY_LEASE_SECONDS=2 configures it; the gateway takes a
    # second to answer, well inside the lease.
    policy = RetryPolicy(intervals=(1, 1, 1, 1, 1), lease_seconds=2)
    gateway.delay = 1.0
    settled = a_settled_payment(db)
    results: list[DeliveryResult] = []
    with closing(sms_channel(gateway)) as channel:
        first = threading.Thread(
            target=lambda: results.append(
                deliver(
                    db,
                    serving(channel),
                    settled.notification_id,
                    merchant_name=MERCHANT,
                    policy=policy,
                )
            )
        )
        first.start()
        try:
            gateway.recorder.wait_for(1)

            duplicate = deliver(
                db, serving(channel), settled.notification_id, merchant_name=MERCHANT, policy=policy
            )
        finally:
            first.join(10)

    assert duplicate.outcome is Delivery.SKIPPED
    assert [r.outcome for r in results] == [Delivery.SENT]
    assert gateway.count() == 1


def test_a_job_whose_rows_another_job_is_claiming_takes_none_of_them(db: Database) -> None:
    # SKIP LOCKED: the second claim neither waits for the first one's row locks nor takes a
    # second attempt of a row the first one is claiming; it takes the rows no one holds.
    ids = [a_settled_payment(db).notification_id for _ in range(3)]
    other = Database(db.url)
    try:
        with db.transaction() as holding:
            first = claim_among(holding, ids[:2], 2, LEASE, utcnow())
            with other.transaction() as conn:
                second = claim_among(conn, ids, 3, LEASE, utcnow())
    finally:
        other.dispose()

    assert [attempt.notification_id for attempt in first] == ids[:2]
    assert [attempt.notification_id for attempt in second] == ids[2:]
    assert [notification(db, nid).attempts for nid in ids] == [1, 1, 1]


def test_rows_another_drain_is_claiming_are_skipped(db: Database) -> None:
    a_settled_payment(db)
    other = Database(db.url)
    try:
        with db.transaction() as holding:
            held = claim_next_due(holding, LEASE, utcnow())

            with other.transaction() as conn:
                meanwhile = claim_next_due(conn, LEASE, utcnow())
    finally:
        other.dispose()

    assert held is not None
    assert meanwhile is None


# --- Retries --------------------------------------------------------------------------------


def test_a_failed_try_is_recorded_with_its_error_and_stays_pending(db: Database) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HTTP_500) as gateway, closing(sms_channel(gateway)) as channel:
        (result,) = drain_with(db, channel).drain_due()

    row = notification(db, settled.notification_id)
    assert result.outcome is Delivery.RETRY
    assert result.retry_in == 1
    assert (row.status, row.attempts) == (NotificationStatus.PENDING, 1)
    assert row.last_error is not None
    assert "HTTP 500" in row.last_error
    assert event_names(db, settled.order_id)[-1] == "notification_attempt_failed"


# 5 s, not 1: "at once" must stay inside the backoff on a loaded 2-core machine.
@pytest.mark.parametrize("interval", [5, 30])
def test_a_failed_try_is_not_retried_before_its_backoff(interval: int, db: Database) -> None:
    policy = RetryPolicy(intervals=(interval, interval), lease_seconds=30)
    settled = a_settled_payment(db)
    with a_gateway(HTTP_500) as gateway, closing(sms_channel(gateway)) as channel:
        drain = drain_with(db, channel, policy)
        failed_after = utcnow()
        drain.drain_due()

        again = drain.drain_due()  # at once: well inside the backoff

        requests = gateway.count()
    row = notification(db, settled.notification_id)
    assert again == []
    assert requests == 1
    assert row.due_at >= failed_after + timedelta(seconds=interval)


@pytest.mark.slow
def test_a_gateway_that_fails_three_times_then_succeeds_sends_one_message(
    sqlite_db: Database,
) -> None:
    # The embedded default (SQLite, no Redis); `orderpay worker` with RQ does the same on
    # Postgres in test_relay_and_worker.py.
    settled = a_settled_payment(sqlite_db)
    with (
        a_gateway(HTTP_500, HTTP_500, HTTP_500) as gateway,
        closing(sms_channel(gateway)) as channel,
    ):
        drain_until_settled(drain_with(sqlite_db, channel), sqlite_db, settled.notification_id)

    row = notification(sqlite_db, settled.notification_id)
    ((_, message_id),) = gateway.answered
    assert row.status is NotificationStatus.SENT
    assert row.gateway_message_id == message_id
    assert row.attempts == 4
    assert gateway.count() == 4
    events = event_names(sqlite_db, settled.order_id)
    assert events.count("notification_attempt_failed") == 3
    assert events.count("notification_sent") == 1


@pytest.mark.slow
def test_a_gateway_that_always_fails_ends_failed_with_the_error(db: Database) -> None:
    policy = RetryPolicy(intervals=(1,), lease_seconds=30)
    settled = a_settled_payment(db)
    with a_gateway(*[HTTP_500] * 10) as gateway, closing(sms_channel(gateway)) as channel:
        drain = drain_with(db, channel, policy)
        drain_until_settled(drain, db, settled.notification_id)

        assert drain.drain_due() == []
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert row.status is NotificationStatus.FAILED
    assert row.attempts == policy.max_attempts == requests == 2
    assert row.last_error is not None
    assert "HTTP 500" in row.last_error
    assert row.gateway_message_id is None
    assert event_names(db, settled.order_id)[-1] == "notification_failed"


def test_a_refused_message_fails_at_once_without_retrying(db: Database) -> None:
    refusal = at_answer(403, "InvalidPhoneNumber", "None")
    settled = a_settled_payment(db)
    with a_gateway(refusal) as gateway, closing(sms_channel(gateway)) as channel:
        (result,) = drain_with(db, channel).drain_due()
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert result.outcome is Delivery.FAILED
    assert (row.status, row.attempts, requests) == (NotificationStatus.FAILED, 1, 1)
    assert row.last_error is not None
    assert "InvalidPhoneNumber" in row.last_error


# --- Timeouts -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_gateway_that_never_answers_times_out_and_the_attempt_is_retried(
    db: Database,
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HANG) as gateway, closing(sms_channel(gateway, timeout=1)) as channel:
        started = time.monotonic()
        (result,) = drain_with(db, channel).drain_due()
        elapsed = time.monotonic() - started

    row = notification(db, settled.notification_id)
    assert elapsed < 4
    assert result.outcome is Delivery.RETRY
    assert (row.status, row.attempts) == (NotificationStatus.PENDING, 1)
    assert row.last_error is not None
    assert "did not answer in time" in row.last_error


@pytest.mark.slow
def test_a_gateway_that_never_answers_on_the_last_try_fails_the_notification(
    db: Database,
) -> None:
    last_try_only = RetryPolicy(intervals=(), lease_seconds=30)  # the first try is the last
    settled = a_settled_payment(db)
    with a_gateway(HANG) as gateway, closing(sms_channel(gateway, timeout=1)) as channel:
        started = time.monotonic()
        (result,) = drain_with(db, channel, last_try_only).drain_due()
        elapsed = time.monotonic() - started

    row = notification(db, settled.notification_id)
    assert elapsed < 4
    assert result.outcome is Delivery.FAILED
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 1)
    assert row.last_error is not None
    assert "did not answer in time" in row.last_error


# --- Work horses ----------------------------------------------------------------------------


def test_compiling_ahead_changes_nothing_in_the_database(any_db: Database) -> None:
    settled = a_settled_payment(any_db)
    before = count_rows(any_db)

    with any_db.transaction() as conn:
        compile_ahead(conn, FAST)

    assert count_rows(any_db) == before
    row = notification(any_db, settled.notification_id)
    assert (row.status, row.attempts) == (NotificationStatus.PENDING, 0)


def test_after_compiling_ahead_a_delivery_compiles_no_statement_of_its_own(db: Database) -> None:
    # What a forked work horse inherits: every statement its job runs is already compiled.
    settled = a_settled_payment(db, target=LOG_TARGET)
    with db.transaction() as conn:
        compile_ahead(conn, FAST)
    compiled = db.engine._compiled_cache
    assert compiled is not None
    before = set(compiled)

    result = deliver(
        db, serving(LogChannel()), settled.notification_id, merchant_name=MERCHANT, policy=FAST
    )

    assert result.outcome is Delivery.SENT
    assert set(compiled) == before
