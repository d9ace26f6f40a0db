"""A fault bench: listeners, workers and a merchant endpoint under callbacks and faults.

Run it from the repository root with the development virtualenv:

    python bench/faults.py                                  # 2 listeners, 2 workers, 3,000
                                                            # orders at 30/s, every fault
    python bench/faults.py --orders 200 --faults listener-kill,redis-stop
    python bench/faults.py --orders 60 --rate 1 --faults none

Everything runs on 127.0.0.1 and is the bench's own: a Postgres cluster (initdb in a temporary
directory, as tests/services.py starts the suite's) and a redis-server (snapshots as Redis's
default configuration takes them, so a stopped Redis comes back with what it saved and a
killed one with its last snapshot), on free ports; `orderpay db upgrade`; one customer and one
product through the service layer; then --orders pending orders, each with a pending simulator
payment, in bulk SQL shaped like the service's (bench/webhooks.py's create_payments: payment n
has the id md5('p' || n)::uuid and its order md5('o' || n)::uuid). It starts --listeners
`orderpay serve-webhooks --workers 1` processes and --workers `orderpay worker` processes (RQ on
the bench's Redis, notifications through the `webhook` channel to the merchant endpoint the
bench runs in a thread: it records each delivery's arrival, `webhook-id`, notification and
payment, checks its Standard Webhooks signature, and answers 200, after --slow-delay seconds
while the slow-merchant fault lasts). Every server, process and file is removed at the end, on
an error and on Ctrl-C or SIGTERM too; children also get SIGTERM if the bench itself dies.

Traffic: order n's success callback is due at n / --rate seconds (--rate 0: all at once, as
fast as --senders threads go), until --duration. Its reference is ours (the payment id) or the
seed's sender's own transaction id (MP<n, 9 digits>), signed with X-Momo-Signature or with
Standard Webhooks headers (`webhook-id` msg_bench_<n>, the same on every copy and retry), by
n % 4. Each is sent 2 or 3 times (n odd: 3), concurrently, the first copy to listener
n % listeners and the second to the next one, the third to the first's again. Like a real
sender, each copy is sent again (signed anew) after a connection error, a timeout or a 5xx,
after 0.25 s, doubling up to 4 s, at most --tries times.

Faults (--faults, default all; `none`; or a comma-separated list), one after another, evenly
spread over the traffic (an order count over the rate, or --duration when --rate is 0):

* listener-kill: SIGKILL listener 0 (its whole process group), start it again after --outage s;
* worker-kill: the merchant endpoint holds the next delivery; the worker whose connection it
  is (found through /proc) is SIGKILLed mid-send, the delivery answered, the worker started
  again after --outage s (worker 0, not mid-send, if no delivery comes within 10 s);
* postgres-restart: a fast restart (SIGINT to the postmaster, as `pg_ctl restart -m fast`
  sends, then the same command line again);
* redis-stop: SIGTERM redis-server (it saves and stops), start it again after --outage s;
* redis-kill: SIGKILL redis-server, start it again after --outage s;
* slow-merchant: the merchant endpoint takes --slow-delay s per request for --slow-seconds s;
* idle-flood: --flood-sockets idle TCP connections to listener 0, held --flood-seconds s.

A fault lasts from its start to the moment the bench has put things back (the process restarted
and answering, the server accepting again, the window over). A listener or worker that exits
without the bench killing it is counted as an unexpected exit and started again after --outage
s, as a supervisor would.

Drain: once the traffic is done, the bench waits (at most --drain-timeout s; the default
outlasts the relay's lost-job delay, ORDERPAY_RELAY_LOST_AFTER_SECONDS) until every succeeded
payment's notification has reached the merchant and no notification row is still pending. The
children get the bench's environment, so ORDERPAY_* settings given to the bench reach them.

Figures (stdout, one line each; progress goes to stderr):

* orders: created; sent: orders whose callbacks went out before --duration;
* paid: payments `succeeded` in the database;
* lost: paid, with no delivery at the merchant;
* doubled: notifications delivered more than once (extra deliveries), next to the worker kills,
  with the arrival times (seconds into the traffic) of the first few;
* never applied: orders with a callback answered 2xx whose payment is not succeeded;
* 5xx: answers 500-599, with the 503s apart (and the 503s while Postgres restarted), connection
  errors and timeouts, and copies that gave up;
* latency: from the payment's commit (its updated_at) to the first delivery's arrival, p50,
  p99 and max; later than 10 s, and of those how many are later than 10 s once the time a
  fault lasted is taken out (the clock stops while a fault lasts, not until its backlog is
  sent); later than 2 s; the late ones by when their payment committed;
* recovery FAULT: from the fault's end to the first callback answered 2xx and to the first
  delivery that arrived after it, and to the moment every payment settled before the end had
  its notification delivered (backlog).

The last line, `verdict`, names the criteria that failed (none lost, none never applied, no 5xx
but 503s while Postgres restarts, at most one double per worker kill, none later than 10 s once
fault time is taken out, no unexpected exit, and without faults none later than 2 s); the exit
status is 1 when one failed, 2 when the bench itself could not run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import http.server
import json
import math
import os
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(1, str(BENCH_DIR.parent))  # tests.services: the suite's own servers

from _common import console_script, note, say  # noqa: E402
from webhooks import (  # noqa: E402
    Block,
    callback_body,
    create_catalog,
    create_payments,
    payment_id,
    upgrade_schema,
)

from tests.services import (  # noqa: E402
    HOST,
    OwnPostgres,
    ServerUnavailable,
    free_port,
    postgres_bin_dir,
    redis_server_binary,
)

CALLBACK_PATH = "/api/webhooks/momo/"
MERCHANT_PATH = "/orderpay-events"
FAULTS = (
    "listener-kill",
    "worker-kill",
    "postgres-restart",
    "redis-stop",
    "redis-kill",
    "slow-merchant",
    "idle-flood",
)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LATE_SECONDS = 10.0
PROMPT_SECONDS = 2.0
TICK = 0.1
REQUEST_TIMEOUT = 10.0
FIRST_BACKOFF = 0.25
LAST_BACKOFF = 4.0
# Redis's default snapshot points (redis.conf): what a stop saves, and what a kill may lose.
REDIS_SAVE = "3600 1 300 100 60 10000"
PR_SET_PDEATHSIG = 1
# The worker-kill fault waits this long for a delivery to hold, and holds it at most this long.
CATCH_SECONDS = 10.0
HOLD_SECONDS = 15.0


# --- processes ---------------------------------------------------------------------------


def die_with_parent() -> None:
    """In a child: SIGTERM when the bench dies without stopping it (Linux). The signal follows
    the thread that started the child, so only the main thread starts children."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def connection_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the IPv4 TCP socket from local_port to remote_port (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == local_port and (
            int(remote.rsplit(":", 1)[1], 16) == remote_port
        ):
            return fields[9]
    return None


def kill_group(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, how)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; bounded."""
    if process.poll() is None:
        kill_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
    kill_group(process, signal.SIGKILL)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        note(f"process {process.pid} did not stop")


@dataclass
class Child:
    """A listener or worker: its command, and the process running it (None while down)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None  # a listener's
    process: subprocess.Popen[bytes] | None = None
    held_down: bool = False  # stopped by the bench: not an unexpected exit
    starts: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 of the whole group, reaped."""
        if self.process is not None:
            kill_group(self.process, signal.SIGKILL)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                note(f"{self.name} survived SIGKILL")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)

    def ready(self) -> bool:
        """A listener answers /healthz; a worker is ready once started."""
        if self.port is None:
            return self.alive()
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


class BenchPostgres(OwnPostgres):
    def restart_fast(self) -> None:
        """What `pg_ctl restart -m fast` does: SIGINT (fast shutdown), then the same command."""
        assert self.process is not None
        argv = [str(part) for part in self.process.args]  # type: ignore[union-attr]
        self.process.send_signal(signal.SIGINT)
        self.process.wait(STOP_TIMEOUT)
        with self.log.open("ab") as log:
            self.process = self._run(argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_accepting()


class BenchRedis:
    """A redis-server on a free port that keeps Redis's default snapshots in its directory."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--port",
                    str(self.port),
                    "--bind",
                    HOST,
                    "--save",
                    REDIS_SAVE,
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise ServerUnavailable(f"redis-server did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- the merchant endpoint ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    at: float
    webhook_id: str
    notification: int | None
    payment: str | None
    signed: bool


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that went away (a worker killed mid-send) is part of the bench; anything
        else is reported."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            super().handle_error(request, client_address)


class Merchant:
    """The notifications' webhook endpoint: records each delivery, answers 200 (slowly while
    `slow` is set)."""

    def __init__(self, secret: bytes, slow_delay: float) -> None:
        self.secret = secret
        self.slow_delay = slow_delay
        self.slow = threading.Event()
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        # The worker-kill fault: the next request is held (its client's port put in `caught`)
        # until `release`, so that its sender can be killed mid-send.
        self.catch = threading.Event()
        self.caught: queue.Queue[int] = queue.Queue()
        self.release = threading.Event()
        merchant = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                merchant.receive(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}{MERCHANT_PATH}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def receive(self, request: http.server.BaseHTTPRequestHandler) -> None:
        from orderpay.domain.signatures import verify
        from orderpay.errors import OrderpayError

        at = time.time()
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            verify(body, headers, [self.secret])
            signed = True
        except OrderpayError:
            signed = False
        try:
            data = json.loads(body)["data"]
            notification: int | None = int(data["notification"])
            payment: str | None = str(data["payment"])
        except (ValueError, KeyError, TypeError):
            notification = payment = None
        with self.lock:
            self.deliveries.append(
                Delivery(at, headers.get("webhook-id", ""), notification, payment, signed)
            )
            self.in_flight += 1
            caught = self.catch.is_set()
            self.catch.clear()
        try:
            if caught:
                self.caught.put(request.client_address[1])
                self.release.wait(HOLD_SECONDS)
            if self.slow.is_set():
                time.sleep(self.slow_delay)
            request.send_response(200)
            request.send_header("Content-Length", "0")
            request.end_headers()
        except OSError:  # the sender is gone (killed mid-send)
            pass
        finally:
            with self.lock:
                self.in_flight -= 1

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


# --- the callback sender -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    n: int
    copy: int
    listener: int
    sent: float
    answered: float
    status: int | None  # None: no answer (connection error, timeout)
    outcome: str  # the answer's "status" field, or the error's name


@dataclass
class Sender:
    """Signed success callbacks, each copy retried as a real sender would (bounded)."""

    secret: bytes
    ports: list[int]
    tries: int
    answers: list[Answer] = field(default_factory=list)
    gave_up: list[tuple[int, int]] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    def client(self) -> Any:
        import httpx

        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(timeout=REQUEST_TIMEOUT)
            self.local.client = client
        return client

    def request(self, n: int) -> tuple[bytes, Callable[[], dict[str, str]]]:
        """Order n's callback and how to sign it at each try: n % 4 picks the reference
        (ours, or the seed's sender's id) and the scheme (X-Momo-Signature or Standard)."""
        from orderpay.domain.signatures import sign_hex, standard_headers

        body = callback_body(n, seed=n % 4 in (1, 3))
        if n % 4 < 2:
            signature = sign_hex(body, self.secret)
            return body, lambda: {"X-Momo-Signature": signature}
        return body, lambda: standard_headers(body, self.secret, f"msg_bench_{n}")

    def send_copy(self, n: int, copy: int, listener: int) -> None:
        import httpx

        body, sign = self.request(n)
        url = f"http://{HOST}:{self.ports[listener]}{CALLBACK_PATH}"
        backoff = FIRST_BACKOFF
        for _ in range(self.tries):
            sent = time.time()
            try:
                response = self.client().post(
                    url, content=body, headers={"Content-Type": "application/json", **sign()}
                )
                status: int | None = response.status_code
                outcome = answer_outcome(response.content)
            except (httpx.HTTPError, OSError) as error:  # a real sender tries again
                status, outcome = None, type(error).__name__
            self.answers.append(Answer(n, copy, listener, sent, time.time(), status, outcome))
            if status is not None and status < 500:
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, LAST_BACKOFF)
        self.gave_up.append((n, copy))

    def copies(self, n: int) -> list[tuple[int, int]]:
        """(copy, listener) of order n's copies."""
        count = len(self.ports)
        first = n % count
        plan = [(0, first), (1, (first + 1) % count)]
        if n % 2:
            plan.append((2, first))
        return plan


def answer_outcome(content: bytes) -> str:
    try:
        document = json.loads(content)
    except ValueError:
        return "not-json"
    if isinstance(document, dict):
        if "status" in document:
            return str(document["status"])
        error = document.get("error")
        if isinstance(error, dict):
            return str(error.get("code"))
    return "other"


# --- the bench ---------------------------------------------------------------------------


@dataclass
class Window:
    name: str
    began: float
    ended: float = math.inf


def interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.secret = "bench-" + os.urandom(24).hex()
        self.merchant_secret = "whsec_" + __import__("base64").b64encode(os.urandom(24)).decode()
        self.postgres: BenchPostgres | None = None
        self.redis: BenchRedis | None = None
        self.merchant = Merchant(self.merchant_secret.encode(), args.slow_delay)
        self.listeners: list[Child] = []
        self.workers: list[Child] = []
        self.windows: list[Window] = []
        self.unexpected: list[str] = []
        self.worker_kills = 0
        self.traffic_done = threading.Event()
        self.sent_orders = 0
        self.url = ""
        self.t0 = time.time()
        self.traffic_ended = math.inf  # when the last order's callbacks went out
        self.flood_open = 0
        self.mid_send_kills = 0
        self.ok = False

    # -- set-up and clean-up --

    def start_servers(self) -> None:
        bin_dir = postgres_bin_dir()
        binary = redis_server_binary()
        if bin_dir is None or binary is None:
            raise SystemExit("no Postgres or redis-server binaries: see tests/services.py")
        pg_dir = self.workdir / "postgres"
        pg_dir.mkdir()
        self.postgres = BenchPostgres(bin_dir, pg_dir)
        self.postgres.start()
        self.url = self.postgres.url
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir()
        self.redis = BenchRedis(binary, redis_dir)
        self.redis.start()
        note(f"postgres on {self.postgres.port}, redis on {self.redis.port}")

    def child_env(self) -> dict[str, str]:
        assert self.redis is not None
        drop = {"PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "REDIS_URL"}
        env = {
            k: v for k, v in os.environ.items() if k not in drop and not k.startswith("POSTGRES_")
        }
        env.update(
            DATABASE_URL=self.url,
            REDIS_URL=self.redis.url,
            MOMO_WEBHOOK_SECRET=self.secret,
            ORDERPAY_NOTIFY_CHANNEL="webhook",
            ORDERPAY_NOTIFY_WEBHOOK_URL=self.merchant.url,
            ORDERPAY_NOTIFY_WEBHOOK_SECRET=self.merchant_secret,
            ORDERPAY_INSECURE_SECRETS="1",
        )
        return env

    def start_children(self) -> None:
        orderpay = str(console_script("orderpay"))
        env = self.child_env()
        for i in range(self.args.listeners):
            port = free_port()
            argv = [orderpay, "serve-webhooks", "--host", HOST, "--port", str(port)]
            argv += ["--workers", "1", "--log-level", "warning"]
            self.listeners.append(
                Child(f"listener-{i}", argv, env, self.log(f"listener-{i}"), port)
            )
        for i in range(self.args.workers):
            argv = [orderpay, "worker"]
            self.workers.append(Child(f"worker-{i}", argv, env, self.log(f"worker-{i}")))
        for child in self.children():
            child.start()
        for child in self.children():
            self.wait_ready(child)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def children(self) -> list[Child]:
        return [*self.listeners, *self.workers]

    def wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if child.ready():
                return
            if child.process is not None and child.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} did not start:\n{child.log.read_text()[-3000:]}")

    def clean_up(self) -> None:
        for child in self.children():
            child.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        self.merchant.stop()

    # -- set-up of the data --

    def create_orders(self) -> None:
        note(f"set-up: orderpay db upgrade, {self.args.orders} pending orders")
        upgrade_schema(self.url)
        catalog = create_catalog(self.url)
        create_payments(self.url, catalog, Block(1, self.args.orders), seed=False)

    # -- the run --

    def run(self) -> int:
        self.merchant.start()
        self.start_servers()
        self.create_orders()
        self.start_children()
        sender = Sender(
            self.secret.encode(), [c.port or 0 for c in self.listeners], self.args.tries
        )
        span = self.span()
        faults = self.args.faults
        note(f"traffic: {self.args.orders} orders over about {span:.0f} s; faults: {faults}")
        self.t0 = time.time()
        traffic = threading.Thread(target=self.traffic, args=(sender,), daemon=True)
        traffic.start()
        for i, name in enumerate(faults):
            self.wait_until(self.t0 + (i + 1) * span / (len(faults) + 1))
            self.fault(name)
        self.supervise_until(lambda: self.traffic_done.is_set(), self.args.duration + 120)
        note("traffic done; draining")
        self.drain()
        self.report(sender)
        return 0 if self.ok else 1

    def span(self) -> float:
        if self.args.rate > 0:
            return float(min(self.args.orders / self.args.rate, self.args.duration))
        return float(self.args.duration)

    def traffic(self, sender: Sender) -> None:
        """Order n's copies at t0 + (n - 1) / rate; all are finished when this returns."""
        try:
            with ThreadPoolExecutor(self.args.senders, thread_name_prefix="sender") as pool:
                for n in range(1, self.args.orders + 1):
                    due = self.t0 + (n - 1) / self.args.rate if self.args.rate > 0 else self.t0
                    if due - self.t0 > self.args.duration:
                        break
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    if time.time() - self.t0 > self.args.duration:
                        break
                    for copy, listener in sender.copies(n):
                        pool.submit(sender.send_copy, n, copy, listener)
                    self.sent_orders = n
                    self.traffic_ended = time.time()
        finally:
            self.traffic_done.set()

    def wait_until(self, when: float) -> None:
        self.supervise_until(lambda: time.time() >= when, max(when - time.time(), 0) + 1)

    def supervise_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait (at most `timeout` s) for `done`, restarting children that died on their own."""
        deadline = time.time() + timeout
        while not done() and time.time() < deadline:
            self.supervise()
            time.sleep(TICK)

    def supervise(self) -> None:
        for child in self.children():
            if child.held_down or child.alive():
                continue
            code = child.process.returncode if child.process else None
            note(f"{child.name} exited on its own (status {code}); starting it again")
            self.unexpected.append(f"{child.name} at {time.time() - self.t0:.1f} s (status {code})")
            child.held_down = True
            time.sleep(self.args.outage)
            child.start()
            self.wait_ready(child)
            child.held_down = False

    # -- faults --

    def fault(self, name: str) -> None:
        note(f"fault {name} at {time.time() - self.t0:.1f} s")
        window = Window(name, time.time())
        self.windows.append(window)
        try:
            getattr(self, "fault_" + name.replace("-", "_"))()
        finally:
            window.ended = time.time()
        note(f"fault {name} over after {window.ended - window.began:.1f} s")

    def restart_child(self, child: Child) -> None:
        child.held_down = True
        child.kill()
        self.merchant.release.set()
        self.supervised_pause(self.args.outage, skip=child)
        child.start()
        self.wait_ready(child)
        child.held_down = False

    def supervised_pause(self, seconds: float, skip: Child | None = None) -> None:
        end = time.time() + seconds
        while time.time() < end:
            for other in self.children():
                if other is not skip and not other.held_down and not other.alive():
                    self.supervise()
                    break
            time.sleep(TICK)

    def fault_listener_kill(self) -> None:
        self.restart_child(self.listeners[0])

    def fault_worker_kill(self) -> None:
        """kill -9 of the worker whose delivery the merchant holds (mid-send), or of worker 0
        when no delivery comes within CATCH_SECONDS."""
        merchant = self.merchant
        merchant.release.clear()
        merchant.catch.set()
        try:
            port: int | None = merchant.caught.get(timeout=CATCH_SECONDS)
        except queue.Empty:
            port = None
        merchant.catch.clear()
        victim = self.worker_sending_from(port) if port is not None else None
        self.worker_kills += 1
        if victim is not None:
            self.mid_send_kills += 1
        note(f"worker-kill: {victim.name + ' mid-send' if victim else 'worker-0, not mid-send'}")
        try:
            self.restart_child(victim or self.workers[0])
        finally:
            merchant.release.set()

    def worker_sending_from(self, port: int) -> Child | None:
        """The worker whose process holds the connection from 127.0.0.1:port to the merchant."""
        merchant_port = self.merchant.server.server_address[1]
        inode = connection_inode(port, merchant_port)
        if inode is None:
            return None
        groups = {c.process.pid: c for c in self.workers if c.alive() and c.process}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                child = groups.get(os.getpgid(int(entry.name)))
                if child is None:
                    continue
                for fd in (entry / "fd").iterdir():
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return child
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return None

    def fault_postgres_restart(self) -> None:
        assert self.postgres is not None
        self.postgres.restart_fast()

    def redis_outage(self, how: signal.Signals) -> None:
        assert self.redis is not None
        self.redis.stop(how)
        self.supervised_pause(self.args.outage)
        self.redis.start()

    def fault_redis_stop(self) -> None:
        self.redis_outage(signal.SIGTERM)

    def fault_redis_kill(self) -> None:
        self.redis_outage(signal.SIGKILL)

    def fault_slow_merchant(self) -> None:
        self.merchant.slow.set()
        try:
            self.supervised_pause(self.args.slow_seconds)
        finally:
            self.merchant.slow.clear()

    def fault_idle_flood(self) -> None:
        port = self.listeners[0].port
        assert port is not None
        sockets: list[socket.socket] = []
        # Opening them counts in the window, but may take no more than the window itself.
        end = time.time() + self.args.flood_seconds
        refused = 0
        try:
            for _ in range(self.args.flood_sockets):
                if time.time() >= end:
                    break
                sock = socket.socket()
                sock.settimeout(1)
                try:
                    sock.connect((HOST, port))
                except OSError:
                    sock.close()
                    refused += 1
                    continue
                sockets.append(sock)
            note(f"idle-flood: {len(sockets)} sockets open, {refused} not")
            self.flood_open = len(sockets)
            self.supervised_pause(end - time.time())
        finally:
            for sock in sockets:
                sock.close()

    # -- drain and figures --

    def query(self, statement: str) -> list[Any]:
        from sqlalchemy import NullPool, create_engine, text

        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(statement)))
        finally:
            engine.dispose()

    def settled(self) -> dict[str, float]:
        """Succeeded payments: id -> commit time (epoch seconds)."""
        rows = self.query(
            "SELECT id::text, extract(epoch FROM updated_at) FROM payments"
            " WHERE status = 'succeeded'"
        )
        return {row[0]: float(row[1]) for row in rows}

    def pending_notifications(self) -> int:
        return int(self.query("SELECT count(*) FROM notifications WHERE status = 'pending'")[0][0])

    def drain(self) -> None:
        deadline = time.time() + self.args.drain_timeout
        last = (-1, -1)
        while time.time() < deadline:
            self.supervise()
            try:
                paid = self.settled()
                pending = self.pending_notifications()
            except Exception as error:  # the database may still be coming back
                note(f"drain: {type(error).__name__}")
                time.sleep(1)
                continue
            delivered = {d.payment for d in self.merchant.snapshot()}
            missing = len(set(paid) - delivered)
            if missing == 0 and pending == 0:
                return
            if (missing, pending) != last:
                note(f"drain: {missing} paid without delivery, {pending} notifications pending")
                last = (missing, pending)
            time.sleep(1)
        note("drain: timed out")

    def report(self, sender: Sender) -> None:
        answers = list(sender.answers)
        deliveries = self.merchant.snapshot()
        paid = self.settled()
        first: dict[str, float] = {}
        per_notification: Counter[str] = Counter()
        for delivery in deliveries:
            per_notification[delivery.webhook_id] += 1
            if delivery.payment is not None:
                first[delivery.payment] = min(first.get(delivery.payment, math.inf), delivery.at)
        lost = [p for p in paid if p not in first]
        doubled = {k: c for k, c in per_notification.items() if c > 1}
        ok_orders = {a.n for a in answers if a.status is not None and 200 <= a.status < 300}
        never_applied = [n for n in ok_orders if str(payment_id(n)) not in paid]
        statuses = Counter(a.status for a in answers)
        five = sum(c for s, c in statuses.items() if s is not None and s >= 500)
        five03 = statuses.get(503, 0)
        in_pg = sum(
            1 for a in answers if a.status == 503 and self.within(a.answered, "postgres-restart")
        )
        no_answer = statuses.get(None, 0)
        outcomes = Counter(a.outcome for a in answers if a.status is not None)
        latencies = sorted((first[p] - paid[p], p) for p in paid if p in first)
        values = [v for v, _ in latencies]
        late = [(v, p) for v, p in latencies if v > LATE_SECONDS]
        late_outside = [
            (v, p) for v, p in late if v - self.fault_time(paid[p], first[p]) > LATE_SECONDS
        ]
        prompt = sum(1 for v in values if v > PROMPT_SECONDS)
        unsigned = sum(1 for d in deliveries if not d.signed)

        args = self.args
        say(
            f"bench: {args.listeners} listeners, {args.workers} workers, rate {args.rate:g}/s, "
            f"faults {','.join(args.faults) or 'none'}; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        say(f"orders: {args.orders} (callbacks sent for {self.sent_orders})")
        say(
            f"callbacks: {len(answers)} requests, {len(ok_orders)} orders answered 2xx; "
            f"answers {dict(sorted(outcomes.items()))}"
        )
        say(f"paid: {len(paid)}")
        say(f"lost: {len(lost)}{self.phases(paid[p] for p in lost)}")
        arrivals = {
            key: ",".join(f"{d.at - self.t0:.1f}" for d in deliveries if d.webhook_id == key)
            for key in list(doubled)[:5]
        }
        say(
            f"doubled: {len(doubled)} notifications "
            f"({sum(doubled.values()) - len(doubled)} extra deliveries); "
            f"worker kills {self.worker_kills} ({self.mid_send_kills} mid-send)"
            + "".join(f"; {key} arrived at {at} s" for key, at in arrivals.items())
        )
        say(f"never applied: {len(never_applied)}")
        say(
            f"5xx: {five} (503: {five03}, of which {in_pg} while Postgres restarted; "
            f"other 5xx: {five - five03}); no answer (connection error, timeout): {no_answer}; "
            f"copies given up: {len(sender.gave_up)}"
        )
        say(
            f"delivery latency: p50 {percentile(values, 50):.3f} s, "
            f"p99 {percentile(values, 99):.3f} s, max {max(values, default=math.nan):.3f} s"
        )
        say(
            f"later than {LATE_SECONDS:.0f} s: {len(late)} (not counting fault time: "
            f"{len(late_outside)}){self.phases(paid[p] for _, p in late)}"
        )
        say(f"later than {PROMPT_SECONDS:.0f} s: {prompt}")
        say(f"deliveries: {len(deliveries)} (bad signature: {unsigned})")
        alive = ", ".join(
            f"{c.name} {'alive' if c.alive() else 'dead'} ({c.starts} starts)"
            for c in self.children()
        )
        say(f"unexpected exits: {len(self.unexpected)} {', '.join(self.unexpected)}".rstrip())
        say(f"processes: {alive}")
        for window in self.windows:
            say(self.recovery_line(window, answers, deliveries, paid, first))
        if "idle-flood" in self.args.faults:
            say(f"idle-flood sockets held: {self.flood_open} of {self.args.flood_sockets}")
        failed = []
        if lost:
            failed.append("lost")
        if never_applied:
            failed.append("never applied")
        if five - five03:
            failed.append("5xx other than 503")
        if five03 - in_pg:
            failed.append("503 outside a Postgres restart")
        if sum(doubled.values()) - len(doubled) > self.worker_kills:
            failed.append("doubled")
        if late_outside:
            failed.append("late outside faults")
        if self.unexpected:
            failed.append("unexpected exits")
        if not self.args.faults and prompt:
            failed.append(f"later than {PROMPT_SECONDS:.0f} s without faults")
        self.ok = not failed
        say(f"verdict: {'ok' if self.ok else 'FAILED: ' + ', '.join(failed)}")

    def phases(self, commits: Iterable[float]) -> str:
        """When these payments committed: during which fault, or after which one ended."""
        counts = Counter(self.phase(at) for at in commits)
        if not counts:
            return ""
        return "; committed " + ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))

    def phase(self, at: float) -> str:
        for window in self.windows:
            if window.began <= at <= window.ended:
                return f"during {window.name}"
        ended = [w for w in self.windows if w.ended < at]
        return f"after {ended[-1].name}" if ended else "before any fault"

    def within(self, at: float, name: str | None = None) -> bool:
        return any(w.began <= at <= w.ended for w in self.windows if name is None or w.name == name)

    def fault_time(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which a fault lasted (the windows do not overlap)."""
        return sum(max(0.0, min(end, w.ended) - max(start, w.began)) for w in self.windows)

    def recovery_line(
        self,
        window: Window,
        answers: list[Answer],
        deliveries: list[Delivery],
        paid: dict[str, float],
        first: dict[str, float],
    ) -> str:
        end = window.ended
        callback = min(
            (a.answered for a in answers if a.answered >= end and a.status and a.status < 300),
            default=math.inf,
        )
        delivery = min((d.at for d in deliveries if d.at >= end), default=math.inf)
        before = [first.get(p, math.inf) for p, at in paid.items() if at <= end]
        backlog = max(before, default=end)
        after = " after the traffic" if window.began >= self.traffic_ended else ""
        return (
            f"recovery {window.name}{after}: callback {seconds(callback - end)}, "
            f"delivery {seconds(delivery - end)}, backlog {seconds(max(backlog - end, 0))} "
            f"(fault {window.began - self.t0:.1f}-{end - self.t0:.1f} s)"
        )


def seconds(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f} s"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


# --- command line ------------------------------------------------------------------------


def parse_faults(raw: str) -> list[str]:
    if raw == "all":
        return list(FAULTS)
    if raw == "none":
        return []
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault {', '.join(unknown)}; choose from {', '.join(FAULTS)}, all, none"
        )
    return names


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module's docstring as it is written, and each flag's default."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--listeners", type=int, default=2, help="serve-webhooks processes")
    parser.add_argument("--workers", type=int, default=2, help="orderpay worker processes")
    parser.add_argument("--orders", type=int, default=3000, help="orders (one payment each)")
    parser.add_argument(
        "--rate", type=float, default=30.0, help="orders/s whose callbacks go out; 0: at once"
    )
    parser.add_argument(
        "--faults",
        type=parse_faults,
        default="all",
        help=f"all, none, or a comma-separated list of {', '.join(FAULTS)}",
    )
    parser.add_argument(
        "--duration", type=float, default=600.0, help="cap on the traffic phase, seconds"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=360.0, help="cap on the drain, seconds"
    )
    parser.add_argument(
        "--outage", type=float, default=3.0, help="seconds a killed or stopped server stays down"
    )
    parser.add_argument("--slow-delay", type=float, default=2.0, help="slow merchant: s/request")
    parser.add_argument("--slow-seconds", type=float, default=10.0, help="slow merchant: window")
    parser.add_argument("--flood-sockets", type=int, default=2500, help="idle connections")
    parser.add_argument("--flood-seconds", type=float, default=10.0, help="idle flood: window")
    parser.add_argument("--senders", type=int, default=32, help="callback sender threads")
    parser.add_argument("--tries", type=int, default=12, help="tries per callback copy")
    args = parser.parse_args(argv)
    if args.listeners < 1 or args.workers < 1 or args.orders < 1:
        parser.error("--listeners, --workers and --orders must be at least 1")
    if args.rate < 0 or args.duration <= 0 or args.senders < 1 or args.tries < 1:
        parser.error("--rate must be >= 0; --duration, --senders and --tries positive")
    if ("listener-kill" in args.faults or "idle-flood" in args.faults) and args.listeners < 2:
        note("with one listener, its faults take every callback down")
    return args


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_file_limit(args.flood_sockets + 1024)
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="orderpay-faults-bench-"))
    workdir.chmod(0o755)
    bench = Bench(args, workdir)
    cleaned = False

    def clean_up() -> None:
        nonlocal cleaned
        if cleaned:
            return
        cleaned = True
        try:
            bench.clean_up()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(clean_up)
    try:
        return bench.run()
    except KeyboardInterrupt:
        note("interrupted: cleaning up")
        return 130
    except (RuntimeError, ServerUnavailable) as error:
        note(f"bench failed: {error}")
        return 2
    finally:
        clean_up()


if __name__ == "__main__":
    sys.exit(main())
