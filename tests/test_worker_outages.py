"""Redis and Postgres going away under a running worker and listener: the worker rides the
outage out (one WARNING when it begins, one INFO when it ends, no traceback, no password) and
delivers what came due meanwhile; the listener says a database outage once.

Redis is a private redis-server of the test's own, stopped and started again on its port.
Postgres is the suite's server behind a loopback proxy the test cuts (tests/tcp_proxy.py):
every connection drops and the port refuses new ones, as in a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy.engine import make_url

from orderpay.config import load_settings
from orderpay.domain.redaction import redact_urls
from orderpay.jobs import QUEUE_NAME, enqueue_batches, make_queue, runtime_for_jobs
from orderpay.rq_worker import RidingOutSimpleWorker
from orderpay.runtime import Runtime
from orderpay.store.db import Database
from orderpay.store.outages import Outage
from tests.http_recorder import Answer
from tests.live_server import listener, listener_settings, signed
from tests.redis_helpers import (
    PrivateRedis,
    WorkerProcess,
    a_gateway,
    a_settled_payment,
    in_process_worker_fixture,  # noqa: F401
    notification,
    redis_client,
    redis_url_fixture,  # noqa: F401
    shared_gateway_server_fixture,  # noqa: F401
    sms_env,
    success_callback,
    wait_for_status,
    wait_until,
    worker_processes_fixture,  # noqa: F401
)
from tests.services import free_port
from tests.tcp_proxy import CuttableProxy, cuttable_proxy

StartWorker = Callable[..., WorkerProcess]
SIMPLE = ("--worker-class", "simple")
HTTP_500 = Answer(500, b'{"error": "internal"}')
REDIS_PASSWORD = "redis-s3cret-pw"
PG_PASSWORD = "pg-s3cret-pw"
# How long each outage lasts: a restart's few seconds, long enough for every thread of the
# worker (its RQ loop, heartbeat, pubsub, scheduler, relay) to meet it.
OUTAGE_SECONDS = 3.0


def log_records(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (stderr), parsed."""
    records = []
    for line in worker.stderr_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict):
                records.append(document)
    return records


def at_level(worker: WorkerProcess, *levels: str) -> list[str]:
    return [r["message"] for r in log_records(worker) if r.get("level") in levels]


def warned(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        raise AssertionError(f"the worker exited ({worker.process.returncode}):\n{worker.output()}")
    return bool(at_level(worker, "warning", "error", "critical"))


def outage_ends(worker: WorkerProcess) -> list[str]:
    return [
        r["message"]
        for r in log_records(worker)
        if r.get("logger") == "orderpay.outages" and r.get("level") == "info"
    ]


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server that asks for a password and keeps its data across a restart
    (append-only file): what RQ parked before an outage is there after it."""
    server = PrivateRedis(tmp_path, persistent=True, password=REDIS_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def worker_env(database_url: str, redis_url: str, gateway_url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **sms_env(gateway_url, **extra)}


def through(proxy: CuttableProxy, url: str) -> str:
    """`url` by way of the proxy, with a password (the test server trusts loopback logins and
    ignores it): the log must never show it."""
    return (
        make_url(url)
        .set(port=proxy.port, password=PG_PASSWORD)
        .render_as_string(hide_password=False)
    )


def scheduled_jobs(url: str) -> list[str]:
    with redis_client(url) as redis:
        registry = ScheduledJobRegistry(QUEUE_NAME, connection=redis, serializer=JSONSerializer)
        return list(registry.get_job_ids())


# --- Pure parts --------------------------------------------------------------------------


def test_a_urls_password_is_hidden_and_its_user_and_host_kept() -> None:
    text = "database postgresql://orderpay:p@ss:w0rd@db.internal:5432/shop is unavailable"

    assert (
        redact_urls(text)
        == "database postgresql://orderpay:***@db.internal:5432/shop is unavailable"
    )


def test_a_redis_url_with_only_a_password_is_redacted_and_text_without_one_kept() -> None:
    assert redact_urls("redis://:hunter2@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_urls("postgresql://root@127.0.0.1/x, no password") == (
        "postgresql://root@127.0.0.1/x, no password"
    )


def test_an_outage_is_one_warning_however_many_failures_and_one_info_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("Redis", clock=lambda: 100.0)
    with caplog.at_level(logging.DEBUG, logger="orderpay.outages"):
        for _ in range(5):
            outage.failed("Error 111 connecting to redis://:pw@127.0.0.1:1. Connection refused.")
        outage.recovered()
        outage.recovered()

    levels = [record.levelname for record in caplog.records]
    assert levels == ["WARNING", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "INFO"]
    assert "redis://:***@127.0.0.1:1" in caplog.records[0].getMessage()
    assert "pw" not in caplog.text


def test_a_failure_long_after_the_last_one_starts_a_new_outage_where_no_success_is_seen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = Outage("the database", forget_after=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="orderpay.outages"):
        outage.failed("first")
        now[0] = 59.0
        outage.failed("same outage")
        now[0] = 120.0
        outage.failed("a new one")

    assert [record.getMessage().split(": ")[1].split(";")[0] for record in caplog.records] == [
        "first",
        "a new one",
    ]


# --- Redis --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_redis_outage_is_one_warning_and_one_info_in_the_worker_log_and_the_worker_lives(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    with a_gateway() as gateway:
        worker = worker_processes(worker_env(pg_url, guarded_redis.url, gateway.url), *SIMPLE)
        worker.wait_ready(guarded_redis.url)
        guarded_redis.stop()
        wait_until(lambda: warned(worker), what="the worker to meet the outage")
        time.sleep(OUTAGE_SECONDS)  # the outage's length, not a wait for anything
        guarded_redis.start()
        wait_until(lambda: outage_ends(worker), what="the worker to see Redis back")
        settled = a_settled_payment(db)
        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)
        alive = worker.process.poll() is None
        exit_code = worker.terminate()
        answered = len(gateway.answered)

    output = worker.output()
    assert alive, output
    assert len(at_level(worker, "warning")) == 1, output
    assert at_level(worker, "error", "critical") == [], output
    assert len(outage_ends(worker)) == 1, output
    assert "Traceback" not in output
    assert REDIS_PASSWORD not in output
    assert (row.attempts, answered, exit_code) == (1, 1, 0), output


@pytest.mark.slow
def test_a_retry_rq_parked_before_a_redis_outage_is_sent_after_it(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HTTP_500) as gateway:
        # The retry comes due while Redis is away.
        env = worker_env(
            pg_url, guarded_redis.url, gateway.url, ORDERPAY_NOTIFY_RETRY_INTERVALS="2,2"
        )
        worker = worker_processes(env, *SIMPLE)
        wait_until(lambda: scheduled_jobs(guarded_redis.url), what="RQ to park the retry")
        guarded_redis.stop()
        time.sleep(OUTAGE_SECONDS)
        guarded_redis.start()
        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)
        alive = worker.process.poll() is None
        answered = len(gateway.answered)
        requests = gateway.count()

    assert alive, worker.output()
    assert (requests, answered) == (2, 1), worker.output()
    assert row.attempts == 2


@pytest.mark.slow
def test_a_worker_started_while_redis_is_down_waits_for_it_then_delivers(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    guarded_redis.stop()
    with a_gateway() as gateway:
        worker = worker_processes(worker_env(pg_url, guarded_redis.url, gateway.url), *SIMPLE)
        wait_until(lambda: warned(worker), what="the worker to say Redis is away")
        waiting = worker.process.poll() is None
        sent_meanwhile = gateway.count()
        guarded_redis.start()
        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)
        exit_code = worker.terminate()

    output = worker.output()
    assert waiting, output
    assert sent_meanwhile == 0
    assert (row.attempts, gateway.count(), exit_code) == (1, 1, 0), output
    assert len(at_level(worker, "warning")) == 1, output
    assert len(outage_ends(worker)) == 1, output
    assert REDIS_PASSWORD not in output


@pytest.mark.slow
def test_sigterm_to_a_worker_waiting_for_redis_at_its_start_exits_0_and_sends_nothing(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    guarded_redis.stop()
    with a_gateway() as gateway:
        worker = worker_processes(worker_env(pg_url, guarded_redis.url, gateway.url), *SIMPLE)
        wait_until(lambda: warned(worker), what="the worker to say Redis is away")
        exit_code = worker.terminate()

    assert exit_code == 0, worker.output()
    assert gateway.count() == 0
    assert notification(db, settled.notification_id).status.value == "pending"


# --- Postgres -----------------------------------------------------------------------------


def port_of(url: str) -> int:
    return make_url(url).port or 5432


@pytest.mark.slow
def test_a_postgres_restart_is_one_warning_and_one_info_in_the_worker_log(
    pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    with cuttable_proxy(port_of(pg_url)) as proxy, a_gateway() as gateway:
        env = worker_env(through(proxy, pg_url), redis_url, gateway.url)
        worker = worker_processes(env, *SIMPLE)
        worker.wait_ready(redis_url)
        proxy.cut()
        wait_until(lambda: warned(worker), what="the worker to meet the restart")
        time.sleep(OUTAGE_SECONDS)
        proxy.restore()
        wait_until(lambda: outage_ends(worker), what="the worker to see the database back")
        settled = a_settled_payment(db)
        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)
        alive = worker.process.poll() is None
        exit_code = worker.terminate()
        answered = len(gateway.answered)

    output = worker.output()
    assert alive, output
    assert len(at_level(worker, "warning")) == 1, output
    assert at_level(worker, "error", "critical") == [], output
    assert len(outage_ends(worker)) == 1, output
    assert "Traceback" not in output
    assert PG_PASSWORD not in output
    assert (row.attempts, answered, exit_code) == (1, 1, 0), output


@pytest.mark.slow
def test_a_postgres_restart_is_one_warning_in_the_listener_log_without_the_password(
    pg_url: str,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settled = a_settled_payment(db)
    body = success_callback(settled.order_id, settled.payment_id)
    with cuttable_proxy(port_of(pg_url)) as proxy:
        settings = listener_settings(through(proxy, pg_url))
        with listener(settings) as server, httpx.Client(base_url=server.url) as client:
            proxy.cut()
            with caplog.at_level(logging.INFO):
                statuses = [client.get("/readyz").status_code for _ in range(5)]
                statuses += [
                    client.post(server.callback_url, content=body, headers=signed(body)).status_code
                    for _ in range(5)
                ]
            proxy.restore()

    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert statuses == [503] * 10
    assert [r.levelname for r in problems] == ["WARNING"], caplog.text
    assert "***" in problems[0].getMessage()
    assert PG_PASSWORD not in caplog.text
    assert "Traceback" not in caplog.text


def test_jobs_that_meet_a_database_outage_log_it_once_without_a_traceback(
    redis_url: str, in_process_worker: None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        DATABASE_URL=through_closed_port(), ORDERPAY_NOTIFY_CHANNEL="log", REDIS_URL=redis_url
    )
    with redis_client(redis_url) as redis:
        queue = make_queue(redis)
        enqueue_batches(queue, [[1], [2], [3]], (1, 1))
        worker = RidingOutSimpleWorker([QUEUE_NAME], connection=redis, serializer=JSONSerializer)
        with runtime_for_jobs(Runtime(settings)), caplog.at_level(logging.WARNING):
            worker.work(burst=True)
        failed_tries = len(ScheduledJobRegistry(queue=queue))

    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failed_tries == 3  # each job met the outage, and RQ retries it later
    assert [(r.name, r.levelname) for r in problems] == [("orderpay.outages", "WARNING")]
    assert "Traceback" not in caplog.text
    assert PG_PASSWORD not in caplog.text


def through_closed_port() -> str:
    """A Postgres URL, with a password, on a port where nothing listens."""
    return f"postgresql://orderpay:{PG_PASSWORD}@127.0.0.1:{free_port()}/orderpay"


@pytest.mark.slow
def test_a_redis_outage_amid_deliveries_is_said_once_and_loses_or_doubles_nothing(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    settled = [a_settled_payment(db) for _ in range(12)]
    with a_gateway() as gateway:
        gateway.delay = 0.3  # a send in flight whenever Redis goes
        env = worker_env(
            pg_url, guarded_redis.url, gateway.url, ORDERPAY_RELAY_LOST_AFTER_SECONDS="5"
        )
        worker = worker_processes(env, *SIMPLE)
        wait_until(lambda: gateway.count() >= 2, what="deliveries to be under way")
        guarded_redis.stop()
        time.sleep(OUTAGE_SECONDS)
        guarded_redis.start()
        rows = [wait_for_status(db, s.notification_id, "sent", timeout=60) for s in settled]
        alive = worker.process.poll() is None
        answered = len(gateway.answered)

    output = worker.output()
    assert alive, output
    assert answered == len(settled), output
    assert all(row.attempts >= 1 for row in rows)
    assert "Traceback" not in output
    assert at_level(worker, "error", "critical") == [], output
    assert len(at_level(worker, "warning")) == 1, output


@pytest.mark.slow
def test_sigterm_during_a_redis_outage_stops_the_worker_with_exit_0_and_no_traceback(
    pg_url: str, db: Database, guarded_redis: PrivateRedis, worker_processes: StartWorker
) -> None:
    with a_gateway() as gateway:
        worker = worker_processes(worker_env(pg_url, guarded_redis.url, gateway.url), *SIMPLE)
        worker.wait_ready(guarded_redis.url)
        guarded_redis.stop()
        wait_until(lambda: warned(worker), what="the worker to meet the outage")
        exit_code = worker.terminate()

    output = worker.output()
    assert exit_code == 0, output
    assert "Traceback" not in output
    assert at_level(worker, "error", "critical") == [], output
