"""The RQ boundary: the notification job, the queue, and the relay that feeds it.

Jobs take ids only (JSON serializer), never phone numbers or secrets. Every notification
reaches RQ through the relay; a duplicate job is harmless because the job claims its attempt
with a compare-and-set before sending (delivery.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from orderpay.clock import utcnow
from orderpay.errors import GatewayUnavailable, QueueUnavailable
from orderpay.notify.delivery import Delivery, DeliveryResult, deliver
from orderpay.runtime import Runtime
from orderpay.store import outbox
from orderpay.store.notifications import Relayable, relay_candidates

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

    from orderpay.store.db import Database

log = logging.getLogger("orderpay.relay")

QUEUE_NAME = "orderpay-notifications"
RELAY_BATCH = 500
# Job results are not read; keep them only briefly. Failed jobs stay for inspection.
RESULT_TTL_SECONDS = 3600
FAILURE_TTL_SECONDS = 7 * 24 * 3600
JOB_TIMEOUT_SECONDS = 120
# RQ schedules retries at whole-second resolution: they may start up to this much early.
SCHEDULER_EARLINESS_SECONDS = 1.5

_process: tuple[int, Runtime] | None = None


def process_runtime() -> Runtime:
    """This process's runtime.

    RQ forks a work horse per job. A horse keeps its parent's runtime (settings read, schema
    checked, engine built) but never its parent's connections: those are dropped unclosed, and
    the horse opens its own.
    """
    global _process
    pid = os.getpid()
    if _process is None:
        _process = (pid, Runtime())
    elif _process[0] != pid:
        _process[1].forget_inherited()
        _process = (pid, _process[1])
    return _process[1]


@contextmanager
def runtime_for_jobs(runtime: Runtime) -> Iterator[None]:
    """Run this process's jobs with `runtime` (an in-process worker, as in `orderpay demo`,
    whose configuration is not the environment's)."""
    global _process
    previous, _process = _process, (os.getpid(), runtime)
    try:
        yield
    finally:
        _process = previous


class NotificationFailed(Exception):
    """The row is `failed`: its last try failed or the gateway refused the message."""


def send_notification(notification_id: int) -> str:
    """The RQ job: one delivery attempt; a transient failure raises so RQ's Retry runs it again.

    A final failure (the last try, or a refusal) leaves the row `failed` with the error and
    fails the job without further RQ retries, so it lands in RQ's FailedJobRegistry too.
    """
    runtime = process_runtime()
    result = _deliver(runtime, notification_id)
    if result.due_in is not None and 0 < result.due_in <= SCHEDULER_EARLINESS_SECONDS:
        # RQ's scheduler keeps whole seconds, so a retry can start a moment before the time
        # the row was given; wait for it rather than leave the row to the relay's sweep.
        time.sleep(result.due_in)
        result = _deliver(runtime, notification_id)
    if result.outcome is Delivery.RETRY:
        raise GatewayUnavailable(f"notification {notification_id}: {result.error}")
    if result.outcome is Delivery.FAILED:
        from rq import get_current_job

        job = get_current_job()
        if job is not None:
            job.retries_left = 0  # another try could only find the row failed and do nothing
        raise NotificationFailed(f"notification {notification_id}: {result.error}")
    return result.outcome.value


def _deliver(runtime: Runtime, notification_id: int) -> DeliveryResult:
    return deliver(
        runtime.database,
        runtime.channel_for,
        notification_id,
        merchant_name=runtime.settings.merchant_name,
        policy=runtime.retry_policy,
    )


def job_id(notification_id: int, attempts: int) -> str:
    """Deterministic per (row, attempt): a relay that runs twice enqueues the same job."""
    return f"notify-{notification_id}-{attempts}"


def make_queue(redis: Redis, name: str = QUEUE_NAME) -> Queue:
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(name, connection=redis, serializer=JSONSerializer)


def connect_redis(url: str) -> Redis:
    from redis import Redis

    # Short timeouts: a relay waiting on a dead Redis should give up and retry later.
    return Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


# RQ still holds a job in these states: it will run. Pushing it again would only queue a copy
# (harmless, but a backlog would grow by itself every pass). A `started` job is not among them:
# the relay only looks at rows no attempt holds, so a started job whose row is free is one
# whose worker died (or hung) past the row's lease.
HELD_BY_RQ = frozenset({"created", "queued", "scheduled", "deferred"})


class Relay:
    """Moves due outbox rows to RQ in batches and marks them enqueued in the same step.

    A row handed out before is pushed again only when its job looks lost: handed out more
    than `lost_after` ago, still pending and due, and RQ no longer holds the job.
    """

    def __init__(
        self, database: Database, queue: Queue, retry_intervals: tuple[int, ...],
        lost_after: timedelta, batch: int = RELAY_BATCH,
    ) -> None:  # fmt: skip
        self.database = database
        self.queue = queue
        self.retry_intervals = retry_intervals
        self.lost_after = lost_after
        self.batch = batch

    def relay_once(self) -> tuple[int, int]:
        """Enqueue one batch: (rows looked at, jobs pushed). The rows are marked only if
        Redis took the jobs."""
        from redis.exceptions import RedisError
        from rq import Retry

        with self.database.transaction() as conn:
            now = utcnow()
            rows = relay_candidates(conn, now=now, lost_after=self.lost_after, limit=self.batch)
            if not rows:
                return 0, 0
            try:
                held = self._held_by_rq([row for row in rows if row.handed_out])
                retry = Retry(max=len(self.retry_intervals), interval=list(self.retry_intervals))
                jobs = [
                    self.queue.prepare_data(
                        send_notification,
                        args=(row.notification_id,),
                        job_id=job_id(row.notification_id, row.attempts),
                        retry=retry,
                        timeout=JOB_TIMEOUT_SECONDS,
                        result_ttl=RESULT_TTL_SECONDS,
                        failure_ttl=FAILURE_TTL_SECONDS,
                    )
                    for row in rows
                    if row.notification_id not in held
                ]
                # One pipeline per batch; if Redis fails, the transaction rolls back and the
                # rows wait for the next try.
                if jobs:
                    self.queue.enqueue_many(jobs)
            except RedisError as error:
                raise QueueUnavailable(f"Redis is unavailable: {type(error).__name__}") from None
            # Held rows are marked too: RQ is asked about them again only after lost_after.
            outbox.mark_enqueued(conn, [row.notification_id for row in rows], now)
        return len(rows), len(jobs)

    def _held_by_rq(self, rows: list[Relayable]) -> set[int]:
        """The rows whose current job RQ still holds (queued, scheduled, started...)."""
        if not rows:
            return set()
        from rq.job import Job

        redis = self.queue.connection
        with redis.pipeline(transaction=False) as pipeline:
            for row in rows:
                pipeline.hget(Job.key_for(job_id(row.notification_id, row.attempts)), "status")
            statuses = pipeline.execute()
        return {
            row.notification_id
            for row, status in zip(rows, statuses, strict=True)
            if status is not None and status.decode() in HELD_BY_RQ
        }

    def relay_due(self) -> int:
        """Enqueue every due row now (batch after batch); the number of jobs pushed."""
        total = 0
        while True:
            looked_at, pushed = self.relay_once()
            total += pushed
            if looked_at < self.batch:
                return total

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Relay until `stop` is set: on every NOTIFY, and every `poll_seconds` anyway."""
        from orderpay.store.wakeups import run_on_wakeups

        def step() -> None:
            moved = self.relay_due()
            if moved:
                log.info("relayed %s notification(s) to RQ", moved)

        run_on_wakeups(self.database.engine, poll_seconds, stop, step, "relay")
