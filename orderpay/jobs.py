"""The RQ boundary: the notification job, the queue, and the relay that feeds it.

Jobs take ids only (JSON serializer), never phone numbers or secrets. Every notification
reaches RQ through the relay, in batches (a job delivers several rows: RQ's cost per job is
then shared by them); a duplicate job is harmless because the job claims each row's attempt
with a compare-and-set right before sending it (notify.delivery).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from orderpay.clock import utcnow
from orderpay.errors import GatewayUnavailable, QueueUnavailable
from orderpay.notify.delivery import Batch, Delivery, RetryPolicy
from orderpay.notify.in_flight import deliver_concurrently
from orderpay.runtime import Runtime
from orderpay.store import outbox
from orderpay.store.notifications import Relayable, relay_candidates

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

    from orderpay.store.db import Database

log = logging.getLogger("orderpay.relay")
T = TypeVar("T")

QUEUE_NAME = "orderpay-notifications"
RELAY_BATCH = 500
# Rows per job at most. A job's RQ overhead (dequeue, bookkeeping, its registries) then counts
# once per batch, its rows are claimed and recorded in groups, and a channel's sends are kept
# in flight together (notify.delivery): a job's rows are all its worker sends at once.
JOB_ROWS = 500
# A relay held back by a full queue looks again this often.
HELD_BACK_SECONDS = 0.05
# Job results are not read; keep them only briefly. Failed jobs stay for inspection.
RESULT_TTL_SECONDS = 3600
FAILURE_TTL_SECONDS = 7 * 24 * 3600
JOB_TIMEOUT_SECONDS = 120
# A batch job stops taking rows after this long and hands the rest to a new job: well inside
# RQ's timeout even when the gateway is slow (a send takes at most the channel's timeout).
JOB_BUDGET_SECONDS = 45.0
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
    """A row is `failed`: its last try failed or the gateway refused the message."""


# Set when the worker is asked to stop (SIGTERM): a batch job then ends after the send in
# flight, gives back the rows it claimed but had not sent, and hands the rest to a new job.
stopping = threading.Event()


def send_notifications(notification_ids: list[int]) -> str:
    """The RQ job: one delivery attempt of each of these rows (a batch the relay made).

    A transient failure of any row raises once the batch is done, so RQ's Retry runs the job
    again after the backoff: the rows sent meanwhile are skipped, and those retried are due
    by then. A final failure (a last try, or a refusal) of a row with none to retry leaves it
    `failed` with the error and fails the job without further retries, so it lands in RQ's
    FailedJobRegistry too. Rows the job did not get to (stopped, or out of time) go to a new
    job at once.
    """
    runtime = process_runtime()
    policy = replace(runtime.retry_policy, send_seconds=runtime.settings.notify_timeout_seconds)
    deadline = time.monotonic() + JOB_BUDGET_SECONDS
    batch = _deliver(runtime, policy, notification_ids, deadline)
    results, left = batch.results, batch.left
    early = [
        r
        for r in results
        if r.due_in is not None
        and r.outcome is Delivery.SKIPPED
        and r.due_in <= SCHEDULER_EARLINESS_SECONDS
    ]
    if early and not stopping.is_set():
        # RQ's scheduler keeps whole seconds, so a retry can start a moment before the time
        # its rows were given; wait for them rather than leave them to the relay's sweep. A
        # row may also have come due between the claim and the look at its due time (due_in
        # at or below 0): it is tried again at once.
        time.sleep(max(0.0, *(r.due_in or 0.0 for r in early)))
        again = _deliver(runtime, policy, [r.notification_id for r in early], deadline)
        results = [r for r in results if r not in early] + again.results
        left += again.left
    if left:
        _hand_over(left)
    outcomes = Counter(result.outcome for result in results)
    summary = ", ".join(f"{n} {outcome.value}" for outcome, n in sorted(outcomes.items()))
    if outcomes[Delivery.RETRY]:
        errors = {r.error or "" for r in results if r.outcome is Delivery.RETRY}
        raise GatewayUnavailable(f"notifications to try again ({summary}): {sorted(errors)}")
    if outcomes[Delivery.FAILED]:
        from rq import get_current_job

        job = get_current_job()
        if job is not None:
            job.retries_left = 0  # another try could only find the rows done and do nothing
        failed = [r.notification_id for r in results if r.outcome is Delivery.FAILED]
        raise NotificationFailed(f"notification(s) {failed} failed ({summary})")
    return summary


def send_notification(notification_id: int) -> str:
    """The one-row job of earlier releases: kept so that such jobs still queued at an upgrade
    run."""
    return send_notifications([notification_id])


def _deliver(
    runtime: Runtime, policy: RetryPolicy, notification_ids: list[int], deadline: float
) -> Batch:
    return deliver_concurrently(
        runtime.database,
        runtime.channel_for,
        runtime.sender,
        notification_ids,
        merchant_name=runtime.settings.merchant_name,
        policy=policy,
        stop=stopping.is_set,
        deadline=deadline,
    )


def _hand_over(notification_ids: list[int]) -> None:
    """A new job, on this job's queue, for the rows this one did not get to."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:  # not run by RQ: the relay hands the rows out again after lost_after
        return
    queue = make_queue(job.connection, job.origin)
    intervals = process_runtime().settings.retry_intervals
    enqueue_batches(queue, [notification_ids], intervals, salt=job.id)


def job_id(notification_ids: Sequence[int], attempts: Sequence[int], salt: str = "") -> str:
    """Deterministic per batch (its rows and their attempts): a relay that runs twice over the
    same rows enqueues the same job."""
    key = ",".join(f"{nid}:{n}" for nid, n in zip(notification_ids, attempts, strict=True))
    digest = zlib.crc32(f"{salt}|{key}".encode())
    return f"notify-{notification_ids[0]}-{len(notification_ids)}-{digest:08x}"


def row_job_key(notification_id: int) -> str:
    """The Redis key naming the job a row was last handed to (the relay asks RQ about it)."""
    return f"orderpay:notification:{notification_id}:job"


def legacy_job_id(notification_id: int, attempts: int) -> str:
    """The id of an earlier release's one-row job (see send_notification)."""
    return f"notify-{notification_id}-{attempts}"


def split(rows: Sequence[T], workers: int) -> list[list[T]]:
    """Rows into jobs of at most JOB_ROWS, and at least one per worker while rows last, so
    that a short backlog is shared by the workers rather than sent by one."""
    if not rows:
        return []
    jobs = max(-(-len(rows) // JOB_ROWS), min(len(rows), max(1, workers)))
    size = -(-len(rows) // jobs)
    return [list(rows[start : start + size]) for start in range(0, len(rows), size)]


def enqueue_batches(
    queue: Queue,
    batches: Sequence[Sequence[int]],
    retry_intervals: tuple[int, ...],
    attempts: Sequence[Sequence[int]] | None = None,
    salt: str = "",
) -> int:
    """One job per batch, and each row's job named under row_job_key, in one pipeline."""
    from rq import Retry

    retry = Retry(max=len(retry_intervals), interval=list(retry_intervals))
    named = [
        (batch, job_id(batch, attempts[i] if attempts else [-1] * len(batch), salt))
        for i, batch in enumerate(batches)
    ]
    jobs = [
        queue.prepare_data(
            send_notifications,
            args=(list(batch),),
            job_id=jid,
            retry=retry,
            timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=RESULT_TTL_SECONDS,
            failure_ttl=FAILURE_TTL_SECONDS,
        )
        for batch, jid in named
    ]
    with queue.connection.pipeline() as pipeline:
        queue.enqueue_many(jobs, pipeline=pipeline)
        for batch, jid in named:
            for nid in batch:
                pipeline.set(row_job_key(nid), jid, ex=FAILURE_TTL_SECONDS)
        pipeline.execute()
    return len(jobs)


def make_queue(redis: Redis, name: str = QUEUE_NAME) -> Queue:
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(name, connection=redis, serializer=JSONSerializer)


def connect_redis(url: str) -> Redis:
    from redis import Redis

    # Short timeouts: a relay waiting on a dead Redis should give up and retry later.
    return Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


class Relay:
    """Moves due outbox rows to RQ in batches.

    A pass marks its rows handed out and commits that before their jobs reach Redis: a worker
    that starts a job at once finds the rows free to claim (a claim skips rows another
    transaction holds). If Redis does not take the jobs, the marks are taken back.

    A row handed out more than `lost_after` ago that is still pending, due and held by no
    attempt is asked about: if RQ no longer holds its job (see `_held_by_rq`), it is pushed
    again. Those questions are asked of at most `batch` rows, the longest due first, every
    half `lost_after`, so a backlog waiting in RQ costs little and never grows by itself.
    """

    def __init__(
        self,
        database: Database,
        queue: Queue,
        retry_intervals: tuple[int, ...],
        lost_after: timedelta,
        batch: int = RELAY_BATCH,
    ) -> None:
        self.database = database
        self.queue = queue
        self.retry_intervals = retry_intervals
        self.lost_after = lost_after
        self.batch = batch
        self._next_question = utcnow()
        self.held_back = False  # the last relay_due stopped because the queue was full

    def relay_once(self, *, handed_out: bool = False, hold_back: bool = False) -> tuple[int, int]:
        """One pass over rows never handed out (or, with `handed_out`, over rows handed out
        more than lost_after ago): (rows looked at, rows handed to new jobs). With `hold_back`,
        rows found while the queue is full are left as they are (`held_back`)."""
        from redis.exceptions import RedisError

        now = utcnow()
        handed_before = now - self.lost_after if handed_out else None
        with self.database.transaction() as conn:
            rows = relay_candidates(conn, now=now, handed_before=handed_before, limit=self.batch)
            # Redis is asked only when there are rows: an idle relay does not touch it.
            if hold_back:
                self.held_back = bool(rows) and self._queue_is_full()
                if self.held_back:
                    return 0, 0
            outbox.mark_enqueued(conn, [row.notification_id for row in rows], now)
        if not rows:
            return 0, 0
        try:
            pushed = self._push(rows, salt=now.isoformat() if handed_out else "")
        except RedisError as error:
            with self.database.transaction() as conn:
                before = {row.notification_id: row.handed_out_at for row in rows}
                outbox.unmark_enqueued(conn, before, now)
            raise QueueUnavailable(f"Redis is unavailable: {type(error).__name__}") from None
        return len(rows), pushed

    def _push(self, rows: list[Relayable], salt: str) -> int:
        """Jobs for the rows whose jobs RQ does not hold, in one pipeline; how many rows."""
        from rq import Worker

        held = self._held_by_rq([row for row in rows if row.handed_out])
        due = [row for row in rows if row.notification_id not in held]
        workers = Worker.count(connection=self.queue.connection, queue=self.queue)
        batches = split(due, workers)
        if batches:
            ids = [[row.notification_id for row in batch] for batch in batches]
            attempts = [[row.attempts for row in batch] for batch in batches]
            # A job pushed again gets a new id: the lost one may still be in RQ's hands
            # somewhere (a worker's intermediate list) under the old id.
            enqueue_batches(self.queue, ids, self.retry_intervals, attempts, salt=salt)
        return len(due)

    def _held_by_rq(self, rows: list[Relayable]) -> set[int]:
        """The rows whose current job RQ will still start: the job named under row_job_key
        (else an earlier release's one-row job) is in the queue, or in the scheduled or
        deferred registry.

        Where the job is, not its status field: a job a worker took from the queue and died
        before starting still says `queued`, yet is in no queue. A started job does not hold
        its rows: the relay only asks about rows no attempt holds, so its worker is dead, or
        has not claimed them for lost_after; a second job for them is harmless, as every send
        is claimed first."""
        if not rows:
            return set()
        redis = self.queue.connection
        named = redis.mget([row_job_key(row.notification_id) for row in rows])
        jobs = [
            (name.decode() if isinstance(name, bytes) else str(name))
            if name is not None
            else legacy_job_id(row.notification_id, row.attempts)
            for row, name in zip(rows, named, strict=True)
        ]
        scheduled = self.queue.scheduled_job_registry.key
        deferred = self.queue.deferred_job_registry.key
        with redis.pipeline(transaction=False) as pipeline:
            pipeline.lrange(self.queue.key, 0, -1)
            for jid in jobs:
                pipeline.zscore(scheduled, jid)
                pipeline.zscore(deferred, jid)
            queued, *scores = pipeline.execute()
        waiting = {bytes(jid).decode() for jid in queued}
        return {
            row.notification_id
            for index, (row, jid) in enumerate(zip(rows, jobs, strict=True))
            if jid in waiting or any(s is not None for s in scores[2 * index : 2 * index + 2])
        }

    def relay_due(self, *, hold_back: bool = False) -> int:
        """Enqueue every row never handed out (pass after pass), then, at most every half
        lost_after, ask about rows handed out before; the number of rows handed to jobs.

        With `hold_back`, a pass is made only while fewer jobs wait in the queue than there
        are workers (`held_back` says when it stopped for that): under load the rows wait in
        the outbox and go out in full jobs as workers free up, rather than as many small
        jobs, each a worker's only sends in flight while it runs, queued behind one another.
        """
        total = 0
        self.held_back = False
        while True:
            looked_at, pushed = self.relay_once(hold_back=hold_back)
            total += pushed
            if self.held_back or looked_at < self.batch:
                break
        if utcnow() >= self._next_question:
            self._next_question = utcnow() + self.lost_after / 2
            total += self.relay_once(handed_out=True)[1]
        return total

    def _queue_is_full(self) -> bool:
        from redis.exceptions import RedisError
        from rq import Worker

        try:
            workers = Worker.count(connection=self.queue.connection, queue=self.queue)
            return self.queue.count >= max(1, workers)
        except RedisError as error:
            raise QueueUnavailable(f"Redis is unavailable: {type(error).__name__}") from None

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Relay until `stop` is set: on every NOTIFY, and every `poll_seconds` anyway; while
        held back, again every HELD_BACK_SECONDS until the rows are handed out."""
        from orderpay.store.wakeups import run_on_wakeups

        def step() -> None:
            moved = self.relay_due(hold_back=True)
            while self.held_back and not stop.wait(HELD_BACK_SECONDS):
                moved += self.relay_due(hold_back=True)
            if moved:
                log.info("relayed %s notification(s) to RQ", moved)

        run_on_wakeups(self.database.engine, poll_seconds, stop, step, "relay")
