"""Edges of notification delivery that each once sent a message wrongly, or never again.

- A row is sent through the channel written on it, never through whatever the worker has.
- The database drain claims one row right before sending it: a second drain that starts after
  a lease ran out never sends a row the first is still about to send.
- The relay never pushes again a job RQ still holds, and does push one RQ lost.
- Any exception while sending counts as a failed attempt: retried, then `failed`.

Real Postgres and Redis; the SMS gateway is a local HTTP server; time moves with
orderpay.clock.advance, never with a sleep.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest

from orderpay import clock
from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.errors import QueueUnavailable
from orderpay.jobs import QUEUE_NAME, Relay, connect_redis, make_queue, row_job_key
from orderpay.notify.channels import WebhookChannel
from orderpay.notify.delivery import Delivery, RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.notify.messages import order_reference
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from tests.conftest import Cli
from tests.live_server import CLOSED_REDIS_URL
from tests.redis_helpers import (
    LOG_TARGET,
    MERCHANT,
    WEBHOOK_SECRET,
    WorkerProcess,
    a_gateway,
    a_settled_payment,
    in_process_worker_fixture,  # noqa: F401
    notification,
    notification_rows,
    queued_rows,
    redis_client,
    redis_url_fixture,  # noqa: F401
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    sms_env,
    worker_processes_fixture,  # noqa: F401
)

StartWorker = Callable[..., WorkerProcess]
QUEUE_KEY = f"rq:queue:{QUEUE_NAME}"
# A merchant URL httpx refuses to parse (httpx.InvalidURL, not one of its transport errors):
# the channel raises something that is neither GatewayUnavailable nor GatewayRejected.
UNPARSABLE_WEBHOOK = NotifyTarget("webhook", "http://merchant.example:abc/hooks/orderpay")


def references_sent(forms: list[dict[str, str]]) -> Counter[str]:
    """How many messages the gateway received per order reference."""
    return Counter(
        reference
        for form in forms
        for reference in re.findall(r"order ([0-9A-F]{8})", form["message"])
    )


# --- Each row through its own channel --------------------------------------------------------


def test_a_worker_without_the_rows_channel_leaves_it_pending_with_the_reason(
    cli: Cli, db: Database, in_process_worker: None
) -> None:
    settled = a_settled_payment(db)  # queued for sms
    with a_gateway() as gateway:
        # The worker knows where the gateway is, but has no SMS account: it only has `log`.
        outcome = cli(
            "worker", "--burst", ORDERPAY_NOTIFY_CHANNEL="log", ORDERPAY_SMS_URL=gateway.url
        )
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert outcome.exit_code == 0, outcome.stderr
    assert (row.status, row.attempts, row.gateway_message_id) == (
        NotificationStatus.PENDING,
        0,
        None,
    )
    assert row.last_error is not None
    assert "sms channel" in row.last_error
    assert requests == 0


@pytest.mark.slow
def test_an_rq_worker_without_the_rows_channel_leaves_it_pending_with_the_reason(
    cli: Cli, db: Database, redis_url: str, in_process_worker: None
) -> None:
    settled = a_settled_payment(db)  # queued for sms
    with a_gateway() as gateway:
        outcome = cli(
            "worker",
            "--burst",
            "--worker-class",
            "simple",
            REDIS_URL=redis_url,
            ORDERPAY_NOTIFY_CHANNEL="log",
            ORDERPAY_SMS_URL=gateway.url,
        )
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert outcome.exit_code == 0, outcome.stderr
    assert (row.status, row.attempts, row.gateway_message_id) == (
        NotificationStatus.PENDING,
        0,
        None,
    )
    assert row.last_error is not None
    assert "sms channel" in row.last_error
    assert requests == 0


def test_switching_the_channel_to_log_still_sends_rows_queued_for_sms_by_sms(
    cli: Cli, db: Database, in_process_worker: None
) -> None:
    queued_for_sms = [a_settled_payment(db) for _ in range(2)]
    # The operator switches ORDERPAY_NOTIFY_CHANNEL to log: new rows are queued for log.
    queued_for_log = a_settled_payment(db, target=LOG_TARGET)
    with a_gateway() as gateway:
        outcome = cli("worker", "--burst", **sms_env(gateway.url, ORDERPAY_NOTIFY_CHANNEL="log"))
        forms = gateway.sms_forms()
        message_ids = {message_id for _, message_id in gateway.answered}

    assert outcome.exit_code == 0, outcome.stderr
    assert references_sent(forms) == Counter(
        {order_reference(settled.order_id): 1 for settled in queued_for_sms}
    )
    sms_rows = [notification(db, settled.notification_id) for settled in queued_for_sms]
    assert {row.status for row in sms_rows} == {NotificationStatus.SENT}
    assert {row.gateway_message_id for row in sms_rows} == message_ids
    log_row = notification(db, queued_for_log.notification_id)
    assert log_row.status is NotificationStatus.SENT
    assert log_row.gateway_message_id == f"log-{log_row.id}"


# --- The database drain claims each row right before its send --------------------------------


@pytest.mark.slow
def test_a_drain_started_after_a_lease_ran_out_never_sends_a_row_another_is_about_to_send(
    pg_url: str, db: Database, worker_processes: StartWorker
) -> None:
    order_ids = [a_settled_payment(db).order_id for _ in range(5)]
    with a_gateway() as gateway:
        gateway.delay = 0.8
        env = {
            "DATABASE_URL": pg_url,
            **sms_env(
                gateway.url,
                ORDERPAY_NOTIFY_LEASE_SECONDS="2",
                ORDERPAY_NOTIFY_TIMEOUT_SECONDS="2",
                # One send in flight at a time: each claimed right before its send.
                ORDERPAY_SMS_MAX_IN_FLIGHT="1",
            ),
        }
        worker_a = worker_processes(env, "--burst")
        # The gateway has answered three messages and holds the fourth: at least 2.4 s after
        # worker A's first claim, whose 2 s lease has run out.
        gateway.recorder.wait_for(4, timeout=30)
        channel = sms_channel(gateway, timeout=2)
        with closing(channel):
            worker_b = Drain(db, serving(channel), RetryPolicy((1, 1, 1, 1, 1), 2), MERCHANT)
            b_results = worker_b.drain_due()
        a_exit = worker_a.process.wait(30)
        forms = gateway.sms_forms()

    assert a_exit == 0, worker_a.output()
    assert references_sent(forms) == Counter({order_reference(oid): 1 for oid in order_ids})
    assert len(forms) == 5
    assert [result.outcome for result in b_results] == [Delivery.SENT]  # one A had not claimed
    rows = notification_rows(db)
    assert {(row["status"], row["attempts"]) for row in rows} == {("sent", 1)}


# --- The relay and the jobs RQ holds ---------------------------------------------------------


def relay_due(db: Database, redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        Relay(db, make_queue(redis), (1,), lost_after=timedelta(seconds=60)).relay_due()
    finally:
        redis.close()


def queue_length(redis_url: str) -> int:
    """How many rows the jobs in the queue hold (a job holds a batch of rows)."""
    with redis_client(redis_url) as redis:
        return len(queued_rows(redis))


def test_a_backlog_waiting_in_rq_is_never_pushed_again_however_long_it_waits(
    db: Database, redis_url: str
) -> None:
    for _ in range(3):
        a_settled_payment(db)
    relay_due(db, redis_url)
    lengths = [queue_length(redis_url)]

    for _ in range(4):  # no worker: every pass finds the rows handed out over lost_after ago
        clock.advance(timedelta(seconds=61))
        relay_due(db, redis_url)
        lengths.append(queue_length(redis_url))

    assert lengths == [3, 3, 3, 3, 3]


def test_jobs_lost_by_a_flushed_redis_are_pushed_again_once_lost_after_has_passed(
    db: Database, redis_url: str
) -> None:
    for _ in range(3):
        a_settled_payment(db)
    relay_due(db, redis_url)
    with redis_client(redis_url) as redis:
        handed_out = len(queued_rows(redis))
        redis.flushdb()  # the queue and every job hash are gone

    relay_due(db, redis_url)
    before_lost_after = queue_length(redis_url)
    clock.advance(timedelta(seconds=61))
    relay_due(db, redis_url)
    after_lost_after = queue_length(redis_url)

    assert (handed_out, before_lost_after, after_lost_after) == (3, 0, 3)


def handed_to(redis_url: str, notification_id: int) -> str:
    with redis_client(redis_url) as redis:
        name = redis.get(row_job_key(notification_id))
    assert name is not None
    return bytes(name).decode()


def test_a_job_a_dying_worker_took_from_the_queue_is_pushed_again_once_lost_after_has_passed(
    db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)
    relay_due(db, redis_url)
    first_job = handed_to(redis_url, settled.notification_id)
    with redis_client(redis_url) as redis:
        queue = make_queue(redis)
        # What RQ's dequeue does (BLMOVE into the worker's intermediate list); the worker then
        # dies before it starts the job, which still says `queued`.
        redis.lmove(queue.key, queue.intermediate_queue_key)
        status = redis.hget(f"rq:job:{first_job}", "status")

    clock.advance(timedelta(seconds=61))
    relay_due(db, redis_url)

    with redis_client(redis_url) as redis:
        rows = queued_rows(redis)
    assert status == b"queued"
    assert rows == [settled.notification_id]
    assert handed_to(redis_url, settled.notification_id) != first_job


def test_a_job_waiting_in_rqs_scheduled_registry_is_not_pushed_again(
    db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)
    relay_due(db, redis_url)
    job = handed_to(redis_url, settled.notification_id)
    with redis_client(redis_url) as redis:
        queue = make_queue(redis)
        # Where RQ's Retry parks a job until its next try.
        redis.lrem(queue.key, 0, job)
        redis.zadd(queue.scheduled_job_registry.key, {job: time.time() + 600})

    clock.advance(timedelta(seconds=61))
    relay_due(db, redis_url)

    assert queue_length(redis_url) == 0
    assert handed_to(redis_url, settled.notification_id) == job


def test_a_relay_whose_redis_is_down_leaves_its_rows_as_they_were(db: Database) -> None:
    settled = a_settled_payment(db)
    redis = connect_redis(CLOSED_REDIS_URL)
    relay = Relay(db, make_queue(redis), (1,), lost_after=timedelta(seconds=60))

    with pytest.raises(QueueUnavailable):
        relay.relay_due()

    redis.close()
    assert notification(db, settled.notification_id).enqueued_at is None


def test_rows_a_down_redis_did_not_take_are_pushed_as_soon_as_it_is_back(
    db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)
    down = connect_redis(CLOSED_REDIS_URL)
    with pytest.raises(QueueUnavailable):
        Relay(db, make_queue(down), (1,), lost_after=timedelta(seconds=60)).relay_due()
    down.close()

    relay_due(db, redis_url)

    assert queue_length(redis_url) == 1
    assert notification(db, settled.notification_id).enqueued_at is not None


# --- Any exception is a failed attempt -------------------------------------------------------

ONE_RETRY = RetryPolicy((1,), 30)


@pytest.fixture
def unparsable_webhook() -> Iterator[WebhookChannel]:
    with closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as channel:
        yield channel


def test_an_unexpected_error_while_sending_is_a_failed_attempt_retried_after_the_backoff(
    db: Database, unparsable_webhook: WebhookChannel
) -> None:
    settled = a_settled_payment(db, target=UNPARSABLE_WEBHOOK)
    drain = Drain(db, serving(unparsable_webhook), ONE_RETRY, MERCHANT)

    first = drain.drain_due()
    row = notification(db, settled.notification_id)
    again_at_once = drain.drain_due()

    assert [result.outcome for result in first] == [Delivery.RETRY]
    assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.PENDING, 1, None)
    assert row.last_error is not None
    assert "InvalidURL" in row.last_error
    assert utcnow() < row.due_at <= utcnow() + timedelta(seconds=1)
    assert again_at_once == []  # not due before the backoff


def test_an_unexpected_error_on_the_last_try_marks_the_notification_failed(
    db: Database, unparsable_webhook: WebhookChannel
) -> None:
    settled = a_settled_payment(db, target=UNPARSABLE_WEBHOOK)
    drain = Drain(db, serving(unparsable_webhook), ONE_RETRY, MERCHANT)
    drain.drain_due()

    clock.advance(timedelta(seconds=2))
    last = drain.drain_due()

    row = notification(db, settled.notification_id)
    assert [result.outcome for result in last] == [Delivery.FAILED]
    assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.FAILED, 2, None)
    assert row.last_error is not None
    assert "InvalidURL" in row.last_error


def test_a_notification_failed_by_an_unexpected_error_is_listed_and_retried_by_the_operator(
    cli: Cli, db: Database, unparsable_webhook: WebhookChannel
) -> None:
    settled = a_settled_payment(db, target=UNPARSABLE_WEBHOOK)
    drain = Drain(db, serving(unparsable_webhook), ONE_RETRY, MERCHANT)
    drain.drain_due()
    clock.advance(timedelta(seconds=2))
    drain.drain_due()

    listed: list[dict[str, Any]] = cli.items("notification", "list", "--status", "failed")
    retried = cli("notification", "retry", "--all-failed", "--yes")

    assert [(item["id"], item["status"]) for item in listed] == [
        (settled.notification_id, "failed")
    ]
    assert "InvalidURL" in (listed[0]["last_error"] or "")
    assert retried.exit_code == 0, retried.stderr
    row = notification(db, settled.notification_id)
    assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.PENDING, 0, None)
    assert row.due_at <= utcnow()
