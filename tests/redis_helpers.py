"""Fixtures and helpers for the notification tests: Redis, worker processes, the gateway.

- `redis_url`: a per-test URL on the test Redis (ORDERPAY_TEST_REDIS, or the suite's own), on a
  db number (8-13) this test holds alone (claimed with a lock key in db 15, so two test
  processes never share one) and flushed before and after. dbs 0-7 and 14 are never touched.
- `private_redis`: a redis-server of this test's own on a free port, to stop and start again
  on the same port (outages). Only this one is ever stopped.
- `a_settled_payment`: an order charged through the simulator and settled by its callback,
  so its notification (outbox) row is `pending`.
- `Gateway`: a scripted SMS gateway (Africa's Talking) or merchant endpoint on loopback, built
  on tests.http_recorder; it can fail, hang until released, and counts what it answered.
- `WorkerProcess` / `run_orderpay`: the real `orderpay` CLI in a subprocess.

A test module makes a fixture available by importing it: the functions are `<name>_fixture`,
registered under `<name>` (`from tests.redis_helpers import redis_url_fixture  # noqa: F401`).
Modules that use `a_gateway` also import `shared_gateway_server_fixture` (module-scoped,
autouse): their gateways then share one loopback server instead of starting one each.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from orderpay import jobs, logs
from orderpay.errors import ConfigurationError
from orderpay.notify.channels import Channel, SmsChannel
from orderpay.notify.delivery import Channels
from orderpay.payments.callbacks import apply_callback, parse_callback
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import Notification, NotifyTarget, get_notification
from orderpay.store.order_events import events_of
from orderpay.store.schema import notifications
from tests.builders import AMA, a_key, an_order
from tests.http_recorder import Answer, Recorded, Recorder, recording_server
from tests.services import REDIS_VARIABLE, free_port, redis_server_binary

REDIS_HOST = "127.0.0.1"
TEST_DBS = (8, 9, 10, 11, 12, 13)  # 14 is bench/worker.py's default
LOCK_DB = 15
LOCK_SECONDS = 300
STARTUP_SECONDS = 10.0

# The environment every notification test runs with: fast retries, a short relay poll.
FAST_RETRIES = "1,1,1,1,1"
SMS_USERNAME = "sandbox"
SMS_API_KEY = "atsk_test_0123456789abcdef0123456789abcdef"
WEBHOOK_SECRET = "whsec_dGVzdC1tZXJjaGFudC1zZWNyZXQtMDEyMzQ1Njc4OQ=="
MERCHANT = "Kenkey Corner"
CONFIG_PREFIXES = ("ORDERPAY_", "MTN_MOMO_", "POSTGRES_")
CONFIG_NAMES = ("DATABASE_URL", "REDIS_URL", "MOMO_WEBHOOK_SECRET")


# --- Redis ----------------------------------------------------------------------------------


def redis_db_url(db: int) -> str:
    """The test Redis's URL with db `db` (never 0: the server may be someone's own)."""
    if db == 0:
        raise ValueError("tests never use db 0 of the test Redis")
    return urlunsplit(urlsplit(os.environ[REDIS_VARIABLE])._replace(path=f"/{db}"))


def shared_redis(db: int) -> Redis:
    return Redis.from_url(redis_db_url(db), socket_timeout=5)


@contextlib.contextmanager
def dedicated_redis_db() -> Iterator[str]:
    """A URL on the shared Redis whose db this caller holds alone; flushed before and after.

    A db is held with a lock key in db 15, so concurrent test runs never share one. An empty
    db is preferred: a non-empty one may be someone else's (db 14 is bench/worker.py's and is
    never used); one is flushed only when no empty db is free (leftovers of a killed run).
    """
    token = uuid.uuid4().hex
    locks = shared_redis(LOCK_DB)
    try:
        chosen = _claim_db(locks, token)
        client = shared_redis(chosen)
        try:
            client.flushdb()
            yield redis_db_url(chosen)
        finally:
            client.flushdb()
            client.close()
            if locks.get(_lock_key(chosen)) == token.encode():
                locks.delete(_lock_key(chosen))
    finally:
        locks.close()


def _lock_key(number: int) -> str:
    return f"orderpay-tests:db:{number}"


def _claim_db(locks: Redis, token: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        held_non_empty = []
        for number in TEST_DBS:
            if not locks.set(_lock_key(number), token, nx=True, ex=LOCK_SECONDS):
                continue
            with contextlib.closing(shared_redis(number)) as client:
                if client.dbsize() == 0:
                    for other in held_non_empty:
                        locks.delete(_lock_key(other))
                    return number
            held_non_empty.append(number)
        if held_non_empty:
            for other in held_non_empty[1:]:
                locks.delete(_lock_key(other))
            return held_non_empty[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"every test Redis db {TEST_DBS} is held by another test run")
        time.sleep(0.1)


@pytest.fixture(name="redis_url")
def redis_url_fixture() -> Iterator[str]:
    """The test Redis at db N, N in TEST_DBS, empty at the start and flushed at the end."""
    with dedicated_redis_db() as url:
        yield url


@contextlib.contextmanager
def redis_client(url: str) -> Iterator[Redis]:
    client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
    try:
        yield client
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of the test's own, on one port for its whole life (stop, start again).

    `persistent`: an append-only file in `directory`, written at every command, so that a
    restart finds what was there (RQ's registries); otherwise a restart starts empty.
    `password`: clients must give it (the URL carries it).
    """

    def __init__(
        self, directory: Path, *, persistent: bool = False, password: str | None = None
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}{REDIS_HOST}:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                str(redis_server_binary()),
                "--port",
                str(self.port),
                "--bind",
                REDIS_HOST,
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        with redis_client(self.url) as client:
            while True:
                with contextlib.suppress(RedisConnectionError, OSError):  # still starting
                    if client.ping():
                        return
                if self.process.poll() is not None:
                    self.process = None
                    raise RuntimeError(f"redis-server on port {self.port} exited at start")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(name="private_redis")
def private_redis_fixture(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A running private redis-server; stopped at the end whatever the test did to it."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- In-process workers ---------------------------------------------------------------------


@pytest.fixture(name="in_process_worker")
def in_process_worker_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lets a test run an RQ worker or `orderpay worker` in the pytest process.

    The job's per-process runtime (orderpay.jobs) starts afresh and is closed afterwards; the
    command keeps pytest's log capture (no JSON handler on the root logger); the signal
    handlers a worker installs are put back.
    """
    monkeypatch.setattr(jobs, "_process", None)
    monkeypatch.setattr(logs, "configure_logging", lambda level="INFO": None)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if jobs._process is not None:
            jobs._process[1].close()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


# --- Settled payments and their notifications ------------------------------------------------


@dataclass(frozen=True)
class SettledPayment:
    order_id: uuid.UUID
    payment_id: uuid.UUID
    notification_id: int
    callback: bytes  # the callback body that settled it, to replay


def success_callback(order_id: uuid.UUID, payment_id: uuid.UUID) -> bytes:
    return json.dumps(
        {"provider_reference": str(payment_id), "order_id": str(order_id), "status": "success"}
    ).encode()


def apply_success(db: Database, body: bytes, target: NotifyTarget) -> None:
    with db.transaction() as conn:
        apply_callback(conn, parse_callback(body), target)


SMS_TARGET = NotifyTarget("sms")
LOG_TARGET = NotifyTarget("log")


def a_settled_payment(
    db: Database,
    *,
    target: NotifyTarget | None = None,
    phone: str = AMA,
    price: str = "12.50",
    currency: str = "GHS",
    quantity: int = 2,
) -> SettledPayment:
    """An order charged through the simulator and settled by a success callback; its
    notification is queued for `target` (by default the SMS channel: the local gateway)."""
    order = an_order(db, phone=phone, price=price, currency=currency, quantity=quantity)
    payment = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment
    body = success_callback(order.id, payment.id)
    apply_success(db, body, target or SMS_TARGET)
    with db.transaction() as conn:
        nid = conn.execute(
            select(notifications.c.id).where(notifications.c.payment_id == payment.id)
        ).scalar_one()
    return SettledPayment(order.id, payment.id, nid, body)


def notification(db: Database, notification_id: int) -> Notification:
    with db.transaction() as conn:
        return get_notification(conn, notification_id)


def notification_rows(db: Database) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(select(notifications).order_by(notifications.c.id))
        return [dict(row._mapping) for row in rows]


def event_names(db: Database, order_id: uuid.UUID) -> list[str]:
    with db.transaction() as conn:
        return [event.event for event in events_of(conn, [order_id]).get(order_id, [])]


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def wait_for_status(
    db: Database, notification_id: int, status: str, *, timeout: float = 15.0
) -> Notification:
    def reached() -> Notification | None:
        current = notification(db, notification_id)
        return current if current.status.value == status else None

    result: Notification = wait_until(
        reached, timeout=timeout, what=f"notification {notification_id} to be {status}"
    )
    return result


# --- The gateway ----------------------------------------------------------------------------


def at_success(message_id: str, number: str = AMA) -> Answer:
    """Africa's Talking's answer to a message it accepted (statusCode 101)."""
    return at_answer(101, "Success", message_id, number)


def at_answer(code: int, status: str, message_id: str, number: str = AMA) -> Answer:
    document = {
        "SMSMessageData": {
            "Message": "Sent to 1/1 Total Cost: GHS 0.0300",
            "Recipients": [
                {
                    "statusCode": code,
                    "number": number,
                    "status": status,
                    "cost": "GHS 0.0300",
                    "messageId": message_id,
                }
            ],
        }
    }
    return Answer(200, json.dumps(document).encode())


HANG = Answer(status=0)  # in a script: hold the request until the gateway is released


def form_of(request: Recorded) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(request.body.decode()).items()}


@dataclass
class Gateway:
    """A scripted peer: answers from `script` in order, then success to every other request.

    Success is Africa's Talking's statusCode 101 with a fresh messageId (or 200 to a JSON
    webhook), after `delay` seconds. HANG holds a request until `release()` (a gateway that
    never answers). `answered` lists the requests given a success answer, with their message
    ids: the deliveries the gateway completed. `then(...)` scripts the next answers.
    """

    recorder: Recorder
    script: deque[Answer] = field(default_factory=deque)
    answered: list[tuple[Recorded, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds before each success answer (a slow gateway)
    hanging: int = 0

    @property
    def url(self) -> str:
        return self.recorder.url

    def then(self, *answers: Answer) -> None:
        """Answer the next requests with `answers`, in order."""
        with self.lock:
            self.script.extend(answers)

    def respond(self, request: Recorded) -> Answer:
        with self.lock:
            planned = self.script.popleft() if self.script else None
            if planned is HANG:
                self.hanging += 1
        if planned is HANG:
            self.released.wait(60)
            return Answer(503, b"{}")
        if planned is not None:
            return planned
        message_id = f"ATXid_{uuid.uuid4().hex}"
        with self.lock:
            self.answered.append((request, message_id))
        if request.headers.get("content-type", "").startswith("application/json"):
            return Answer(200, b'{"ok": true}', delay=self.delay)
        return replace(at_success(message_id, form_of(request).get("to", AMA)), delay=self.delay)

    def release(self) -> None:
        self.released.set()

    def requests(self) -> list[Recorded]:
        with self.recorder.lock:
            return list(self.recorder.requests)

    def count(self) -> int:
        return self.recorder.count()

    def sms_forms(self) -> list[dict[str, str]]:
        return [form_of(request) for request in self.requests()]


@dataclass
class _SharedServer:
    recorder: Recorder
    busy: bool = False


# A loopback server costs half a second to stop (its serve_forever poll), so the tests of a
# module share one; `a_gateway` hands it out with a clean record, one gateway at a time.
_shared: _SharedServer | None = None


def _between_tests(_request: Recorded) -> Answer:
    return Answer(503, b'{"error": "no gateway is scripted now"}')


@pytest.fixture(scope="module", autouse=True, name="shared_gateway_server")
def shared_gateway_server_fixture() -> Iterator[None]:
    """One loopback server for a module's gateways (import it into the test module)."""
    global _shared
    with recording_server() as recorder:
        recorder.answer_with(_between_tests)
        previous, _shared = _shared, _SharedServer(recorder)
        try:
            yield
        finally:
            _shared = previous


def serving(*channels: Channel) -> Channels:
    """What a worker configured with just these channels delivers through: a row is sent
    through the channel named on it, or held when this worker has none of that name."""
    by_name = {channel.name: channel for channel in channels}

    def channel_for(name: str) -> Channel:
        if name not in by_name:
            raise ConfigurationError(f"ORDERPAY_NOTIFY_CHANNEL={name} is not configured here")
        return by_name[name]

    return channel_for


def sms_channel(gateway: Gateway, timeout: float = 5.0, sender_id: str | None = None) -> SmsChannel:
    """An Africa's Talking channel pointed at the local gateway."""
    return SmsChannel(
        base_url=gateway.url,
        username=SMS_USERNAME,
        api_key=SMS_API_KEY,
        sender_id=sender_id,
        timeout=timeout,
    )


@contextlib.contextmanager
def a_gateway(*script: Answer) -> Iterator[Gateway]:
    """A gateway on loopback answering `script` first, then success; released at the end.

    It is the module's shared server when that is free (its record cleared), else its own.
    """
    shared = _shared
    if shared is None or shared.busy:
        with recording_server() as recorder, _gateway_on(recorder, script) as gateway:
            yield gateway
        return
    shared.busy = True
    with shared.recorder.lock:
        shared.recorder.requests.clear()
    try:
        with _gateway_on(shared.recorder, script) as gateway:
            yield gateway
    finally:
        shared.recorder.answer_with(_between_tests)
        shared.busy = False


@contextlib.contextmanager
def _gateway_on(recorder: Recorder, script: tuple[Answer, ...]) -> Iterator[Gateway]:
    gateway = Gateway(recorder, deque(script))
    recorder.answer_with(gateway.respond)
    try:
        yield gateway
    finally:
        gateway.release()


def sms_env(gateway_url: str, **extra: str) -> dict[str, str]:
    """Configuration for the SMS channel against a local gateway, with fast retries."""
    return {
        "ORDERPAY_NOTIFY_CHANNEL": "sms",
        "ORDERPAY_SMS_URL": gateway_url,
        "ORDERPAY_SMS_USERNAME": SMS_USERNAME,
        "ORDERPAY_SMS_API_KEY": SMS_API_KEY,
        "ORDERPAY_NOTIFY_RETRY_INTERVALS": FAST_RETRIES,
        "ORDERPAY_RELAY_POLL_SECONDS": "0.2",
        "ORDERPAY_MERCHANT_NAME": MERCHANT,
        **extra,
    }


# --- The CLI in a subprocess ----------------------------------------------------------------


def process_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any orderpay configuration, plus `env`."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith(CONFIG_PREFIXES) or name in CONFIG_NAMES)
    }
    return {**base, **env}


def run_orderpay(
    env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orderpay", *args],
        env=process_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WorkerProcess:
    """`orderpay worker ...` in its own session (process group), output kept in files."""

    def __init__(self, env: dict[str, str], directory: Path, *args: str) -> None:
        name = f"worker-{uuid.uuid4().hex[:8]}"
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        self._stdout: IO[bytes] = self.stdout_path.open("wb")
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orderpay", "worker", *args],
            env=process_env(env),
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        self._stdout.flush()
        self._stderr.flush()
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def wait_ready(self, redis_url: str | None = None, timeout: float = 30) -> None:
        """Until the worker waits for work with its signal handlers installed.

        With Redis: RQ marks its worker `idle` in Redis once it listens; without: the command
        says "delivering from the database" once its handlers are in place.
        """

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited early:\n{self.output()}")
            if redis_url is None:
                return "delivering from the database" in self.output()
            from rq import Worker

            with redis_client(redis_url) as redis:
                return any(
                    worker.pid == self.pid and worker.get_state() == "idle"
                    for worker in Worker.all(connection=redis)
                )

        wait_until(ready, timeout=timeout, interval=0.05, what="the worker to be ready")

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM the worker itself; its exit code (fails the test if it does not exit)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(
                f"the worker ignored SIGTERM for {timeout} s:\n{self.output()}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL the worker and every process it started (work horse, scheduler)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill_group()
        else:
            # Children (a scheduler) may outlive an exited worker: end the group too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._stdout.close()
        self._stderr.close()


@pytest.fixture(name="worker_processes")
def worker_processes_fixture(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `orderpay worker` subprocesses: `start(env, *args)`; all ended at teardown."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *args: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path, *args)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for number, worker in enumerate(started):
            worker.close()
            # Shown by pytest only when the test failed: what each worker said.
            said = worker.stdout_path.read_text() + worker.stderr_path.read_text()
            print(f"--- worker {number} (pid {worker.pid}) ---\n{said}")


def queued_jobs(redis: Redis) -> dict[str, list[int]]:
    """The jobs waiting in orderpay's queue, in order, with the rows each one delivers."""
    import zlib

    jobs_rows: dict[str, list[int]] = {}
    for raw in redis.lrange(f"rq:queue:{jobs.QUEUE_NAME}", 0, -1):
        job_id = raw.decode()
        data = redis.hget(f"rq:job:{job_id}", "data")
        function, _instance, args, _kwargs = (
            json.loads(zlib.decompress(data))
            if data
            else (
                None,
                None,
                [[]],
                {},
            )
        )
        jobs_rows[job_id] = (
            list(args[0]) if function == "orderpay.jobs.send_notifications" else [args[0]]
        )
    return jobs_rows


def queued_rows(redis: Redis) -> list[int]:
    """The rows the jobs waiting in orderpay's queue deliver, in order."""
    return [nid for rows in queued_jobs(redis).values() for nid in rows]
