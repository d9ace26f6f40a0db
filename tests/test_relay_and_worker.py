"""The relay, the RQ job and `orderpay worker`: one message per settled payment, whatever repeats.

Real Postgres and Redis throughout: a test db number on the shared Redis, or a private
redis-server to stop and start again. The SMS gateway is a local HTTP server.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import text, update

from orderpay import jobs
from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.errors import QueueUnavailable
from orderpay.jobs import (
    QUEUE_NAME,
    Relay,
    connect_redis,
    make_queue,
    row_job_key,
    send_notification,
    send_notifications,
)
from orderpay.notify import delivery
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import OUTBOX_CHANNEL
from orderpay.store.schema import notifications
from tests.builders import AMA, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.http_recorder import Answer
from tests.live_server import SECRET, listener_client, listener_settings, signed
from tests.redis_helpers import (
    HANG,
    SMS_API_KEY,
    PrivateRedis,
    WorkerProcess,
    a_gateway,
    a_settled_payment,
    event_names,
    in_process_worker_fixture,  # noqa: F401
    notification,
    notification_rows,
    private_redis_fixture,  # noqa: F401
    queued_jobs,
    queued_rows,
    redis_client,
    redis_url_fixture,  # noqa: F401
    run_orderpay,
    shared_gateway_server_fixture,  # noqa: F401
    sms_env,
    success_callback,
    wait_for_status,
    wait_until,
    worker_processes_fixture,  # noqa: F401
)

HTTP_500 = Answer(500, b'{"error": "internal"}')
CALLBACK = "/api/webhooks/momo/"
StartWorker = Callable[..., WorkerProcess]
# In-process jobs (no work horse per job) keep the slower tests quick; the default fork class
# is run by the burst, SIGTERM, outage and crash tests.
SIMPLE = ("--worker-class", "simple")


def relay(db: Database, url: str, *, lost_after: timedelta = timedelta(seconds=60)) -> int:
    redis = connect_redis(url)
    try:
        return Relay(db, make_queue(redis), (1, 1, 1, 1, 1), lost_after=lost_after).relay_due()
    finally:
        redis.close()


def handed_to(redis: Redis, notification_id: int) -> str:
    """The id of the job the relay last handed this row to."""
    name = redis.get(row_job_key(notification_id))
    assert name is not None
    return bytes(name).decode()


def run_jobs(url: str) -> None:
    """An RQ SimpleWorker in burst mode, in this process, on orderpay's queue."""
    with redis_client(url) as redis:
        SimpleWorker([make_queue(redis)], connection=redis, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING"
        )


def everything_in(url: str) -> bytes:
    """Every key and value in the Redis db (job data decompressed), for searching."""
    parts: list[bytes] = []
    with redis_client(url) as redis:
        for key in redis.scan_iter():
            parts.append(key)
            kind = redis.type(key)
            if kind == b"hash":
                for name, value in redis.hgetall(key).items():
                    if name in (b"data", b"exc_info"):
                        value = zlib.decompress(value)
                    parts += [name, value]
            elif kind == b"list":
                parts += redis.lrange(key, 0, -1)
            elif kind in (b"set", b"zset"):
                parts += list(redis.zrange(key, 0, -1) if kind == b"zset" else redis.smembers(key))
            elif kind == b"string":
                parts.append(redis.get(key) or b"")
    return b"\n".join(parts)


def a_pending_charge(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    order = an_order(db)
    payment = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment
    return order.id, payment.id


# --- The relay and the job ------------------------------------------------------------------


def test_the_job_is_enqueued_as_json_with_the_notification_id_only(
    db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)

    assert relay(db, redis_url) == 1

    with redis_client(redis_url) as redis:
        data = redis.hget(f"rq:job:{handed_to(redis, settled.notification_id)}", "data")
    assert data is not None
    function, instance, args, kwargs = json.loads(zlib.decompress(data))
    assert function == "orderpay.jobs.send_notifications"
    assert (instance, args, kwargs) == (None, [[settled.notification_id]], {})


def test_nothing_in_redis_names_the_customers_phone_or_a_secret(
    db: Database, redis_url: str, in_process_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_settled_payment(db)
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": db.url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)
        relay(db, redis_url)

        run_jobs(redis_url)

        assert gateway.count() == 1
    stored = everything_in(redis_url)
    assert AMA.encode() not in stored
    assert AMA.removeprefix("+").encode() not in stored
    assert SMS_API_KEY.encode() not in stored


def test_the_relay_marks_rows_enqueued_so_a_second_relay_enqueues_nothing(
    db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)

    first, second = relay(db, redis_url), relay(db, redis_url)

    row = notification(db, settled.notification_id)
    assert (first, second) == (1, 0)
    assert row.enqueued_at is not None
    assert row.status is NotificationStatus.PENDING
    with redis_client(redis_url) as redis:
        assert queued_rows(redis) == [settled.notification_id]


def test_a_running_relay_holds_rows_back_while_a_job_waits_for_every_worker(
    db: Database, redis_url: str
) -> None:
    first = a_settled_payment(db)
    with redis_client(redis_url) as redis:
        relay = Relay(db, make_queue(redis), (1,), lost_after=timedelta(seconds=60))
        relay.relay_due(hold_back=True)  # no worker yet: one waiting job is enough
        later = [a_settled_payment(db) for _ in range(2)]

        held = relay.relay_due(hold_back=True)

        assert (held, relay.held_back) == (0, True)
        assert queued_rows(redis) == [first.notification_id]
        assert [notification(db, s.notification_id).enqueued_at for s in later] == [None, None]


def test_a_held_back_relay_hands_the_waiting_rows_out_in_one_job_once_the_queue_drains(
    db: Database, redis_url: str
) -> None:
    a_settled_payment(db)
    with redis_client(redis_url) as redis:
        queue = make_queue(redis)
        relay = Relay(db, queue, (1,), lost_after=timedelta(seconds=60))
        relay.relay_due(hold_back=True)
        later = [a_settled_payment(db) for _ in range(3)]
        relay.relay_due(hold_back=True)
        queue.empty()  # a worker took the waiting job

        moved = relay.relay_due(hold_back=True)

        assert (moved, relay.held_back) == (3, False)
        assert list(queued_jobs(redis).values()) == [[s.notification_id for s in later]]


def test_a_job_an_idle_worker_starts_while_the_relay_hands_it_out_sends_the_message_at_once(
    db: Database, redis_url: str, in_process_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = a_settled_payment(db)
    push = jobs.enqueue_batches

    def push_and_start_at_once(*args: Any, **kwargs: Any) -> int:
        # An idle worker takes the job the moment it reaches Redis, inside the relay's step.
        pushed = push(*args, **kwargs)
        run_jobs(redis_url)
        return pushed

    monkeypatch.setattr(jobs, "enqueue_batches", push_and_start_at_once)
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": db.url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)

        relay(db, redis_url)

        requests = gateway.count()
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


@pytest.mark.slow
def test_a_relay_that_suspects_a_lost_job_still_queued_in_rq_pushes_nothing_more(
    db: Database, redis_url: str, in_process_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": db.url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)
        # A relay that treats every handed-out row as lost asks RQ, which still holds the job.
        relayed = [relay(db, redis_url, lost_after=timedelta(0)) for _ in range(2)]
        with redis_client(redis_url) as redis:
            jobs = list(redis.scan_iter("rq:job:*"))
            queued = redis.llen(f"rq:queue:{QUEUE_NAME}")
            handed = handed_to(redis, settled.notification_id)

        run_jobs(redis_url)

        requests = gateway.count()
    assert relayed == [1, 0]
    assert jobs == [f"rq:job:{handed}".encode()]
    assert queued == 1
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


@pytest.mark.slow
def test_a_re_run_job_sends_nothing_more(
    db: Database, redis_url: str, in_process_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": db.url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)
        relay(db, redis_url)
        run_jobs(redis_url)
        with redis_client(redis_url) as redis:
            make_queue(redis).enqueue(
                send_notification,
                settled.notification_id,
                job_id="the-same-job-again",
            )

        run_jobs(redis_url)

        requests = gateway.count()
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT
    assert event_names(db, settled.order_id).count("notification_sent") == 1


@pytest.mark.slow
def test_one_message_per_settled_payment_across_a_replayed_callback_a_double_relay_and_a_rerun(
    pg_url: str,
    db: Database,
    redis_url: str,
    in_process_worker: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order_id, payment_id = a_pending_charge(db)
    body = success_callback(order_id, payment_id)
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": pg_url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)
        with listener_client(
            listener_settings(pg_url, REDIS_URL=redis_url, ORDERPAY_NOTIFY_CHANNEL="sms")
        ) as client:
            answers = [
                client.post(CALLBACK, content=body, headers=signed(body, SECRET)).json()["status"]
                for _ in range(2)
            ]
        relayed = [relay(db, redis_url, lost_after=timedelta(0)) for _ in range(2)]
        run_jobs(redis_url)
        (row,) = notification_rows(db)
        with redis_client(redis_url) as redis:
            make_queue(redis).enqueue(send_notifications, [row["id"]], job_id="the-same-job-again")
        run_jobs(redis_url)

        requests = gateway.count()
    assert answers == ["processed", "duplicate"]
    assert relayed == [1, 0]
    assert requests == 1
    assert notification(db, row["id"]).status is NotificationStatus.SENT


# --- `orderpay worker --burst` --------------------------------------------------------------


@pytest.mark.slow
def test_worker_burst_with_redis_relays_sends_and_exits_0(
    pg_url: str, db: Database, redis_url: str
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        env = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, **sms_env(gateway.url)}

        done = run_orderpay(env, "worker", "--burst")

        requests = gateway.count()
    assert done.returncode == 0, done.stderr
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_worker_burst_without_redis_delivers_from_the_database_and_exits_0(
    cli: Cli, db: Database, in_process_worker: None
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        outcome = cli("worker", "--burst", **sms_env(gateway.url))

        requests = gateway.count()
    assert outcome.exit_code == 0, outcome.stderr
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_worker_burst_with_nothing_due_exits_0_in_both_modes(
    cli: Cli, redis_url: str, in_process_worker: None
) -> None:
    embedded = cli("worker", "--burst")
    with_redis = cli("worker", "--burst", "--worker-class", "simple", REDIS_URL=redis_url)

    assert (embedded.exit_code, with_redis.exit_code) == (0, 0), (embedded, with_redis)


def test_worker_exits_7_when_redis_is_down_and_changes_nothing(
    cli: Cli, db: Database, private_redis: PrivateRedis, in_process_worker: None
) -> None:
    a_settled_payment(db)
    private_redis.stop()
    before = count_rows(db), notification_rows(db)

    outcome = cli("worker", "--burst", REDIS_URL=private_redis.url)

    assert outcome.exit_code == 7
    assert "[queue_unavailable]" in outcome.stderr
    assert (count_rows(db), notification_rows(db)) == before


# --- A Redis outage -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_callback_taken_while_redis_is_down_is_delivered_once_redis_is_back(
    cli: Cli, pg_url: str, db: Database, private_redis: PrivateRedis, in_process_worker: None
) -> None:
    order_id, payment_id = a_pending_charge(db)
    private_redis.stop()
    body = success_callback(order_id, payment_id)
    settings = listener_settings(pg_url, REDIS_URL=private_redis.url, ORDERPAY_NOTIFY_CHANNEL="sms")
    with listener_client(settings) as client:
        answer = client.post(CALLBACK, content=body, headers=signed(body, SECRET))
    with pytest.raises(QueueUnavailable):
        relay(db, private_redis.url)
    (waiting,) = notification_rows(db)

    private_redis.start()
    with a_gateway() as gateway:
        outcome = cli(
            "worker",
            "--burst",
            "--worker-class",
            "simple",
            REDIS_URL=private_redis.url,
            **sms_env(gateway.url),
        )
        requests = gateway.count()

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"
    assert (waiting["status"], waiting["enqueued_at"], waiting["attempts"]) == ("pending", None, 0)
    assert outcome.exit_code == 0, outcome.stderr
    assert requests == 1
    assert notification(db, waiting["id"]).status is NotificationStatus.SENT


@pytest.mark.slow
def test_a_running_worker_rides_out_a_redis_outage_and_sends_the_message_once(
    pg_url: str, db: Database, private_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    order_id, payment_id = a_pending_charge(db)
    body = success_callback(order_id, payment_id)
    with a_gateway() as gateway:
        worker = worker_processes(
            {"DATABASE_URL": pg_url, "REDIS_URL": private_redis.url, **sms_env(gateway.url)}
        )
        worker.wait_ready(private_redis.url)
        private_redis.stop()
        with listener_client(
            listener_settings(pg_url, REDIS_URL=private_redis.url, ORDERPAY_NOTIFY_CHANNEL="sms")
        ) as client:
            answer = client.post(CALLBACK, content=body, headers=signed(body, SECRET))
        wait_until(lambda: "outage of Redis began" in worker.output(), what="the outage to be seen")
        # The relay may mark the row for a moment while it tries Redis: it is left unmarked.
        waiting = wait_until(
            lambda: next((r for r in notification_rows(db) if r["enqueued_at"] is None), None),
            what="the row to wait, not handed out",
        )
        still_running = worker.process.poll() is None

        private_redis.start()
        row = wait_for_status(db, waiting["id"], "sent", timeout=30)
        exit_code = worker.terminate()  # a send in flight, if there were one, ends first
        requests = gateway.count()

    assert answer.status_code == 200, answer.text
    assert (waiting["status"], waiting["enqueued_at"]) == ("pending", None)
    assert still_running, worker.output()
    assert requests == 1
    assert row.attempts == 1
    assert exit_code == 0, worker.output()


@pytest.mark.slow
def test_a_settling_callback_wakes_the_relay_without_waiting_for_its_poll(
    pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    order_id, payment_id = a_pending_charge(db)
    body = success_callback(order_id, payment_id)
    with a_gateway() as gateway:
        env = {
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            **sms_env(gateway.url, ORDERPAY_RELAY_POLL_SECONDS="60"),
        }
        worker = worker_processes(env, *SIMPLE)
        worker.wait_ready(redis_url)
        # The relay's first pass is over once it LISTENs: it now waits for a wake-up or 60 s.
        wait_until(lambda: listening_sessions(db) == 1, what="the relay to LISTEN")
        with listener_client(
            listener_settings(pg_url, REDIS_URL=redis_url, ORDERPAY_NOTIFY_CHANNEL="sms")
        ) as client:
            answer = client.post(CALLBACK, content=body, headers=signed(body, SECRET))

        (row,) = notification_rows(db)
        sent = wait_for_status(db, row["id"], "sent", timeout=15)
        exit_code = worker.terminate()

    assert answer.status_code == 200, answer.text
    assert sent.attempts == 1
    assert exit_code == 0, worker.output()


# --- RQ retries, on a worker started with the scheduler ------------------------------------


def listening_sessions(db: Database) -> int:
    """Sessions of this database waiting for the outbox's NOTIFY (the relay's LISTEN)."""
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    f" AND query = 'LISTEN {OUTBOX_CHANNEL}'"
                )
            ).scalar_one()
        )


def rq_env(pg_url: str, redis_url: str, gateway_url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, **sms_env(gateway_url), **extra}


@pytest.mark.slow
def test_rq_retries_a_gateway_that_fails_three_times_and_sends_one_message(
    pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HTTP_500, HTTP_500, HTTP_500) as gateway:
        worker = worker_processes(rq_env(pg_url, redis_url, gateway.url), *SIMPLE)

        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)

        exit_code = worker.terminate()
        requests = gateway.count()
        ((_, message_id),) = gateway.answered
    assert exit_code == 0, worker.output()
    assert requests == 4
    assert row.attempts == 4
    assert row.gateway_message_id == message_id
    assert event_names(db, settled.order_id).count("notification_attempt_failed") == 3


@pytest.mark.slow
def test_rq_marks_the_notification_failed_with_the_error_after_the_last_retry(
    pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(*[HTTP_500] * 10) as gateway:
        env = rq_env(pg_url, redis_url, gateway.url, ORDERPAY_NOTIFY_RETRY_INTERVALS="1")
        worker = worker_processes(env, *SIMPLE)

        row = wait_for_status(db, settled.notification_id, "failed", timeout=30)
        exit_code = worker.terminate()
        requests = gateway.count()
        with redis_client(redis_url) as redis:
            queue = make_queue(redis)
            still_to_run = queue.count + queue.scheduled_job_registry.count
            failed_jobs = queue.failed_job_registry.count
    assert exit_code == 0, worker.output()
    assert (row.attempts, requests) == (2, 2)
    assert still_to_run == 0  # no further try is queued or scheduled in RQ
    assert failed_jobs == 1
    assert row.last_error is not None
    assert "HTTP 500" in row.last_error
    with redis_client(redis_url) as redis:
        handed = handed_to(redis, settled.notification_id)
        failed = FailedJobRegistry(
            QUEUE_NAME, connection=redis, serializer=JSONSerializer
        ).get_job_ids()
    assert failed == [handed]


@pytest.mark.slow
def test_a_gateway_that_never_answers_does_not_hang_the_rq_worker(
    pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HANG) as gateway:
        env = rq_env(pg_url, redis_url, gateway.url, ORDERPAY_NOTIFY_TIMEOUT_SECONDS="1")
        worker = worker_processes(env, *SIMPLE)
        gateway.recorder.wait_for(1, timeout=20)
        timed_out_at = time.monotonic()

        row = wait_for_status(db, settled.notification_id, "sent", timeout=15)

        retried_after = time.monotonic() - timed_out_at
        exit_code = worker.terminate()
        requests = gateway.count()
    assert retried_after < 8
    assert requests == 2
    assert row.attempts == 2
    assert exit_code == 0, worker.output()


# --- SIGTERM --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_leaves_the_rows_an_embedded_worker_had_not_started_pending_and_due(
    pg_url: str, db: Database, worker_processes: StartWorker
) -> None:
    ids = [a_settled_payment(db).notification_id for _ in range(3)]
    with a_gateway() as gateway:
        gateway.delay = 1.0
        # One send in flight at a time: two rows are still to start when SIGTERM comes.
        env = sms_env(gateway.url, ORDERPAY_SMS_MAX_IN_FLIGHT="1")
        worker = worker_processes({"DATABASE_URL": pg_url, **env})
        gateway.recorder.wait_for(1, timeout=30)

        exit_code = worker.terminate(timeout=10)

        requests = gateway.count()
    rows = sorted(notification_rows(db), key=lambda row: row["status"])
    assert exit_code == 0, worker.output()
    assert requests == 1
    assert [row["status"] for row in rows] == ["pending", "pending", "sent"]
    for row in rows[:2]:  # due again now, not after the lease: another worker may take them
        assert row["attempts"] == 0
        assert row["due_at"] <= utcnow()
    assert sorted(row["id"] for row in rows) == sorted(ids)


@pytest.mark.parametrize("mode", ["rq", "embedded"])
@pytest.mark.slow
def test_sigterm_during_a_send_finishes_that_delivery_then_exits_0(
    mode: str, pg_url: str, redis_url: str, worker_processes: StartWorker, db: Database
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        gateway.delay = 1.0
        env = {"DATABASE_URL": pg_url, **sms_env(gateway.url)}
        if mode == "rq":
            env["REDIS_URL"] = redis_url
        worker = worker_processes(env)
        gateway.recorder.wait_for(1, timeout=30)
        signalled = time.monotonic()

        exit_code = worker.terminate(timeout=10)

        took = time.monotonic() - signalled
        requests = gateway.count()
    assert exit_code == 0, worker.output()
    assert took < 6  # the delivery in flight, then out
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_an_rq_retry_whose_row_comes_due_while_it_looks_at_it_sends_the_message_at_once(
    pg_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RQ may start a retry a moment before the row's due time. The job's claim then finds the
    # row not due yet; by the time it reads the row's due time, the row is due. The job must
    # try it again now, not end as "skipped" and leave it to the relay's sweep minutes later.
    settled = a_settled_payment(db)
    due = utcnow() + timedelta(seconds=30)
    with db.transaction() as conn:
        conn.execute(
            update(notifications)
            .where(notifications.c.id == settled.notification_id)
            .values(due_at=due)
        )
    times = iter([due - timedelta(milliseconds=10)])  # the claim's clock; then it is due
    monkeypatch.setattr(delivery, "utcnow", lambda: next(times, due + timedelta(milliseconds=1)))
    with a_gateway() as gateway:
        for name, value in {"DATABASE_URL": pg_url, **sms_env(gateway.url)}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(jobs, "_process", None)  # this test's runtime, dropped after it
        try:
            summary = jobs.send_notifications([settled.notification_id])
        finally:
            jobs.process_runtime().close()

        assert gateway.recorder.count() == 1, summary
    assert wait_for_status(db, settled.notification_id, "sent", timeout=5).attempts == 1
