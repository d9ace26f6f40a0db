"""Workers that die mid-send, and workers that race: every notification is sent exactly once.

Real `orderpay worker` processes: SIGKILLed while the gateway holds their request, or several
started together (a barrier) draining one outbox.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.notify.messages import order_reference
from orderpay.store.db import Database
from tests.redis_helpers import (
    HANG,
    MERCHANT,
    WorkerProcess,
    a_gateway,
    a_settled_payment,
    event_names,
    notification,
    notification_rows,
    redis_url_fixture,  # noqa: F401
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    sms_env,
    wait_for_status,
    wait_until,
    worker_processes_fixture,  # noqa: F401
)

FORK = multiprocessing.get_context("fork")
StartWorker = Callable[..., WorkerProcess]


# --- SIGKILL mid-send -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedded", "rq"])
@pytest.mark.slow
def test_a_worker_killed_mid_send_is_recovered_and_the_message_is_sent_once(
    mode: str, pg_url: str, db: Database, redis_url: str, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HANG) as gateway:
        env = {
            "DATABASE_URL": pg_url,
            **sms_env(
                gateway.url, ORDERPAY_NOTIFY_LEASE_SECONDS="1", ORDERPAY_NOTIFY_TIMEOUT_SECONDS="1"
            ),
        }
        if mode == "rq":
            # The dead worker's job stays "started" in RQ; the relay hands the row out again
            # once its lease is over and it was handed out more than this long ago.
            env.update(REDIS_URL=redis_url, ORDERPAY_RELAY_LOST_AFTER_SECONDS="1")
        doomed = worker_processes(env)
        wait_until(lambda: gateway.hanging == 1, timeout=30, what="the gateway to hold a request")

        doomed.kill_group()
        (left,) = notification_rows(db)
        successor = worker_processes(env)
        row = wait_for_status(db, settled.notification_id, "sent", timeout=30)
        exit_code = successor.terminate()
        requests = gateway.count()
        answered = list(gateway.answered)

    assert (left["status"], left["attempts"]) == ("pending", 1)  # what the killed worker left
    assert requests == 2
    ((_, message_id),) = answered  # exactly one completed (answered) delivery
    assert row.gateway_message_id == message_id
    assert row.attempts == 2
    assert exit_code == 0, successor.output()
    assert event_names(db, settled.order_id).count("notification_sent") == 1


# --- Several workers, one outbox ------------------------------------------------------------


def _worker_after_barrier(barrier: Any, env: dict[str, str], stderr_path: str) -> None:
    """Child process: wait for every sibling, then run `orderpay worker --burst`.

    Its stderr (where the command reports what it delivered) goes to `stderr_path`.
    """
    from orderpay.cli import app

    sys.stderr = open(stderr_path, "w", buffering=1)  # noqa: SIM115 - the child exits with it
    os.environ.update(env)
    barrier.wait(timeout=60)
    app(args=["worker", "--burst"], prog_name="orderpay")


def drain_in_parallel(
    env: dict[str, str], processes: int, directory: Path
) -> list[tuple[int | None, int]]:
    """(exit code, notifications it sent) of each of `processes` burst workers."""
    barrier = FORK.Barrier(processes)
    paths = [directory / f"drain-{n}.err" for n in range(processes)]
    children = [
        FORK.Process(target=_worker_after_barrier, args=(barrier, env, str(path))) for path in paths
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(90)
    outcomes: list[tuple[int | None, int]] = []
    for child, path in zip(children, paths, strict=True):
        if child.is_alive():
            child.kill()
            child.join(10)
        sent = re.search(r"(\d+) sent", path.read_text())
        outcomes.append((child.exitcode, int(sent[1]) if sent else 0))
    return outcomes


def assert_each_sent_exactly_once(
    db: Database, order_ids: list[Any], requests: list[dict[str, str]]
) -> None:
    per_reference = Counter(
        reference
        for form in requests
        for reference in re.findall(r"order ([0-9A-F]{8})", form["message"])
    )
    assert per_reference == Counter({order_reference(oid): 1 for oid in order_ids})
    assert {row["status"] for row in notification_rows(db)} == {"sent"}
    assert {row["attempts"] for row in notification_rows(db)} == {1}


@pytest.mark.parametrize(
    ("database", "rows", "processes"), [("postgres", 30, 3), ("sqlite", 30, 3)]
)
@pytest.mark.slow
def test_workers_draining_one_outbox_together_send_every_row_exactly_once(
    database: str, rows: int, processes: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = str(request.getfixturevalue("pg_url" if database == "postgres" else "sqlite_url"))
    db = Database(url)
    try:
        order_ids = [a_settled_payment(db).order_id for _ in range(rows)]
        with a_gateway() as gateway:
            # Each worker keeps two sends in flight, each answered slowly enough for the
            # workers to overlap.
            gateway.delay = 0.1
            env = {"DATABASE_URL": url, **sms_env(gateway.url, ORDERPAY_SMS_MAX_IN_FLIGHT="2")}
            outcomes = drain_in_parallel(env, processes, tmp_path)
            requests = gateway.sms_forms()

        assert [code for code, _ in outcomes] == [0] * processes
        assert sum(sent for _, sent in outcomes) == rows
        assert sum(1 for _, sent in outcomes if sent) >= 2, outcomes  # they did overlap
        assert_each_sent_exactly_once(db, order_ids, requests)
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_notification_left_by_a_killed_worker_is_not_sent_again_before_its_lease_ends(
    pg_url: str, db: Database, worker_processes: StartWorker
) -> None:
    settled = a_settled_payment(db)
    with a_gateway(HANG) as gateway:
        env = {"DATABASE_URL": pg_url, **sms_env(gateway.url, ORDERPAY_NOTIFY_LEASE_SECONDS="30")}
        doomed = worker_processes(env)
        wait_until(lambda: gateway.hanging == 1, timeout=30, what="the gateway to hold a request")
        doomed.kill_group()
        channel = sms_channel(gateway)
        with closing(channel):
            results = Drain(db, serving(channel), RetryPolicy((1,), 30), MERCHANT).drain_due()
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert results == []
    assert requests == 1
    assert (row.status, row.attempts) == (NotificationStatus.PENDING, 1)
