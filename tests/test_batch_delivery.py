"""An RQ job delivers a batch of rows: claimed in groups right before their sends, recorded in
one statement per group, each row through its own channel, one message per row.

Real Postgres (and SQLite where noted); the SMS gateway is a local HTTP server.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.notify import delivery, in_flight
from orderpay.notify.channels import LogChannel, WebhookChannel
from orderpay.notify.delivery import Delivery, RetryPolicy
from orderpay.notify.in_flight import deliver_batch
from orderpay.notify.messages import order_reference
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.outbox import claim_among
from tests.redis_helpers import (
    HANG,
    LOG_TARGET,
    MERCHANT,
    WEBHOOK_SECRET,
    WorkerProcess,
    a_gateway,
    a_settled_payment,
    at_success,
    event_names,
    notification,
    notification_rows,
    redis_url_fixture,  # noqa: F401
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    sms_env,
    wait_until,
    worker_processes_fixture,  # noqa: F401
)

FAST = RetryPolicy((1, 1, 1), lease_seconds=30, send_seconds=5)
UNPARSABLE_WEBHOOK = NotifyTarget("webhook", "http://merchant.example:abc/hooks/orderpay")
StartWorker = Callable[..., WorkerProcess]


def references_sent(forms: list[dict[str, str]]) -> Counter[str]:
    return Counter(
        reference
        for form in forms
        for reference in re.findall(r"order ([0-9A-F]{8})", form["message"])
    )


@pytest.mark.slow
def test_a_batch_sends_each_row_once_with_its_sent_event(any_db: Database) -> None:
    settled = [a_settled_payment(any_db) for _ in range(5)]
    with a_gateway() as gateway, closing(sms_channel(gateway)) as channel:
        batch = deliver_batch(
            any_db,
            serving(channel),
            [s.notification_id for s in settled],
            merchant_name=MERCHANT,
            policy=FAST,
        )
        forms = gateway.sms_forms()
        answered = {message_id for _, message_id in gateway.answered}

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 5
    assert batch.left == []
    assert references_sent(forms) == Counter({order_reference(s.order_id): 1 for s in settled})
    rows = [notification(any_db, s.notification_id) for s in settled]
    assert {(row.status, row.attempts, row.lease_until) for row in rows} == {
        (NotificationStatus.SENT, 1, None)
    }
    assert {row.gateway_message_id for row in rows} == answered
    for s in settled:
        assert event_names(any_db, s.order_id).count("notification_sent") == 1


def test_a_group_claim_takes_at_most_its_limit_lowest_ids_first(any_db: Database) -> None:
    ids = [a_settled_payment(any_db).notification_id for _ in range(5)]

    with any_db.transaction() as conn:
        claimed = claim_among(conn, list(reversed(ids)), 2, timedelta(seconds=30), utcnow())

    assert [attempt.notification_id for attempt in claimed] == ids[:2]
    assert [notification(any_db, nid).attempts for nid in ids] == [1, 1, 0, 0, 0]


@pytest.mark.slow
def test_a_batch_through_a_fast_channel_is_claimed_and_recorded_in_a_few_statements(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Groups are sized by the pace of the sends: on a loaded machine even a log line can look
    # slow. A long group time makes the size depend on the batch, not on the machine's load.
    monkeypatch.setattr(delivery, "GROUP_SECONDS", 60.0)
    ids = [a_settled_payment(db, target=LOG_TARGET).notification_id for _ in range(30)]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        batch = deliver_batch(db, serving(LogChannel()), ids, merchant_name=MERCHANT, policy=FAST)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 30
    # A claim and a record per group: a first group of one row (the channel's pace is not known
    # yet), then groups sized by it; row by row it would take 60 statements.
    assert len(statements) <= 6, [statement.split()[:3] for statement in statements]


def test_each_sms_of_a_batch_is_claimed_and_recorded_on_its_own(db: Database) -> None:
    ids = [a_settled_payment(db).notification_id for _ in range(6)]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    with a_gateway() as gateway, closing(sms_channel(gateway)) as channel:
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            batch = deliver_batch(db, serving(channel), ids, merchant_name=MERCHANT, policy=FAST)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        forms = gateway.sms_forms()

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 6
    assert len(forms) == 6
    # A fast gateway would let a group grow; a message that reaches the customer is recorded
    # right after its send instead, so a killed worker can send at most one of them again.
    assert len(statements) >= 2 * 6, [statement.split()[:3] for statement in statements]


def test_each_row_of_a_mixed_batch_goes_through_its_own_channel_or_waits_for_one(
    db: Database,
) -> None:
    by_sms = a_settled_payment(db)
    by_log = a_settled_payment(db, target=LOG_TARGET)
    by_webhook = a_settled_payment(db, target=NotifyTarget("webhook", "http://127.0.0.1:9/x"))
    ids = [by_sms.notification_id, by_log.notification_id, by_webhook.notification_id]
    with a_gateway() as gateway, closing(sms_channel(gateway)) as channel:
        # This worker has sms and log, not webhook.
        batch = deliver_batch(
            db, serving(channel, LogChannel()), ids, merchant_name=MERCHANT, policy=FAST
        )
        forms = gateway.sms_forms()

    outcomes = {r.notification_id: r.outcome for r in batch.results}
    assert outcomes == {ids[0]: Delivery.SENT, ids[1]: Delivery.SENT, ids[2]: Delivery.HELD}
    assert references_sent(forms) == Counter({order_reference(by_sms.order_id): 1})
    assert notification(db, ids[1]).gateway_message_id == f"log-{ids[1]}"
    held = notification(db, ids[2])
    assert (held.status, held.attempts, held.enqueued_at) == (NotificationStatus.PENDING, 0, None)
    assert "webhook channel" in (held.last_error or "")


@pytest.mark.slow
def test_an_unexpected_error_on_one_row_fails_only_that_row(any_db: Database) -> None:
    first, broken, last = (
        a_settled_payment(any_db),
        a_settled_payment(any_db, target=UNPARSABLE_WEBHOOK),
        a_settled_payment(any_db),
    )
    ids = [first.notification_id, broken.notification_id, last.notification_id]
    with (
        a_gateway() as gateway,
        closing(sms_channel(gateway)) as sms,
        closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as webhook,
    ):
        batch = deliver_batch(
            any_db, serving(sms, webhook), ids, merchant_name=MERCHANT, policy=FAST
        )
        requests = gateway.count()

    outcomes = {r.notification_id: r.outcome for r in batch.results}
    assert outcomes == {ids[0]: Delivery.SENT, ids[1]: Delivery.RETRY, ids[2]: Delivery.SENT}
    assert requests == 2
    failed = notification(any_db, ids[1])
    assert (failed.status, failed.attempts, failed.lease_until) == (
        NotificationStatus.PENDING,
        1,
        None,
    )
    assert "InvalidURL" in (failed.last_error or "")
    assert event_names(any_db, broken.order_id).count("notification_attempt_failed") == 1


@pytest.mark.slow
def test_a_gateway_slower_than_the_lease_with_two_workers_sends_nothing_twice(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group of two rows whose second send would end after the group's lease: worker B
    # could claim it once the lease is over and send it too. Worker A gives it back instead.
    monkeypatch.setattr(in_flight, "FIRST_GROUP", 2)
    policy = RetryPolicy((1,), lease_seconds=2, send_seconds=1.5)
    settled = [a_settled_payment(db) for _ in range(3)]
    ids = [s.notification_id for s in settled]
    with a_gateway() as gateway:
        gateway.delay = 1.2
        with closing(sms_channel(gateway, timeout=1.5)) as a, closing(sms_channel(gateway)) as b:
            worker_a = threading.Thread(
                target=deliver_batch,
                args=(db, serving(a), ids),
                kwargs={"merchant_name": MERCHANT, "policy": policy},
            )
            worker_a.start()
            deadline = time.monotonic() + 20
            while worker_a.is_alive() or any(
                notification(db, nid).status is NotificationStatus.PENDING for nid in ids
            ):
                assert time.monotonic() < deadline, "the rows were not all sent"
                deliver_batch(db, serving(b), ids, merchant_name=MERCHANT, policy=policy)
                time.sleep(0.1)  # worker B polls, as a running drain would
            worker_a.join()
        forms = gateway.sms_forms()

    assert references_sent(forms) == Counter({order_reference(s.order_id): 1 for s in settled})
    assert {row["status"] for row in notification_rows(db)} == {"sent"}


@pytest.fixture
def crashing_gateway() -> Iterator[Any]:
    # The first message is answered at once, the next three held until the worker is killed.
    with a_gateway(at_success("ATXid_first"), HANG, HANG, HANG) as gateway:
        yield gateway


@pytest.mark.slow
def test_a_worker_killed_with_sends_in_flight_leaves_them_to_be_sent_again_and_no_other(
    pg_url: str,
    db: Database,
    redis_url: str,
    worker_processes: StartWorker,
    crashing_gateway: Any,
) -> None:
    settled = [a_settled_payment(db) for _ in range(4)]
    gateway = crashing_gateway
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "ORDERPAY_RELAY_LOST_AFTER_SECONDS": "1",
        **sms_env(
            gateway.url, ORDERPAY_NOTIFY_LEASE_SECONDS="1", ORDERPAY_NOTIFY_TIMEOUT_SECONDS="1"
        ),
    }
    doomed = worker_processes(env)
    wait_until(lambda: gateway.hanging == 3, timeout=30, what="the gateway to hold 3 requests")
    wait_until(
        lambda: sorted(row["status"] for row in notification_rows(db)).count("sent") == 1,
        timeout=30,
        what="the answered message to be recorded",
    )
    doomed.kill_group()
    left = {row["id"]: row["status"] for row in notification_rows(db)}
    successor = worker_processes(env)
    wait_until(
        lambda: {row["status"] for row in notification_rows(db)} == {"sent"},
        timeout=30,
        what="every row to be sent",
    )
    exit_code = successor.terminate()
    forms = gateway.sms_forms()

    # The batch was one job: one row sent and recorded, three in flight when the worker died.
    assert sorted(left.values()) == ["pending", "pending", "pending", "sent"]
    in_flight = [s for s in settled if left[s.notification_id] == "pending"]
    assert references_sent(forms) == Counter(
        {order_reference(s.order_id): 1 for s in settled}
        | {order_reference(s.order_id): 2 for s in in_flight}
    )
    assert exit_code == 0, successor.output()
