"""Notifications per second through the outbox relay and RQ workers, next to RQ's no-op jobs.

Run it from the repository root with the development virtualenv (Postgres and Redis running):

    python bench/worker.py                        # 5,000 notifications; 1 and 2 workers;
                                                  # fork (rq Worker) and simple (SimpleWorker)
    python bench/worker.py --workers 1 --classes fork --count 2000
    python bench/worker.py --database-url postgresql+psycopg2://user@host:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/14
    python bench/worker.py --profile              # also cProfile one SimpleWorker run in-process
    python bench/worker.py --classes simple       # the quick pair

The full default run is long: most of it goes to the fork-per-job (`Worker`) runs and their
ceilings, which fork a process per job; `--classes simple` leaves them out.

Set-up (not timed): a throwaway database `orderpay_bench_<hex>` on the server of --database-url,
migrated with orderpay.store.migrate.upgrade, then in bulk SQL shaped like what
settlement.settle and outbox.add_notification leave behind: --count settled payments, each with
its customer (an E.164 phone), order (`paid`) and item, a `succeeded` payment, the order events
rows, and one `pending` outbox row (channel `log`, body '', attempts 0, due now, not enqueued).
Payment number n has the id md5('p' || n)::uuid and its order md5('o' || n)::uuid. The database
is dropped at the end, and every worker started is stopped, even on error or Ctrl-C. Redis is
used only in the database number of --redis-url (never 0), which is flushed before each run and
at the end.

What is measured (stdout holds the figures and checks; progress goes to stderr):

* `relay alone`: orderpay.jobs.Relay(...).relay_due() in this process moves every row to the
  RQ queue (SELECT ... FOR UPDATE SKIP LOCKED, one enqueue_many pipeline per pass of 500
  rows, jobs of up to 100 rows, UPDATE enqueued_at), no worker running; rows/s. It runs
  before every worker run too (the rows are reset in between); the last line gives the
  median of all of them.
* `worker (CLASS, N processes)`: with every row relayed, N `orderpay worker --burst
  --worker-class fork|simple` processes (REDIS_URL set, so RQ mode; their relay finds nothing
  left to do) run the real job, orderpay.jobs.send_notifications: a batch of rows claimed in
  groups, each rendered and sent through the LogChannel (one JSON log line, to a file), each
  group recorded in one statement. notifications/s = rows divided by the wall time
  from starting the processes to the moment the database shows every row `sent` (polled every
  20 ms, or 1/1000 of the time so far once that is longer). Process start-up is inside the
  figure, as it is for the ceiling. A run with no progress for 2 minutes fails.
* `RQ no-op`: the ceiling, in the same run. The same number of `rq worker --burst --serializer
  rq.serializers.JSONSerializer --worker-class rq.worker.Worker|SimpleWorker --logging_level
  WARNING` processes (orderpay's workers log RQ at WARNING too) drain as many jobs of `time.time`
  (an argument-less builtin whose result serialises to JSON), enqueued like the relay does
  (enqueue_many, same timeouts and TTLs) on a queue of their own; jobs/s from start to the
  moment RQ's finished-job registry holds every job. ratio = notifications/s / jobs/s.
* `sms gateway`: for each of --gateway-delays (default 0.05 and 0.2 s), --gateway-count rows
  queued for the `sms` channel, relayed, are sent by N `orderpay worker --burst` (SimpleWorker)
  processes, with the default ORDERPAY_SMS_MAX_IN_FLIGHT, through bench/sms_gateway.py (a
  local Africa's Talking in a process of its own, answering every message after that delay);
  notifications/s from the first message the gateway received to the last row recorded sent
  (process start-up left out; the rate from the processes' start follows it), checked against
  the gateway's log: every number once, every row sent on its first try.
* `burst`: the largest N `orderpay worker` processes run (each its relay and its RQ worker)
  while settled payments with `sms` rows are committed at --burst-rate a second (default 2,400:
  the listener's rate of signed callbacks) for --burst-seconds (default 5), each commit
  NOTIFYing the relays as the listener's do; the gateway answers in the first delay. Prints the
  delivery latency of each message (its row's commit to the gateway's receipt) p50/p99/max and
  how long after the burst's end the last message arrived; checked: every number once.
* `--profile`: one more run, in this process: a SimpleWorker drains every job under cProfile,
  with SQLAlchemy, pool and Redis calls counted; prints the round trips per job and the share
  of time in each step, and the top functions (stderr). cProfile slows Python code down, so the
  shares are indicative and the rate is not comparable to the figures above.

Checks (the script exits 1 when one fails): after a relay, every row is marked enqueued and the
queue's jobs hold every row once; after a worker run, every row is `sent` with attempts == 1, body
rendered and gateway_message_id `log-<id>`, there is exactly one `notification_sent` order
row per order, and no job failed; after a no-op run, every job finished and none failed.

Goals (GOAL_* below; the output says whether each is met): the workers reach at least
GOAL_RATIO of RQ's no-op rate with the same worker class and number of processes; the relay
alone moves at least GOAL_RELAY_ROWS_PER_SECOND rows/s; 2 workers send at least
GOAL_GATEWAY_RATE notifications/s through the gateway at 50 and 200 ms; the burst's p99 latency
is under GOAL_BURST_P99_SECONDS.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import DEFAULT_BASE_URL, console_script, note, ratio, say, throwaway_database, vacuum
from redis import Redis
from sqlalchemy import text

from orderpay.config import Settings, load_settings
from orderpay.jobs import (
    FAILURE_TTL_SECONDS,
    JOB_TIMEOUT_SECONDS,
    QUEUE_NAME,
    RESULT_TTL_SECONDS,
    Relay,
    make_queue,
)
from orderpay.store.db import Database
from orderpay.store.notifications import OUTBOX_CHANNEL

DEFAULT_COUNT = 5000
DEFAULT_WORKERS = "1,2"
DEFAULT_CLASSES = "fork,simple"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
NOOP_QUEUE = "orderpay-bench-noop"
NOOP_FUNCTION = "time.time"
POLL_SECONDS = 0.02  # at first; then 1/1000 of the time so far, so long runs poll less
STALL_SECONDS = 120.0  # a run with no job done for this long has failed
GOAL_RATIO = 0.8
GOAL_BURST_P99_SECONDS = 10.0
GOAL_GATEWAY_RATE = {0.05: 1000.0, 0.2: 500.0}  # notifications/s with 2 workers, by delay
GOAL_RELAY_ROWS_PER_SECOND = 5000.0

PRICE_MINOR = 2500  # 25.00 GHS, one item per order
CURRENCY = "GHS"
PHONE_SQL = "'+23324' || lpad(n::text, 7, '0')"  # customer n's E.164 phone


@dataclass(frozen=True, slots=True)
class WorkerClass:
    option: str  # orderpay worker --worker-class
    label: str
    rq_path: str  # rq worker --worker-class


WORKER_CLASSES = {
    "fork": WorkerClass("fork", "Worker", "rq.worker.Worker"),
    "simple": WorkerClass("simple", "SimpleWorker", "rq.worker.SimpleWorker"),
}


@dataclass(frozen=True, slots=True)
class Drained:
    seconds: float
    first_seconds: float  # until the first job was done: mostly process start-up


# --- set-up -----------------------------------------------------------------------------


PRODUCT_ID = uuid.UUID("00000000-0000-4000-8000-00000000bea5")


def create_settled_payments(db: Database, count: int) -> None:
    """`count` settled payments, each with one pending outbox row, in bulk SQL."""
    with db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO products (id, name, description, price, currency, active, created_at)"
                " VALUES (:product, 'Kenkey', '', :price, :currency, true, now())"
            ),
            {"product": PRODUCT_ID, "price": PRICE_MINOR, "currency": CURRENCY},
        )
        add_settled_payments(conn, 1, count, "log")
    vacuum(db)


def add_settled_payments(conn: Any, first: int, last: int, channel: str) -> None:
    """Settled payments number `first` to `last`, each with one pending outbox row queued for
    `channel`, in one transaction (the caller's)."""
    params = {
        "first": first,
        "last": last,
        "product": PRODUCT_ID,
        "price": PRICE_MINOR,
        "currency": CURRENCY,
        "channel": channel,
    }
    numbers = "generate_series(:first, :last) AS n"
    statements = [
        "INSERT INTO customers (name, phone, email, created_at)"
        f" SELECT 'Ama Mensah', {PHONE_SQL}, NULL, now()"
        f" FROM {numbers} ORDER BY n",
        "INSERT INTO orders (id, customer_id, status, currency, total, created_at, updated_at)"
        " SELECT md5('o' || n)::uuid, c.id, 'paid', :currency, :price, now(), now()"
        f" FROM {numbers} JOIN customers AS c ON c.phone = {PHONE_SQL}"
        " ORDER BY n",
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
        " SELECT md5('o' || n)::uuid, :product, 1, :price FROM " + numbers,
        "INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount, currency,"
        " payer_phone, provider, provider_reference, status, failure_reason, lease_expires_at,"
        " created_at, updated_at)"
        " SELECT md5('p' || n)::uuid, md5('o' || n)::uuid, 'bench-' || n,"
        " encode(sha256(('charge-' || n)::bytea), 'hex'), :price, :currency, "
        f" {PHONE_SQL}, 'simulator', md5('p' || n)::uuid::text, 'succeeded', NULL, NULL,"
        f" now(), now() FROM {numbers}",
        # outbox.add_notification: channel `log`, recipient the customer's phone, body empty.
        "INSERT INTO notifications (order_id, payment_id, kind, channel, recipient, body,"
        " status, attempts, last_error, gateway_message_id, due_at, enqueued_at, sent_at,"
        " created_at, updated_at)"
        " SELECT md5('o' || n)::uuid, md5('p' || n)::uuid, 'payment_received', :channel,"
        f" {PHONE_SQL}, '', 'pending', 0, NULL, NULL, now(), NULL, NULL, now(), now()"
        f" FROM {numbers} ORDER BY n",
        "INSERT INTO order_events (order_id, at, event, detail)"
        " SELECT md5('o' || n)::uuid, now(), e.event, CASE e.event"
        "  WHEN 'order_created' THEN '1 item, total 25.00 GHS'"
        "  WHEN 'payment_initiated' THEN 'payment ' || md5('p' || n)::uuid"
        "   || ' for 25.00 GHS from +233*****' || right(lpad(n::text, 7, '0'), 4)"
        "   || ' via simulator'"
        "  WHEN 'payment_pending' THEN 'payment ' || md5('p' || n)::uuid"
        "   || ' accepted by simulator'"
        "  WHEN 'payment_succeeded' THEN 'payment ' || md5('p' || n)::uuid"
        "   || ' of 25.00 GHS succeeded (callback)'"
        "  ELSE 'paid by payment ' || md5('p' || n)::uuid END"
        f" FROM {numbers}, (VALUES (1, 'order_created'),"
        "  (2, 'payment_initiated'), (3, 'payment_pending'), (4, 'payment_succeeded'),"
        "  (5, 'order_paid')) AS e(k, event)"
        " ORDER BY n, e.k",
        "INSERT INTO order_events (order_id, at, event, detail)"
        " SELECT x.order_id, now(), 'notification_queued',"
        " 'notification ' || x.id || ' via ' || x.channel"
        " FROM notifications AS x WHERE x.payment_id IN"
        f" (SELECT md5('p' || n)::uuid FROM {numbers}) ORDER BY x.id",
    ]
    for statement in statements:
        conn.execute(text(statement), params)


def reset_notifications(db: Database) -> None:
    """Every row back to pending, not enqueued, no attempt; the sent events gone."""
    with db.transaction() as conn:
        conn.execute(
            text(
                "UPDATE notifications SET status = 'pending', body = '', attempts = 0,"
                " last_error = NULL, gateway_message_id = NULL, due_at = now(), enqueued_at = NULL,"
                " sent_at = NULL, updated_at = now()"
            )
        )
        conn.execute(text("DELETE FROM order_events WHERE event = 'notification_sent'"))
    vacuum(db)


def scalar(db: Database, sql: str) -> Any:
    with db.transaction() as conn:
        return conn.execute(text(sql)).scalar_one()


def row(db: Database, sql: str) -> tuple[Any, ...]:
    with db.transaction() as conn:
        return tuple(conn.execute(text(sql)).one())


def sent_count(db: Database) -> int:
    return int(scalar(db, "SELECT count(*) FROM notifications WHERE status = 'sent'"))


# --- Redis ------------------------------------------------------------------------------


def connect_bench_redis(url: str) -> Redis:
    redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30)
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))
    if db == 0:
        raise SystemExit(f"--redis-url must name a dedicated database number, not 0: {url}")
    redis.ping()
    return redis


def finished_jobs(redis: Redis, queue: str) -> int:
    return int(redis.zcard(f"rq:finished:{queue}"))


def failed_jobs(redis: Redis, queue: str) -> int:
    return int(redis.zcard(f"rq:failed:{queue}"))


def enqueue_noop_jobs(redis: Redis, count: int) -> None:
    """`count` jobs of an argument-less builtin, enqueued like the relay enqueues."""
    queue = make_queue(redis, NOOP_QUEUE)
    for start in range(0, count, 500):
        jobs = [
            queue.prepare_data(
                NOOP_FUNCTION,
                job_id=f"noop-{n}",
                timeout=JOB_TIMEOUT_SECONDS,
                result_ttl=RESULT_TTL_SECONDS,
                failure_ttl=FAILURE_TTL_SECONDS,
            )
            for n in range(start, min(start + 500, count))
        ]
        queue.enqueue_many(jobs)
    if queue.count != count:
        raise RuntimeError(f"the no-op queue holds {queue.count} jobs, not {count}")


# --- runs -------------------------------------------------------------------------------


def relay_everything(db: Database, redis: Redis, settings: Settings, count: int) -> float:
    """Seconds Relay.relay_due() takes to move every due row to the queue."""
    relay = Relay(
        db,
        make_queue(redis),
        settings.retry_intervals,
        lost_after=timedelta(seconds=settings.relay_lost_after_seconds),
    )
    start = time.perf_counter()
    moved = relay.relay_due()
    elapsed = time.perf_counter() - start
    if moved != count:
        raise RuntimeError(f"the relay moved {moved} rows, not {count}")
    return elapsed


def check_relayed(db: Database, redis: Redis, count: int) -> bool:
    enqueued = int(
        scalar(
            db,
            "SELECT count(*) FROM notifications"
            " WHERE status = 'pending' AND enqueued_at IS NOT NULL AND attempts = 0",
        )
    )
    queue = make_queue(redis)
    rows = sorted(nid for job in queue.get_jobs() for nid in job.args[0])
    ok = enqueued == count == len(rows) == len(set(rows))
    say(
        f"check relay: {enqueued} rows marked enqueued, the queue's {queue.count} jobs hold"
        f" {len(rows)} rows, each once (want {count}): {'ok' if ok else 'FAILED'}"
    )
    return ok


@contextmanager
def started(
    argvs: Sequence[Sequence[str]], env: dict[str, str], workdir: Path, tag: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start one process per argv (output to files in workdir); stop leftovers on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index, argv in enumerate(argvs):
            with open(workdir / f"{tag}-{index}.log", "wb") as output:
                processes.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        cwd=workdir,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def log_tail(workdir: Path, tag: str, lines: int = 15) -> str:
    parts = []
    for path in sorted(workdir.glob(f"{tag}-*.log")):
        content = [
            line
            for line in path.read_text(errors="replace").splitlines()
            if '"logger": "orderpay.notify"' not in line
        ][-lines:]
        parts.append(f"--- {path.name}\n" + "\n".join(content))
    return "\n".join(parts)


def drain(
    argvs: Sequence[Sequence[str]],
    env: dict[str, str],
    workdir: Path,
    tag: str,
    done: Callable[[], int],
    count: int,
) -> Drained:
    """Start the workers and time them until `done()` reaches `count`; wait for them to exit."""
    start = time.perf_counter()
    first: float | None = None
    progress = (0, start)  # (jobs done, when that count was first seen)
    with started(argvs, env, workdir, tag) as processes:
        while True:
            finished = done()
            now = time.perf_counter()
            if finished and first is None:
                first = now - start
            if finished >= count:
                elapsed = now - start
                break
            if all(process.poll() is not None for process in processes) and done() < count:
                raise RuntimeError(
                    f"{tag}: the workers exited with {done()} of {count} done:\n"
                    + log_tail(workdir, tag)
                )
            if finished != progress[0]:
                progress = (finished, now)
            elif now - progress[1] > STALL_SECONDS:
                raise RuntimeError(
                    f"{tag}: stuck at {finished} of {count} done for"
                    f" {STALL_SECONDS:.0f} s:\n" + log_tail(workdir, tag)
                )
            time.sleep(max(POLL_SECONDS, (now - start) / 1000))
        codes = [process.wait(timeout=60) for process in processes]
    if any(codes):
        raise RuntimeError(f"{tag}: exit codes {codes}:\n" + log_tail(workdir, tag))
    return Drained(elapsed, first if first is not None else elapsed)


def check_delivered(db: Database, redis: Redis, count: int, label: str) -> bool:
    sent, once, complete = row(
        db,
        "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE attempts = 1),"
        " count(*) FILTER (WHERE status = 'sent' AND attempts = 1 AND body LIKE 'Hi Ama, w%'"
        " AND gateway_message_id = 'log-' || id AND sent_at IS NOT NULL) FROM notifications",
    )
    events, orders = row(
        db,
        "SELECT count(*), count(DISTINCT order_id) FROM order_events"
        " WHERE event = 'notification_sent'",
    )
    failed = failed_jobs(redis, QUEUE_NAME)
    left = make_queue(redis).count
    ok = sent == once == complete == events == orders == count and failed == left == 0
    say(
        f"check {label}: {sent} sent, {once} with attempts == 1, {complete} rendered and"
        f" recorded, {events} notification_sent events on {orders} orders (want {count} each);"
        f" {failed} failed jobs, {left} left in the queue: {'ok' if ok else 'FAILED'}"
    )
    return ok


def check_noop(redis: Redis, count: int, label: str) -> bool:
    finished = finished_jobs(redis, NOOP_QUEUE)
    failed = failed_jobs(redis, NOOP_QUEUE)
    left = make_queue(redis, NOOP_QUEUE).count
    ok = finished == count and failed == left == 0
    say(
        f"check RQ no-op ({label}): {finished} finished (want {count}), {failed} failed, {left}"
        f" left in the queue: {'ok' if ok else 'FAILED'}"
    )
    return ok


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The workers' environment: this database, this Redis, the log channel; no .env (they run
    in a scratch directory)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORDERPAY_", "POSTGRES_", "MTN_", "MOMO_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ORDERPAY_NOTIFY_CHANNEL": "log",
        }
    )
    env.pop("PYTHONPATH", None)
    return env


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}es"


# --- a slow SMS gateway -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayProcess:
    url: str
    log: Path


@contextmanager
def sms_gateway(delay: float, workdir: Path) -> Iterator[GatewayProcess]:
    """bench/sms_gateway.py in a process of its own, answering after `delay` seconds."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = workdir / f"gateway-{delay:g}-{time.monotonic_ns()}.log"
    script = Path(__file__).resolve().parent / "sms_gateway.py"
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), str(delay), str(log)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the SMS gateway did not start")
        yield GatewayProcess(f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def received(gateway: GatewayProcess) -> list[tuple[float, str]]:
    """(time.time() of arrival, number) of every message the gateway received, in order."""
    lines = gateway.log.read_text().splitlines()
    return [(float(at), number) for at, number in (line.split("\t") for line in lines)]


def sms_worker_env(env: dict[str, str], url: str) -> dict[str, str]:
    return {
        **env,
        "ORDERPAY_NOTIFY_CHANNEL": "sms",
        "ORDERPAY_SMS_URL": url,
        "ORDERPAY_SMS_USERNAME": "sandbox",
        "ORDERPAY_SMS_API_KEY": "bench-key",
    }


def last_sent_epoch(db: Database, where: str = "true") -> float:
    return float(
        scalar(db, f"SELECT extract(epoch FROM max(sent_at)) FROM notifications WHERE {where}")
    )


def gateway_run(
    db: Database,
    redis: Redis,
    settings: Settings,
    env: dict[str, str],
    workdir: Path,
    orderpay_cli: str,
    workers: int,
    delay: float,
    count: int,
) -> bool:
    """`count` rows queued for sms, relayed, then sent by `workers` `orderpay worker --burst`
    (SimpleWorker) processes through a gateway that answers in `delay` s; the figure and its
    check."""
    reset_notifications(db)
    with db.transaction() as conn:
        conn.execute(
            text(  # only the first `count` rows are due; the others stay as sent
                "UPDATE notifications SET channel = 'sms',"
                " status = CASE WHEN id <= (SELECT min(id) FROM notifications) + :n - 1"
                " THEN 'pending' ELSE 'sent' END"
            ),
            {"n": count},
        )
    redis.flushdb()
    relay = Relay(
        db,
        make_queue(redis),
        settings.retry_intervals,
        lost_after=timedelta(seconds=settings.relay_lost_after_seconds),
    )
    if relay.relay_due() != count:
        raise RuntimeError("the relay did not move every row queued for sms")
    with sms_gateway(delay, workdir) as gateway:
        argvs = [[orderpay_cli, "worker", "--burst", "--worker-class", "simple"]] * workers
        total = int(scalar(db, "SELECT count(*) FROM notifications"))
        tag = f"sms-{workers}-{delay:g}"
        done = drain(
            argvs, sms_worker_env(env, gateway.url), workdir, tag, lambda: sent_count(db), total
        )
    messages = received(gateway)
    once = int(
        scalar(
            db,
            "SELECT count(*) FROM notifications WHERE channel = 'sms'"
            " AND status = 'sent' AND attempts = 1 AND gateway_message_id LIKE"
            " 'ATXid_%'",
        )
    )
    numbers = Counter(number for _at, number in messages)
    expected = set(
        db_rows(db, "SELECT recipient FROM notifications WHERE channel = 'sms' AND attempts = 1")
    )
    each_once = set(numbers) == expected and set(numbers.values()) == {1}
    ok = len(messages) == once == count and each_once
    goal = GOAL_GATEWAY_RATE.get(delay) if workers == 2 else None
    # The rate once the workers run: from the first message the gateway received to the last
    # row recorded sent (process start-up, about a second, is outside it; the figure from the
    # start of the processes follows it).
    first = min(at for at, _number in messages)
    steady = count / (last_sent_epoch(db, "channel = 'sms'") - first)
    say(
        f"worker (SimpleWorker, {plural(workers, 'process')}, sms gateway answering in"
        f" {delay * 1000:.0f} ms, up to {settings.sms_max_in_flight} in flight each):"
        f" {steady:.0f} notifications/s from the first message to the"
        f" last recorded ({count / done.seconds:.0f}/s counting process start-up: {count} in"
        f" {done.seconds:.2f} s)"
        + (
            f" (goal >= {goal:.0f}: {'met' if steady >= goal else 'NOT met'})"
            if goal is not None
            else ""
        )
        + f"; check: {len(messages)} messages received, each number"
        f" {'once' if each_once else 'NOT once'}, {once} rows sent on the first try (want"
        f" {count} each): {'ok' if ok else 'FAILED'}"
    )
    with db.transaction() as conn:
        conn.execute(text("UPDATE notifications SET channel = 'log'"))
    return ok


def db_rows(db: Database, sql: str) -> list[Any]:
    with db.transaction() as conn:
        return [row[0] for row in conn.execute(text(sql))]


# --- a burst ---------------------------------------------------------------------------


def produce(db: Database, first: int, rate: float, seconds: float) -> tuple[int, float, float]:
    """Settled payments with sms rows, committed at `rate` a second for `seconds` (each
    commit NOTIFYs the relays, as the listener's does): (rows, start, end), times in
    time.time()."""
    tick = 0.01
    made = 0
    start = time.time()
    while (now := time.time()) < start + seconds:
        due = int((now - start) * rate) - made
        if due > 0:
            with db.transaction() as conn:
                add_settled_payments(conn, first + made, first + made + due - 1, "sms")
                conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
            made += due
        time.sleep(max(0.0, start + (made + 1) / rate - time.time(), tick / 10))
    return made, start, time.time()


def burst_run(
    db: Database,
    redis: Redis,
    env: dict[str, str],
    workdir: Path,
    orderpay_cli: str,
    workers: int,
    delay: float,
    rate: float,
    seconds: float,
) -> bool:
    """`workers` `orderpay worker` processes (relay and RQ worker each) running while
    settled payments arrive at `rate` a second for `seconds`; the delivery latency of each
    (its commit to the gateway's receipt) and its check."""
    from rq import Worker

    with db.transaction() as conn:
        conn.execute(text("UPDATE notifications SET status = 'sent' WHERE status <> 'sent'"))
    redis.flushdb()
    first = int(scalar(db, "SELECT count(*) FROM payments")) + 1
    before = int(scalar(db, "SELECT coalesce(max(id), 0) FROM notifications"))
    argvs = [[orderpay_cli, "worker", "--worker-class", "simple"]] * workers
    with (
        sms_gateway(delay, workdir) as gateway,
        started(argvs, sms_worker_env(env, gateway.url), workdir, f"burst-{workers}") as processes,
    ):
        queue = make_queue(redis)
        deadline = time.monotonic() + 60
        while Worker.count(connection=redis, queue=queue) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start:\n" + log_tail(workdir, "burst"))
            time.sleep(0.05)
        note(f"burst: {workers} workers up; {rate:.0f} payments/s for {seconds:g} s")
        made, start, end = produce(db, first, rate, seconds)
        where = f"id > {before}"
        progress = (0, time.monotonic())
        while (
            sent := int(
                scalar(db, f"SELECT count(*) FROM notifications WHERE {where} AND status = 'sent'")
            )
        ) < made:
            if sent != progress[0]:
                progress = (sent, time.monotonic())
            elif time.monotonic() - progress[1] > STALL_SECONDS:
                raise RuntimeError(
                    f"burst: stuck at {sent} of {made}:\n" + log_tail(workdir, "burst")
                )
            time.sleep(0.05)
        for process in processes:
            process.terminate()
        codes = [process.wait(timeout=60) for process in processes]
    committed = dict(
        db_rows_pairs(
            db,
            f"SELECT recipient, extract(epoch FROM created_at) FROM notifications WHERE {where}",
        )
    )
    messages = [(at, number) for at, number in received(gateway)]
    numbers = Counter(number for _at, number in messages)
    each_once = set(numbers) == set(committed) and set(numbers.values()) == {1}
    latencies = sorted(at - committed[number] for at, number in messages if number in committed)
    last = max(at for at, _number in messages)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    ok = each_once and len(latencies) == made and not any(codes)
    say(
        f"burst ({plural(workers, 'process')}, sms gateway answering in {delay * 1000:.0f} ms):"
        f" {made} payments committed at {made / (end - start):.0f}/s for {end - start:.1f} s;"
        f" delivery latency (commit to the gateway's receipt) p50 {pct(0.5):.2f} s, p99"
        f" {pct(0.99):.2f} s, max {latencies[-1]:.2f} s (goal p99 < {GOAL_BURST_P99_SECONDS:g} s:"
        f" {'met' if pct(0.99) < GOAL_BURST_P99_SECONDS else 'NOT met'}); the last message"
        f" {last - end:.2f} s after the burst's end; check: {len(messages)} messages received,"
        f" each number {'once' if each_once else 'NOT once'} (want {made}), exit codes {codes}:"
        f" {'ok' if ok else 'FAILED'}"
    )
    return ok


def db_rows_pairs(db: Database, sql: str) -> list[tuple[Any, Any]]:
    with db.transaction() as conn:
        return [(row[0], float(row[1])) for row in conn.execute(text(sql))]


# --- profile ----------------------------------------------------------------------------


@contextmanager
def counted_round_trips() -> Iterator[Counter[str]]:
    """Count SQL statements (by kind), transactions, pool pings and connects, Redis commands."""
    from redis.connection import Connection as RedisConnection
    from sqlalchemy import event
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counts: Counter[str] = Counter()

    def counter(name: str) -> Callable[..., None]:
        def count(*_args: Any, **_kwargs: Any) -> None:
            counts[name] += 1

        return count

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        words = sql.split()
        kind = words[0].upper()
        if kind == "SELECT" and len(words) > 1 and words[1].startswith("nextval"):
            kind = "SELECT nextval"
        counts["statements"] += 1
        counts[f"sql {kind}"] += 1

    listeners = [
        (Engine, "before_cursor_execute", statement),
        (Engine, "begin", counter("transactions")),
        (Pool, "connect", counter("connects")),
    ]
    for target, name, function in listeners:
        event.listen(target, name, function)
    # pool_pre_ping's SELECT 1 bypasses the cursor events: count the dialect's ping instead.
    owner = next(cls for cls in PGDialect_psycopg2.__mro__ if "do_ping" in vars(cls))
    ping = vars(owner)["do_ping"]

    def do_ping(self: Any, dbapi_connection: Any) -> Any:
        counts["pings"] += 1
        return ping(self, dbapi_connection)

    original = RedisConnection.send_packed_command

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        counts["redis"] += 1
        original(self, command, check_health)

    owner.do_ping = do_ping  # type: ignore[attr-defined]
    RedisConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        RedisConnection.send_packed_command = original  # type: ignore[method-assign]
        owner.do_ping = ping  # type: ignore[attr-defined]
        for target, name, function in listeners:
            event.remove(target, name, function)


def cumulative(stats: pstats.Stats, file_suffix: str, function: str) -> float:
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(
        value[3]
        for (path, _line, name), value in raw.items()
        if name == function and path.endswith(file_suffix)
    )


def profile_in_process(
    database_url: str, redis: Redis, redis_url: str, count: int, workdir: Path
) -> None:
    """Drain the relayed jobs with a SimpleWorker in this process under cProfile."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from orderpay import jobs
    from orderpay.logs import JsonFormatter

    os.environ.update(worker_env(database_url, redis_url))
    # As `orderpay worker` logs: one JSON line per message at INFO, here to a file.
    handler = logging.FileHandler(workdir / "profile.log")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    worker = SimpleWorker([make_queue(redis)], connection=redis, serializer=JSONSerializer)
    profiler = cProfile.Profile()
    try:
        with counted_round_trips() as counts:
            start = time.perf_counter()
            profiler.enable()
            worker.work(burst=True, logging_level="WARNING")
            profiler.disable()
            elapsed = time.perf_counter() - start
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        handler.close()
        if jobs._process is not None:
            jobs._process[1].close()
            jobs._process = None
    stats = pstats.Stats(profiler, stream=io.StringIO())
    per_job = {name: counts[name] / count for name in sorted(counts)}
    statements = per_job.get("statements", 0)
    transactions = per_job.get("transactions", 0)
    pings = per_job.get("pings", 0)
    kinds = ", ".join(
        f"{name.removeprefix('sql ')} {value:.2f}"
        for name, value in per_job.items()
        if name.startswith("sql ")
    )
    say(
        f"profile (SimpleWorker in-process, cProfile): {count} jobs in {elapsed:.2f} s;"
        f" per job {statements:.2f} SQL statements ({kinds}) in {transactions:.2f}"
        f" transactions (+BEGIN +COMMIT each), {pings:.2f} pool pings,"
        f" {per_job.get('connects', 0):.4f} new connections"
        f" = {statements + 2 * transactions + pings:.1f} Postgres round trips;"
        f" {per_job.get('redis', 0):.1f} Redis round trips"
    )
    total = cumulative(stats, "rq/worker/base.py", "work") or elapsed
    steps = [
        ("RQ dequeue", cumulative(stats, "rq/worker/base.py", "dequeue_job_and_maintain_ttl")),
        (
            "RQ job bookkeeping (perform_job minus the job)",
            cumulative(stats, "rq/worker/base.py", "perform_job")
            - cumulative(stats, "orderpay/jobs.py", "send_notification"),
        ),
        (
            "claim transaction",
            cumulative(stats, "orderpay/delivery.py", "deliver")
            - cumulative(stats, "orderpay/delivery.py", "send_attempt"),
        ),
        ("render", cumulative(stats, "orderpay/delivery.py", "render")),
        ("LogChannel.send (logging)", cumulative(stats, "orderpay/channels.py", "send")),
        (
            "record transaction",
            cumulative(stats, "orderpay/delivery.py", "send_attempt")
            - cumulative(stats, "orderpay/delivery.py", "render")
            - cumulative(stats, "orderpay/channels.py", "send"),
        ),
    ]
    shares = "; ".join(
        f"{name} {seconds / count * 1000:.3f} ms ({seconds / total:.0%})" for name, seconds in steps
    )
    say(f"profile per job (ms under cProfile, share of the work loop): {shares}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    out.write("\n--- by own time\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    note(out.getvalue())


# --- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"settled payments / notifications (default {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--workers",
        default=DEFAULT_WORKERS,
        help=f"worker process counts, comma-separated (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--classes",
        default=DEFAULT_CLASSES,
        help=f"fork and/or simple, comma-separated (default {DEFAULT_CLASSES})",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_BASE_URL,
        help="server on which to create the throwaway database",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"a dedicated Redis database, flushed (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one SimpleWorker run in this process"
    )
    parser.add_argument(
        "--gateway-delays",
        default="0.05,0.2",
        help="also send through a local SMS gateway answering in each of these many seconds"
        " (default 0.05,0.2; empty: skip)",
    )
    parser.add_argument(
        "--gateway-count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"notifications sent through the SMS gateway (default {DEFAULT_COUNT}, at most"
        " --count)",
    )
    parser.add_argument(
        "--burst-seconds",
        type=float,
        default=5.0,
        help="a burst of settled payments this long, delivered while it arrives (0: skip)",
    )
    parser.add_argument(
        "--burst-rate",
        type=float,
        default=2400.0,
        help="payments settled per second during the burst (default 2400: the listener's"
        " rate of signed callbacks, bench/webhooks.py)",
    )
    args = parser.parse_args(argv)
    args.worker_counts = [int(part) for part in args.workers.split(",") if part.strip()]
    args.class_names = [part.strip() for part in args.classes.split(",") if part.strip()]
    args.delays = [float(part) for part in args.gateway_delays.split(",") if part.strip()]
    unknown = [name for name in args.class_names if name not in WORKER_CLASSES]
    if unknown or not args.worker_counts or min(args.worker_counts) < 1 or args.count < 1:
        parser.error("--classes takes fork and/or simple; --workers and --count positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    count = args.count
    redis = connect_bench_redis(args.redis_url)
    orderpay_cli, rq_cli = str(console_script("orderpay")), str(console_script("rq"))
    ok = True
    relay_times: list[float] = []
    try:
        with (
            throwaway_database(args.database_url) as url,
            tempfile.TemporaryDirectory(prefix="orderpay-bench-worker-") as scratch,
        ):
            workdir = Path(scratch)
            env = worker_env(url, args.redis_url)
            settings = load_settings(DATABASE_URL=url, REDIS_URL=args.redis_url)
            db = Database(url)
            try:
                note(f"set-up: {count} settled payments with pending notifications")
                create_settled_payments(db, count)
                db.check_schema()  # opens the connection the relay uses
                redis.flushdb()
                relay_times.append(relay_everything(db, redis, settings, count))
                seconds = relay_times[0]
                say(
                    f"relay alone: {count} rows in {seconds:.2f} s = {count / seconds:.0f} rows/s"
                    f" (goal >= {GOAL_RELAY_ROWS_PER_SECOND:.0f}:"
                    f" {'met' if count / seconds >= GOAL_RELAY_ROWS_PER_SECOND else 'NOT met'})"
                )
                ok &= check_relayed(db, redis, count)
                for class_name in args.class_names:
                    kind = WORKER_CLASSES[class_name]
                    for n in args.worker_counts:
                        label = f"{kind.label}, {plural(n, 'process')}"
                        reset_notifications(db)
                        redis.flushdb()
                        relay_times.append(relay_everything(db, redis, settings, count))
                        note(f"{label}: relayed in {relay_times[-1]:.2f} s; orderpay workers")
                        argvs = [
                            [orderpay_cli, "worker", "--burst", "--worker-class", kind.option]
                        ] * n
                        tag = f"orderpay-{class_name}-{n}"
                        mine = drain(argvs, env, workdir, tag, lambda: sent_count(db), count)
                        ok &= check_delivered(db, redis, count, f"worker ({label})")
                        redis.flushdb()
                        enqueue_noop_jobs(redis, count)
                        note(
                            f"{label}: orderpay {mine.seconds:.2f} s (first done after"
                            f" {mine.first_seconds:.2f} s); RQ no-op workers"
                        )
                        argvs = [
                            [
                                rq_cli,
                                "worker",
                                "--burst",
                                "--serializer",
                                "rq.serializers.JSONSerializer",
                                "--worker-class",
                                kind.rq_path,
                                "--url",
                                args.redis_url,
                                "--logging_level",
                                "WARNING",
                                NOOP_QUEUE,
                            ]
                        ] * n
                        tag = f"noop-{class_name}-{n}"
                        noop = drain(
                            argvs,
                            env,
                            workdir,
                            tag,
                            lambda: finished_jobs(redis, NOOP_QUEUE),
                            count,
                        )
                        ok &= check_noop(redis, count, label)
                        note(
                            f"{label}: no-op {noop.seconds:.2f} s (first done after"
                            f" {noop.first_seconds:.2f} s)"
                        )
                        rate, ceiling = count / mine.seconds, count / noop.seconds
                        share = ratio(rate, ceiling)
                        say(
                            f"worker ({label}): {rate:.0f} notifications/s; RQ no-op:"
                            f" {ceiling:.0f} jobs/s; ratio {share:.2f} (goal >= {GOAL_RATIO}:"
                            f" {'met' if share >= GOAL_RATIO else 'NOT met'})"
                        )
                if len(relay_times) > 1:
                    median = statistics.median(relay_times)
                    low, high = count / max(relay_times), count / min(relay_times)
                    say(
                        f"relay alone, median of {len(relay_times)} runs: {count / median:.0f}"
                        f" rows/s (range {low:.0f}-{high:.0f}; goal >="
                        f" {GOAL_RELAY_ROWS_PER_SECOND:.0f}:"
                        f" {'met' if count / median >= GOAL_RELAY_ROWS_PER_SECOND else 'NOT met'})"
                    )
                for delay in args.delays:
                    for n in args.worker_counts:
                        ok &= gateway_run(
                            db,
                            redis,
                            settings,
                            env,
                            workdir,
                            orderpay_cli,
                            n,
                            delay,
                            min(args.gateway_count, count),
                        )
                if args.profile:
                    reset_notifications(db)
                    redis.flushdb()
                    relay_everything(db, redis, settings, count)
                    note("profile: SimpleWorker in this process under cProfile")
                    profile_in_process(url, redis, args.redis_url, count, workdir)
                    ok &= check_delivered(db, redis, count, "profile run")
                if args.burst_seconds > 0:
                    ok &= burst_run(
                        db,
                        redis,
                        env,
                        workdir,
                        orderpay_cli,
                        max(args.worker_counts),
                        args.delays[0] if args.delays else 0.05,
                        args.burst_rate,
                        args.burst_seconds,
                    )
            finally:
                db.dispose()
    finally:
        redis.flushdb()
        redis.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
