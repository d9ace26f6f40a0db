"""The RQ worker of `orderpay worker`: RQ's, made to ride out a Redis outage, and the thread
that moves RQ's scheduled retries to the queue.

RQ's loop retries a lost connection only while it waits for a job; anywhere else (its
heartbeat, registry upkeep, the suspension check, a job's bookkeeping) the error ends the loop
with a traceback, and its scheduler is a forked child that dies with the connection and is
restarted only at the next upkeep, minutes later. Here every Redis call of the loop waits an
outage out instead (backoff; one WARNING and one INFO: store.outages), and scheduled jobs are
moved by a thread of the worker process that outlives any outage. An expected failure of a job
(an outage, a gateway's failure) is one line; a bug keeps RQ's traceback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, Worker, worker_registration
from rq.exceptions import DequeueTimeout, StopRequested
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from orderpay.errors import DatabaseUnavailable, OrderpayError, QueueUnavailable
from orderpay.jobs import NotificationFailed
from orderpay.store.outages import database_outage, redis_outage

if TYPE_CHECKING:
    from redis import Redis
    from rq.job import Job

log = logging.getLogger("orderpay.worker")
T = TypeVar("T")

# What a Redis that went away (stopped, restarting, unreachable) raises.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# The waits between pings while Redis is away: short at first (a restart takes a second or
# two), never so long that the worker lags far behind a Redis that is back.
FIRST_WAIT_SECONDS = 0.25
LONGEST_WAIT_SECONDS = 5.0
# How often due scheduled jobs are moved to their queue (RQ's scheduler: every second).
SCHEDULER_INTERVAL_SECONDS = 1.0


def describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def wait_for_redis(
    connection: Redis,
    error: BaseException,
    stopped: Callable[[], bool],
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Ping Redis with backoff until it answers (True) or `stopped()` (False). The outage is
    logged once, however many threads wait on it."""
    outage = redis_outage()
    outage.failed(describe(error))
    wait = FIRST_WAIT_SECONDS
    while not stopped():
        try:
            connection.ping()
        except REDIS_DOWN as again:
            outage.failed(describe(again))
            sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)
        else:
            outage.recovered()
            return True
    return False


class RidingOutQueue(Queue):
    """RQ's queue whose wait for a job waits out an outage instead of failing."""

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls, queues: Sequence[Queue], timeout: int | None, connection: Redis, **options: Any
    ) -> tuple[Job, Queue] | None:
        try:
            return super().dequeue_any(queues, timeout, connection=connection, **options)
        except REDIS_DOWN as error:
            # Until Redis answers: SIGTERM meanwhile raises RQ's StopRequested out of the wait
            # (the worker is idle), which ends RQ's loop.
            wait_for_redis(connection, error, lambda: False)
            # RQ's loop then beats its heartbeat and asks again, as after an idle wait.
            raise DequeueTimeout(timeout, [queue.key for queue in queues]) from None


class RidingOut(BaseWorker):
    """Put before RQ's worker class (Worker or SimpleWorker): its Redis calls wait out an
    outage."""

    def _ride_out(self, call: Callable[[], T]) -> T:
        while True:
            try:
                return call()
            except REDIS_DOWN as error:
                self._wait(error)

    def _wait(self, error: BaseException) -> None:
        if not wait_for_redis(self.connection, error, lambda: self._stop_requested):
            raise StopRequested
        self._register_again()

    def _register_again(self) -> None:
        """A Redis restarted without its data has forgotten this worker: record it again, as
        at its start, so that the relay counts it and `rq info` lists it."""
        with contextlib.suppress(*REDIS_DOWN):
            if self.connection.exists(self.key):
                return
            with self.connection.pipeline() as pipeline:
                pipeline.hset(self.key, mapping=self.serialize())
                pipeline.hset(self.key, "state", self.get_state())
                worker_registration.register(self, pipeline)
                pipeline.expire(self.key, self.worker_ttl + 60)
                pipeline.execute()

    def check_for_suspension(self, burst: bool) -> None:
        self._ride_out(partial(super().check_for_suspension, burst))

    def run_maintenance_tasks(self) -> None:
        self._ride_out(super().run_maintenance_tasks)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # only queued: the pipeline's owner meets the outage
            super().heartbeat(timeout, pipeline)
            return
        self._ride_out(partial(super().heartbeat, timeout))

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        self._ride_out(partial(super().set_state, state))

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as error:
            # The job ran (or its work horse did); what RQ could not record of it leaves the
            # job `started` until RQ's upkeep ends it, and its rows to their lease and the
            # relay. It is not run again here.
            self._wait(error)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        error = exc_info[1]
        if isinstance(error, REDIS_DOWN):
            redis_outage().failed(describe(error))
        elif isinstance(error, DatabaseUnavailable):
            database_outage().failed(error.message)
        elif isinstance(error, QueueUnavailable):
            redis_outage().failed(error.message)
        elif isinstance(error, OrderpayError | NotificationFailed):
            # An expected failure, retried (or ended) as designed: its line, no traceback.
            message = error.message if isinstance(error, OrderpayError) else str(error)
            log.warning("job %s failed: %s", job.id, message)
        else:
            super().handle_exception(job, *exc_info)

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, thread: Any) -> None:
        if not isinstance(exc, REDIS_DOWN):
            super()._pubsub_exception_handler(exc, pubsub, thread)
            return
        # redis-py subscribes again once it reconnects; RQ's own handler logs an ERROR for
        # every try.
        redis_outage().failed(describe(exc))
        time.sleep(2.0)

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except REDIS_DOWN:
            if self.pubsub_thread is not None:
                self.pubsub_thread.stop()
            log.warning("stopped while Redis is unavailable: its record of this worker expires")


class RidingOutSimpleWorker(RidingOut, SimpleWorker):
    """Jobs in the worker process."""

    queue_class = RidingOutQueue


class RidingOutForkWorker(RidingOut, Worker):
    """A work horse process per job."""

    queue_class = RidingOutQueue


class ScheduledJobs:
    """Moves RQ's scheduled jobs (the retries RQ's Retry parks in a ScheduledJobRegistry) to
    their queue once due, every second: RQ's scheduler, with its lock (one scheduler per
    queue among all workers), run by a thread of the worker instead of a forked child. An
    outage pauses it; nothing ends it but `stop`."""

    def __init__(
        self,
        queue_names: Sequence[str],
        connection: Redis,
        interval: float = SCHEDULER_INTERVAL_SECONDS,
    ) -> None:
        self.scheduler = RQScheduler(
            list(queue_names), connection=connection, serializer=JSONSerializer
        )
        self.interval = interval

    def move_due(self) -> None:
        """One step: take (or keep) the queues' scheduler locks, move what is due."""
        self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if self.scheduler.acquired_locks:
            self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    def run(self, stop: threading.Event) -> None:
        outage = redis_outage()
        while not stop.is_set():
            try:
                self.move_due()
            except REDIS_DOWN as error:
                outage.failed(describe(error))
            except Exception:  # a bug: said with its traceback, and the next step tries again
                log.exception("moving scheduled jobs to their queue failed")
            else:
                outage.recovered()
            stop.wait(self.interval)
        with contextlib.suppress(*REDIS_DOWN):
            self.scheduler.release_locks()  # type: ignore[no-untyped-call]

    def thread(self, stop: threading.Event) -> threading.Thread:
        return threading.Thread(target=self.run, args=(stop,), name="scheduler", daemon=True)


def wait_until_reachable(connection: Redis, stop: threading.Event) -> bool:
    """At start: True once Redis answers (an outage meanwhile logged once), False if `stop`
    is set first."""
    try:
        connection.ping()
    except REDIS_DOWN as error:
        return wait_for_redis(connection, error, stop.is_set, sleep=stop.wait)
    return True
