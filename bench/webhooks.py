"""Signed payment callbacks per second through `orderpay serve-webhooks` on Postgres, with ceilings.

Run it from the repository root with the development virtualenv (it needs wrk and pgbench on
PATH: `apt-get install wrk postgresql-client`):

    python bench/webhooks.py                       # 16 and 64 connections, 10 s, 20k then 1M
    python bench/webhooks.py --duration 5 --connections 64 --references seed
    python bench/webhooks.py --sizes 20000 --database-url postgresql+psycopg2://user@host/postgres

Set-up (not timed): a throwaway database `orderpay_bench_<hex>` on the server of
--database-url, `orderpay db upgrade`, one customer and one product through the service layer,
then, in bulk SQL shaped like orders.create_order and charges.charge_order, pending orders of
25.00 GHS, each with its item, order events and a `pending` simulator payment. Payment number n
has the id md5('p' || n)::uuid and its order md5('o' || n)::uuid, so Python, SQL and pgbench all
derive the same ids from n without a lookup. A payment of a seed-style run (and every payment
that only fills the table) already carries the sender's own transaction id MP<n, 9 digits> as
provider_transaction_id, as the seed's payments did once their sender had named them. The
database is dropped at the end, and every server started is stopped, even on error or Ctrl-C.

Stages (--sizes, 20000,1000000): before a stage's runs the table is filled with pending
payments up to the size (counting the warm-up and the first run's pool, which alone may exceed
a small size: the stage line says how many payments there are). At each stage:

* `webhooks`: `orderpay serve-webhooks --workers 2 --log-level warning` driven by
  `wrk -t2 -cN` for the duration, once per reference kind (--references): `seed` (the sender's
  transaction id in provider_reference) and `ours` (the payment id). Every request is a
  distinct, pre-signed success callback (X-Momo-Signature, orderpay.domain.signatures.sign_hex)
  for its own pending payment, from a pool made just before the run and split between wrk's
  threads. callbacks/s = 200 `processed` answers divided by wrk's run time; p50/p99 are wrk's
  percentiles over all answers.
* `pgbench`: the database's ceiling, on the SQL the service itself sends, taken from the code
  (see the pgbench section below): `ordinary` is the ordinary transaction for one success
  callback (the statements apply_callback sends), `batch-of-one` the batch path's statements
  for a lone callback (the listener sends batches as callbacks arrive).
  -j 2, -T duration, -M prepared by default; each transaction on its own payment.
  ratio = webhooks callbacks/s divided by the ceiling at the same connection count.

Once, before the stages: `HMAC-only ceiling`, bench/webhooks_hmac_app.py (a Starlette route
that only reads the body and checks the HMAC) under uvicorn with the same settings.

After each webhooks run the script checks in SQL that the payments moved to `succeeded` are the
200 `processed` answers (plus at most the requests still in flight when wrk stopped), that no
payment outside those sent moved, and that each has its notification row, its event and its
three order events; after each pgbench run, that succeeded payments, events and notifications
equal its transaction count. It exits 1 when a check fails. Goal: at 64 connections,
processed callbacks/s at least 1.0x pgbench of the ordinary transaction, p99 under 100 ms, with
seed-style references, and the rate at the largest size within 10% of the smallest's (the
`flat` lines).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from _common import (
    DEFAULT_BASE_URL,
    a_customer_and_product,
    console_script,
    libpq_env,
    note,
    pgbench_tps,
    ratio,
    say,
    throwaway_database,
    vacuum,
)
from sqlalchemy import text

from orderpay.domain.signatures import sign_hex
from orderpay.store.db import Database

BENCH_DIR = Path(__file__).resolve().parent
CALLBACK_PATH = "/api/webhooks/momo/"
HOST = "127.0.0.1"
WORKERS = 2
WRK_THREADS = 2
PGBENCH_JOBS = 2
WARMUP_SECONDS = 3
WARMUP_CALLBACKS = 5_000
DEFAULT_CONNECTIONS = "16,64"
DEFAULT_SIZES = "20000,1000000"
DEFAULT_DURATION = 10
# Callbacks per webhooks run: enough for 3,600/s for 10 s. A run that gets through its pool
# wraps around and re-sends (answered `duplicate`); the check line then says so.
DEFAULT_POOL = 36_000
# The pgbench pool per run is sized for this rate (times the duration, plus a margin): each
# client gets an equal slice and a client that runs out of its slice aborts the run.
DEFAULT_PGBENCH_MAX_TPS = 6_000
PGBENCH_MARGIN = 1.5
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
SETTLE_TIMEOUT = 15.0

GOAL_CONNECTIONS = 64
GOAL_P99_MS = 100.0
GOAL_RATIO = 1.0  # of pgbench running the ordinary transaction's statements, same run
GOAL_FLATNESS = 0.10  # the largest table's rate within 10% of the smallest's

PAYER = "+233241234567"
MASKED_PAYER = "+233*****4567"
DEFAULT_REGION = "GH"
CURRENCY = "GHS"
PRICE_MINOR = 1250  # 12.50 GHS, two per order: 25.00 GHS
QUANTITY = 2
TOTAL_MINOR = PRICE_MINOR * QUANTITY
AMOUNT_TEXT = "25.00"


# --- ids ---------------------------------------------------------------------------------


def payment_id(n: int) -> uuid.UUID:
    """Payment number n: the same value as SQL's md5('p' || n)::uuid."""
    return uuid.UUID(hashlib.md5(f"p{n}".encode()).hexdigest())


def order_id(n: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"o{n}".encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Block:
    """Payment numbers first .. first + size - 1."""

    first: int
    size: int

    @property
    def last(self) -> int:
        return self.first + self.size - 1


class Allocator:
    """Hands out consecutive blocks of payment numbers, so that no two runs share one."""

    def __init__(self) -> None:
        self.next = 1

    def block(self, size: int) -> Block:
        block = Block(self.next, size)
        self.next += size
        return block

    @property
    def total(self) -> int:
        return self.next - 1


# --- set-up ------------------------------------------------------------------------------


def upgrade_schema(url: str) -> None:
    env = dict(os.environ, DATABASE_URL=url)
    completed = subprocess.run(
        [str(console_script("orderpay")), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"orderpay db upgrade failed:\n{completed.stdout}{completed.stderr}")


@dataclass(frozen=True, slots=True)
class Catalog:
    customer: int
    product: uuid.UUID
    phone: str


def create_catalog(url: str) -> Catalog:
    """The one customer and product every bench order refers to, made by the service."""
    db = Database(url)
    try:
        with db.transaction() as conn:
            customer, product = a_customer_and_product(
                conn,
                phone=PAYER,
                region=DEFAULT_REGION,
                price_minor=PRICE_MINOR,
                currency=CURRENCY,
            )
        return Catalog(customer.id, product.id, customer.phone)
    finally:
        db.dispose()


def sender_id(n: int) -> str:
    """A seed-style sender's own transaction id of payment n: SQL's SENDER_ID_SQL."""
    return f"{SENDER_PREFIX}{n:09d}"


SENDER_PREFIX = "MP"
SENDER_ID_SQL = f"'{SENDER_PREFIX}' || lpad(n::text, 9, '0')"


def create_payments(url: str, catalog: Catalog, block: Block, *, seed: bool) -> None:
    """Payments block.first .. block.last: pending orders, each with a `pending` payment, as the
    service would leave them. `seed`: the payment already carries the sender's own transaction
    id (provider_transaction_id), as the seed's payments did once a sender had named them."""
    db = Database(url)
    try:
        with db.transaction() as conn:
            params = {
                "first": block.first,
                "last": block.last,
                "customer": catalog.customer,
                "product": catalog.product,
                "quantity": QUANTITY,
                "price": PRICE_MINOR,
                "total": TOTAL_MINOR,
                "currency": CURRENCY,
                "phone": catalog.phone,
                "masked": MASKED_PAYER,
                "amount": f"{AMOUNT_TEXT} {CURRENCY}",
            }
            series = "generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
            transaction_id = SENDER_ID_SQL if seed else "NULL"
            statements = [
                "INSERT INTO orders (id, customer_id, status, currency, total, created_at,"
                " updated_at) SELECT md5('o' || n)::uuid, :customer, 'pending', :currency,"
                f" :total, now(), now() FROM {series}",
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                f" SELECT md5('o' || n)::uuid, :product, :quantity, :price FROM {series}",
                "INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount,"
                " currency, payer_phone, provider, provider_reference, provider_transaction_id,"
                " status, failure_reason, lease_expires_at, created_at, updated_at)"
                " SELECT md5('p' || n)::uuid, md5('o' || n)::uuid, 'bench-' || n,"
                " encode(sha256(('charge-' || n)::bytea), 'hex'), :total, :currency, :phone,"
                f" 'simulator', md5('p' || n)::uuid::text, {transaction_id}, 'pending', NULL,"
                f" NULL, now(), now() FROM {series}",
                "INSERT INTO order_events (order_id, at, event, detail)"
                " SELECT md5('o' || n)::uuid, now(), e.event, CASE e.event"
                "  WHEN 'order_created' THEN '2 items, total ' || :amount"
                "  WHEN 'payment_initiated' THEN 'payment ' || md5('p' || n)::uuid || ' for '"
                "   || :amount || ' from ' || :masked || ' via simulator'"
                "  ELSE 'payment ' || md5('p' || n)::uuid || ' accepted by simulator' END"
                f" FROM {series}, (VALUES (1, 'order_created'),"
                "  (2, 'payment_initiated'), (3, 'payment_pending')) AS e(k, event)"
                " ORDER BY n, e.k",
            ]
            for statement in statements:
                conn.execute(text(statement), params)
            stored = conn.execute(
                text("SELECT id, order_id FROM payments WHERE idempotency_key = :key"),
                {"key": f"bench-{block.first}"},
            ).one()
            if tuple(stored) != (payment_id(block.first), order_id(block.first)):
                raise RuntimeError("Python and SQL disagree on payment ids")
    finally:
        db.dispose()


def payment_count(db: Database) -> int:
    return scalar(db, "SELECT count(*) FROM payments")


def callback_body(n: int, *, seed: bool = False) -> bytes:
    """Payment n's success callback: our reference (the payment id), or (`seed`) the sender's
    own transaction id in provider_reference, as the seed's senders sent it."""
    document = {
        "provider_reference": sender_id(n) if seed else str(payment_id(n)),
        "order_id": str(order_id(n)),
        "status": "success",
        "amount": AMOUNT_TEXT,
        "currency": CURRENCY,
    }
    return json.dumps(document).encode()


def write_callbacks(path: Path, block: Block, secret: bytes, *, seed: bool = False) -> None:
    """One line per callback, in payment order: `<hex signature>\\t<body>`."""
    with path.open("wb") as out:
        for n in range(block.first, block.last + 1):
            body = callback_body(n, seed=seed)
            out.write(sign_hex(body, secret).encode() + b"\t" + body + b"\n")


# --- wrk ---------------------------------------------------------------------------------

# Run as `wrk ... -s this.lua URL -- CALLBACKS_FILE THREADS`. Thread t (0-based, numbered in
# setup) keeps lines t*per+1 .. (t+1)*per of the file (per = lines // threads) as ready-made
# requests and sends them in order, one per request() call, so no two requests of a run carry
# the same callback. Past its share a thread wraps around and counts `wrapped`. wrk calls
# request() once on thread 0 before the run to inspect it (that request is never sent), so
# `sent` can exceed what went on the wire by one. done() prints one RESULT line.
WRK_SCRIPT = r"""
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local pool = {}
local size = 0
sent, wrapped, answered, processed, duplicate, other2xx, non2xx = 0, 0, 0, 0, 0, 0, 0
codes = ""

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  local per = math.floor(#lines / nthreads)
  for k = 1, per do
    local line = lines[id * per + k]
    local tab = line:find("\t", 1, true)
    pool[k] = wrk.format("POST", wrk.path, {
      ["Content-Type"] = "application/json",
      ["X-Momo-Signature"] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
  size = per
end

function request()
  sent = sent + 1
  if sent > size then
    wrapped = wrapped + 1
    return pool[(sent - 1) % size + 1]
  end
  return pool[sent]
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then
    if body:find('"processed"', 1, true) then
      processed = processed + 1
    elseif body:find('"duplicate"', 1, true) then
      duplicate = duplicate + 1
    else
      other2xx = other2xx + 1
    end
  elseif status >= 200 and status < 300 then
    other2xx = other2xx + 1
  else
    non2xx = non2xx + 1
    if not codes:find(" " .. status .. " ", 1, true) and #codes < 200 then
      codes = codes .. " " .. status .. " "
    end
  end
end

function done(summary, latency, requests)
  local totals = {sent = 0, wrapped = 0, answered = 0, processed = 0, duplicate = 0,
                  other2xx = 0, non2xx = 0}
  local per_thread, all_codes = {}, ""
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
    per_thread[#per_thread + 1] = thread:get("id") .. ":" .. thread:get("sent")
    all_codes = all_codes .. thread:get("codes")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f max_us=%.1f sent=%d "
    .. "wrapped=%d answered=%d processed=%d duplicate=%d other2xx=%d non2xx=%d "
    .. "connect=%d read=%d write=%d timeout=%d sent_by_thread=%s codes=%s\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, totals.sent, totals.wrapped, totals.answered, totals.processed,
    totals.duplicate, totals.other2xx, totals.non2xx, e.connect, e.read, e.write, e.timeout,
    table.concat(per_thread, ","), (all_codes:gsub("%s+", ",")):gsub("^,", ""):gsub(",$", "")))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    fields: dict[str, str]

    def __getitem__(self, name: str) -> int:
        return int(float(self.fields[name]))

    @property
    def seconds(self) -> float:
        return self["duration_us"] / 1e6

    @property
    def p50_ms(self) -> float:
        return float(self.fields["p50_us"]) / 1000

    @property
    def p99_ms(self) -> float:
        return float(self.fields["p99_us"]) / 1000

    @property
    def socket_errors(self) -> int:
        return sum(self[name] for name in ("connect", "read", "write", "timeout"))

    def sent_by_thread(self) -> dict[int, int]:
        pairs = (item.split(":") for item in self.fields["sent_by_thread"].split(","))
        return {int(thread): int(sent) for thread, sent in pairs}

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds else 0.0


def run_wrk(lua: Path, callbacks: Path, port: int, connections: int, duration: float) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found on PATH: apt-get install wrk")
    command = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "30s",
        "-s",
        str(lua),
        f"http://{HOST}:{port}{CALLBACK_PATH}",
        "--",
        str(callbacks),
        str(WRK_THREADS),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    match = re.search(r"^RESULT (.*)$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}"
        )
    return WrkResult(dict(item.split("=", 1) for item in match.group(1).split()))


# --- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = f"http://{HOST}:{port}/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} after {STARTUP_TIMEOUT:.0f} s:\n{log.read_text()}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it was started in a session of its own, so the
    group holds the uvicorn supervisor and its workers only); SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the supervisor is gone; give its workers a moment, then make sure of them too
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    if process.poll() is None:
        process.kill()
        process.wait()


@contextmanager
def server(
    name: str, argv: Sequence[str], env: dict[str, str], port: int, workdir: Path
) -> Iterator[None]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(process, port, log)
        yield
    finally:
        stop_group(process)


def server_env(url: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(DATABASE_URL=url, MOMO_WEBHOOK_SECRET=secret)
    return env


def load_average() -> str:
    """The machine's 1-minute load: other work on the same cores skews every figure."""
    return f"load average {os.getloadavg()[0]:.1f}"


def uvicorn_impl() -> str:
    """What uvicorn's "auto" loop and http settings pick in this environment."""
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return f"loop={loop} http={http}"


# --- checks ------------------------------------------------------------------------------


def scalar(db: Database, statement: str, **params: int) -> int:
    with db.transaction() as conn:
        return int(conn.execute(text(statement), params).scalar_one())


def succeeded_in(db: Database, first: int, last: int) -> int:
    return scalar(
        db,
        "SELECT count(*) FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
        " JOIN payments AS p ON p.id = md5('p' || n)::uuid WHERE p.status = 'succeeded'",
        first=first,
        last=last,
    )


def settle_count(db: Database, block: Block) -> int:
    """Succeeded payments of the block once requests still in the server have finished."""
    count = succeeded_in(db, block.first, block.last)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = succeeded_in(db, block.first, block.last)
        if again == count:
            break
        count = again
    return count


def block_counts(db: Database, block: Block) -> tuple[int, int, int]:
    """(notifications, webhook events, order events) of the block's payments."""
    params = {"first": block.first, "last": block.last}
    series = "generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
    notifications = scalar(
        db,
        f"SELECT count(*) FROM {series} JOIN notifications AS x"
        " ON x.payment_id = md5('p' || n)::uuid",
        **params,
    )
    events = scalar(
        db,
        f"SELECT count(*) FROM {series} JOIN webhook_events AS w"
        " ON w.payment_id = md5('p' || n)::uuid",
        **params,
    )
    timeline = scalar(
        db,
        f"SELECT count(*) FROM {series} JOIN order_events AS e"
        " ON e.order_id = md5('o' || n)::uuid"
        " AND e.event IN ('payment_succeeded', 'order_paid', 'notification_queued')",
        **params,
    )
    return notifications, events, timeline


def check_http_run(db: Database, label: str, block: Block, result: WrkResult) -> bool:
    """Moved payments are the `processed` answers (plus at most what was in flight when wrk
    stopped); nothing outside what was sent moved; each has its outbox row and event."""
    moved = settle_count(db, block)
    per = block.size // WRK_THREADS
    moved_sent = 0
    for thread, sent in result.sent_by_thread().items():
        start = block.first + thread * per
        moved_sent += succeeded_in(db, start, start + min(sent, per) - 1) if sent else 0
    notifications, events, timeline = block_counts(db, block)
    processed = result["processed"]
    in_flight = max(result["sent"] - result["answered"], 0)
    unanswered = moved - processed
    ok = (
        0 <= unanswered <= in_flight
        and moved_sent == moved
        and notifications == moved
        and events == moved
        and timeline == 3 * moved
        and result["non2xx"] == 0
        and result["duplicate"] == 0
        and result["wrapped"] == 0
        and result["other2xx"] == 0
    )
    say(
        f"check {label}: {processed} answered 200 processed, {moved} payments moved to succeeded"
        f" ({unanswered:+d} unanswered when wrk stopped, in flight <= {in_flight}; "
        f"{moved - moved_sent} outside the callbacks sent), {notifications} notifications, "
        f"{events} webhook events; non-2xx {result['non2xx']}"
        f"{' (' + result.fields['codes'] + ')' if result['non2xx'] else ''}, "
        f"duplicates answered {result['duplicate']}, re-sent {result['wrapped']}, "
        f"socket errors {result.socket_errors}: {'ok' if ok else 'WRONG'}"
    )
    return ok


def check_totals(db: Database) -> bool:
    succeeded = scalar(db, "SELECT count(*) FROM payments WHERE status = 'succeeded'")
    notifications = scalar(db, "SELECT count(*) FROM notifications")
    ok = succeeded == notifications
    say(
        f"check all: {succeeded} succeeded payments, {notifications} notification rows: "
        f"{'ok' if ok else 'WRONG'}"
    )
    return ok


# --- pgbench ----------------------------------------------------------------------------

# The database's ceiling is measured on the statements the service itself sends, taken from the
# code at set-up rather than copied by hand (a copy drifts from what the code does):
#
# * `ordinary`: the ordinary transaction for one success callback
#   (payments.callbacks.apply_callback on a psycopg2 connection: what the listener runs on
#   SQLite and for whatever a batch does not settle). It is run once on a probe payment with
#   SQLAlchemy's after_cursor_execute hook recording each statement, its parameters and, for a
#   one-row result, the row; the transaction is rolled back.
# * `batch-of-one`: the batch path's statements for a lone callback (payments.callback_batches
#   settle_batch on an asyncpg connection, recorded the same way), as the listener sends a
#   callback that arrives alone; under load its batches grow.
#
# Each recorded value is turned into pgbench SQL: the probe payment's and order's ids (alone or
# inside a text such as the payload) become expressions of :n, timestamps now(), a value an
# earlier statement returned (an event id, say) the pgbench variable that statement's \gset
# set, anything else a literal. A statement that returned one row gets a \gset, so a missing
# row or a lost ON CONFLICT fails the run.
#
# Distinct payments: pgbench keeps each client's variables across its transactions, so `:i`
# (set to 0 by `-D i=0`) counts the client's transactions 1, 2, ... Client c (0-based
# :client_id) settles payments first + c * per_client ... first + (c + 1) * per_client - 1, in
# order: no two transactions touch the same payment. A client that would leave its slice
# divides by zero instead, which aborts the run (make the pool larger).
# The relay's wake-up (NOTIFY) is not here: the listener sends it after the commit, at most
# one per 20 ms per process (orderpay.store.wakeups.Nudger), not once per callback.
PGBENCH_PROLOGUE = """\
\\set i :i + 1
\\if :i > :per_client
\\set pool_exhausted 1 / 0
\\endif
\\set n :first + :client_id * :per_client + :i - 1
"""
PAYMENT_SQL = "md5('p' || :n::text)::uuid"
# Every serial id of the bench database starts here, so that a recorded value an earlier
# statement returned (an event id) is never mistaken for a constant of the SQL (1, 2, 3).
FIRST_SERIAL = 1_000_000_000
ORDER_SQL = "md5('o' || :n::text)::uuid"


@dataclass(frozen=True, slots=True)
class Sent:
    statement: str  # psycopg2's pyformat: %(name)s
    parameters: dict[str, object]
    row: dict[str, object] | None  # the one row it returned, if exactly one


def record_ordinary_callback(url: str, probe: int) -> list[Sent]:
    """What apply_callback sends for a success callback about payment `probe` (rolled back)."""
    from sqlalchemy import event

    from orderpay.payments.callbacks import apply_callback, parse_callback
    from orderpay.store.notifications import NotifyTarget

    db = Database(url)
    sent: list[Sent] = []
    with db.transaction() as conn:
        sequences = conn.execute(
            text("SELECT c.relname FROM pg_class c WHERE c.relkind = 'S'")
        ).scalars()
        for sequence in list(sequences):
            conn.execute(text("SELECT setval(:s, :v)"), {"s": sequence, "v": FIRST_SERIAL})

    def after(
        _conn: object,
        cursor: object,
        statement: str,
        parameters: object,
        _context: object,
        _many: bool,
    ) -> None:
        row = None
        description = getattr(cursor, "description", None)
        if description is not None:
            rows = cursor.fetchall()  # type: ignore[attr-defined]
            cursor.scroll(0, mode="absolute")  # type: ignore[attr-defined]  # SQLAlchemy reads them
            if len(rows) == 1:
                row = {
                    column.name: value for column, value in zip(description, rows[0], strict=True)
                }
        if statement.strip().upper() != "SELECT 1":  # the pool's pre-ping
            sent.append(Sent(statement, dict(parameters or {}), row))  # type: ignore[call-overload]

    try:
        event.listen(db.engine, "after_cursor_execute", after)
        conn = db.engine.connect()
        transaction = conn.begin()
        try:
            result = apply_callback(
                conn, parse_callback(callback_body(probe)), NotifyTarget("log", None)
            )
            if result.answer.value != "processed":
                raise RuntimeError(f"the probe callback answered {result.answer.value}")
        finally:
            transaction.rollback()
            conn.close()
    finally:
        event.remove(db.engine, "after_cursor_execute", after)
        db.dispose()
    return sent


class Renderer:
    """Recorded values as pgbench SQL (see above)."""

    def __init__(self, probe: int) -> None:
        self.texts = {
            str(payment_id(probe)): PAYMENT_SQL,
            str(order_id(probe)): ORDER_SQL,
        }
        self.returned: dict[object, str] = {}  # value -> pgbench variable

    def remember(self, prefix: str, row: dict[str, object]) -> None:
        for name, value in row.items():
            if isinstance(value, int) and value >= FIRST_SERIAL and not isinstance(value, bool):
                self.returned.setdefault(value, f":{prefix}{name}")

    def value(self, value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return self.returned.get(value, str(value))
        if isinstance(value, datetime):
            return "now()"
        if isinstance(value, Decimal | float):
            return str(value)
        if isinstance(value, uuid.UUID):
            known = self.texts.get(str(value))
            return known if known is not None else f"{quote(str(value))}::uuid"
        if isinstance(value, list | tuple):
            return "ARRAY[" + ", ".join(self.value(item) for item in value) + "]"
        if isinstance(value, str):
            return self.text(value)
        raise RuntimeError(f"no pgbench form for a {type(value).__name__} parameter")

    def text(self, value: str) -> str:
        """A text literal, the probe's ids in it replaced by expressions of :n."""
        pattern = "|".join(re.escape(known) for known in self.texts)
        parts: list[str] = []
        position = 0
        for match in re.finditer(pattern, value):
            if match.start() > position:
                parts.append(quote(value[position : match.start()]))
            parts.append(f"CAST({self.texts[match.group()]} AS text)")
            position = match.end()
        if position < len(value) or not parts:
            parts.append(quote(value[position:]))
        return "(" + " || ".join(parts) + ")"


def quote(text_: str) -> str:
    """A SQL literal. pgbench takes any `:name` for a variable, even inside a literal
    (':succeeded'), so the literal is split after each such colon."""
    quoted = "'" + text_.replace("'", "''") + "'"
    return re.sub(r":(?=\w)", ":' || '", quoted)


def pgbench_statement(sent: Sent, renderer: Renderer, index: int) -> str:
    statement = re.sub(
        r"%\((\w+)\)s",
        lambda match: renderer.value(sent.parameters[match.group(1)]),
        sent.statement,
    ).replace("%%", "%")
    if sent.row is None:
        return statement.rstrip() + ";"
    prefix = f"s{index}_"
    renderer.remember(prefix, sent.row)
    return statement.rstrip() + f" \\gset {prefix}"


def ordinary_pgbench_script(url: str, probe: int) -> tuple[str, int]:
    """pgbench's script of the ordinary transaction for one success callback, and its statements."""
    renderer = Renderer(probe)
    sent = record_ordinary_callback(url, probe)
    body = [pgbench_statement(item, renderer, index) for index, item in enumerate(sent)]
    return PGBENCH_PROLOGUE + "BEGIN;\n" + "\n".join(body) + "\nCOMMIT;\n", len(sent)


def record_batch_of_one(url: str, probe: int) -> list[tuple[str, list[object]]]:
    """What the listener's batch path sends for a lone success callback about payment
    `probe` (payments.callback_batches.settle_batch): each statement and its arguments, on
    one asyncpg connection in a transaction that is rolled back."""
    import asyncio

    from orderpay.payments.callback_batches import settle_batch
    from orderpay.payments.callbacks import parse_callback
    from orderpay.store.async_db import create_pool
    from orderpay.store.notifications import NotifyTarget

    sent: list[tuple[str, list[object]]] = []

    class Recording:
        def __init__(self, conn: object) -> None:
            self.conn = conn

        async def fetch(self, sql: str, *arguments: object) -> object:
            sent.append((sql, list(arguments)))
            return await self.conn.fetch(sql, *arguments)  # type: ignore[attr-defined]

    async def record() -> None:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                try:
                    callback = parse_callback(callback_body(probe))
                    [result] = await settle_batch(
                        Recording(conn), [callback], NotifyTarget("log", None)
                    )
                    if result is None or result.answer.value != "processed":
                        raise RuntimeError(f"the probe callback was not settled: {result}")
                finally:
                    await transaction.rollback()
        finally:
            await pool.close()

    asyncio.run(record())
    return sent


def batch_pgbench_script(url: str, probe: int) -> str:
    """pgbench's script of a batch of one callback: the batch path's statements, each in
    autocommit as the listener sends them."""
    renderer = Renderer(probe)
    body = []
    for index, (sql, arguments) in enumerate(record_batch_of_one(url, probe)):
        statement = re.sub(r"\$(\d+)", lambda m, a=arguments: renderer.value(a[int(m[1]) - 1]), sql)
        body.append(statement.rstrip() + f" \\gset b{index}_")
    return PGBENCH_PROLOGUE + "\n".join(body) + "\n"


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    tps: float
    transactions: int
    latency_ms: float


def pgbench_block(clients: int, duration: float, max_tps: float) -> int:
    """Payments per client so that `max_tps` for `duration` (with a margin) fits."""
    return max(100, math.ceil(max_tps * duration * PGBENCH_MARGIN / clients))


def run_pgbench(
    url: str, script: Path, block: Block, clients: int, duration: float, protocol: str
) -> PgbenchResult:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench not found on PATH: apt-get install postgresql-client")
    command = [
        pgbench,
        "--no-vacuum",
        f"--protocol={protocol}",
        "--file",
        str(script),
        "--client",
        str(clients),
        "--jobs",
        str(min(clients, PGBENCH_JOBS)),
        "--time",
        f"{duration:g}",
        "--define",
        "i=0",
        "--define",
        f"first={block.first}",
        "--define",
        f"per_client={block.size // clients}",
    ]
    completed = subprocess.run(
        command, env=libpq_env(url), capture_output=True, text=True, check=False
    )
    output = completed.stdout + completed.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    latency = re.search(r"latency average = ([0-9.]+) ms", output)
    if completed.returncode != 0 or processed is None:
        hint = " (pool exhausted: raise --pgbench-max-tps)" if "division by zero" in output else ""
        raise RuntimeError(f"pgbench failed (exit {completed.returncode}){hint}:\n{output}")
    return PgbenchResult(
        pgbench_tps(output), int(processed.group(1)), float(latency.group(1)) if latency else 0.0
    )


def check_pgbench_run(db: Database, label: str, block: Block, result: PgbenchResult) -> bool:
    moved = succeeded_in(db, block.first, block.last)
    notifications, events, timeline = block_counts(db, block)
    ok = moved == result.transactions == notifications == events and timeline == 3 * moved
    say(
        f"check {label}: {result.transactions} transactions, {moved} payments moved to "
        f"succeeded, {notifications} notifications, {events} webhook events: "
        f"{'ok' if ok else 'WRONG'}"
    )
    return ok


# --- main --------------------------------------------------------------------------------

REFERENCE_KINDS = ("seed", "ours")
PGBENCH_KINDS = ("ordinary", "batch-of-one")


def interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_counts(raw: str, minimum: int = 1) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {raw!r}") from None
    if not counts or any(count < minimum for count in counts):
        raise argparse.ArgumentTypeError(f"counts must be >= {minimum}")
    return counts


def parse_connections(raw: str) -> list[int]:
    return parse_counts(raw, WRK_THREADS)


def parse_references(raw: str) -> list[str]:
    kinds = [part.strip() for part in raw.split(",") if part.strip()]
    if not kinds or any(kind not in REFERENCE_KINDS for kind in kinds):
        raise argparse.ArgumentTypeError(f"references: a list of {', '.join(REFERENCE_KINDS)}")
    return kinds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Signed callbacks per second through serve-webhooks, next to ceilings."
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_BASE_URL,
        help="a Postgres URL; the throwaway database is made on its server",
    )
    parser.add_argument(
        "--connections",
        type=parse_connections,
        default=DEFAULT_CONNECTIONS,
        help=f"comma-separated wrk connections / pgbench clients ({DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--references",
        type=parse_references,
        default=",".join(REFERENCE_KINDS),
        help="seed (the sender's transaction id in provider_reference), ours (the payment id)",
    )
    parser.add_argument(
        "--sizes",
        type=parse_counts,
        default=DEFAULT_SIZES,
        help=f"payments in the table before each stage's runs ({DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION, help="seconds per timed run (10)"
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=DEFAULT_POOL,
        help=f"distinct callbacks per webhooks run ({DEFAULT_POOL})",
    )
    parser.add_argument(
        "--pgbench-max-tps",
        type=float,
        default=DEFAULT_PGBENCH_MAX_TPS,
        help=f"the pgbench pool is sized for this rate ({DEFAULT_PGBENCH_MAX_TPS})",
    )
    parser.add_argument(
        "--pgbench-protocol",
        default="prepared",
        choices=["simple", "extended", "prepared"],
        help="pgbench -M (prepared; psycopg2 itself uses simple)",
    )
    parser.add_argument(
        "--skip-ceilings",
        action="store_true",
        help="only the webhooks runs (for profiling sessions)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    secret = secrets.token_urlsafe(36)  # 48 characters
    with (
        tempfile.TemporaryDirectory(prefix="orderpay-webhooks-bench-") as tmp,
        throwaway_database(args.database_url, migrate=False) as url,
    ):
        return Bench(args, url, secret, Path(tmp)).run()


@dataclass
class StageResult:
    payments: int  # in the table when the stage's first timed run started
    webhooks: dict[tuple[str, int], WrkResult]
    pgbench: dict[tuple[str, int], PgbenchResult]


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, secret: str, workdir: Path) -> None:
        self.args = args
        self.url = url
        self.secret = secret
        self.workdir = workdir
        self.allocator = Allocator()
        self.lua = workdir / "callbacks.lua"
        self.env = server_env(url, secret)
        self.ok = True
        self.catalog: Catalog | None = None
        self.scripts: dict[str, Path] = {}

    def block(self, size: int, *, seed: bool) -> Block:
        """The next `size` payment numbers, made pending payments now."""
        assert self.catalog is not None
        block = self.allocator.block(size)
        create_payments(self.url, self.catalog, block, seed=seed)
        return block

    def callbacks(self, name: str, size: int, *, seed: bool) -> tuple[Block, Path]:
        block = self.block(size - size % WRK_THREADS, seed=seed)
        path = self.workdir / f"{name}.tsv"
        write_callbacks(path, block, self.secret.encode(), seed=seed)
        return block, path

    def run(self) -> int:
        args = self.args
        started = time.perf_counter()
        note("set-up: orderpay db upgrade")
        upgrade_schema(self.url)
        self.catalog = create_catalog(self.url)
        self.lua.write_text(WRK_SCRIPT)
        probe = self.block(1, seed=False)
        ordinary = self.workdir / "ordinary.sql"
        script, statements = ordinary_pgbench_script(self.url, probe.first)
        ordinary.write_text(script)
        self.scripts["ordinary"] = ordinary
        self.scripts["batch-of-one"] = self.workdir / "batch-of-one.sql"
        self.scripts["batch-of-one"].write_text(batch_pgbench_script(self.url, probe.first))
        say(
            f"uvicorn {WORKERS} workers, {uvicorn_impl()} (auto, both servers); wrk "
            f"-t{WRK_THREADS} -d{args.duration:g}s; pgbench -j{PGBENCH_JOBS} -T{args.duration:g} "
            f"-M {args.pgbench_protocol} on the service's own SQL ({', '.join(self.scripts)}: "
            f"{statements} statements in the ordinary transaction); "
            f"references {', '.join(args.references)}; {os.cpu_count()} CPUs, {load_average()}"
        )
        if not args.skip_ceilings:
            self.hmac_ceiling()
        results = [self.stage(size) for size in args.sizes]
        self.flatness(results)
        db = Database(self.url)
        try:
            self.ok &= check_totals(db)
        finally:
            db.dispose()
        say(f"done in {time.perf_counter() - started:.0f} s; {load_average()}")
        if not self.ok:
            say("FAILED: a correctness check did not hold")
        return 0 if self.ok else 1

    def hmac_ceiling(self) -> None:
        """The HMAC-only app's rate: it stores nothing, so one pool serves every run."""
        args = self.args
        callbacks = self.workdir / "hmac.tsv"  # numbers only: the app stores nothing
        write_callbacks(callbacks, self.allocator.block(args.pool), self.secret.encode(), seed=True)
        port = free_port()
        argv = [
            sys.executable,
            str(BENCH_DIR / "webhooks_hmac_app.py"),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "warning",
        ]
        note("HMAC-only ceiling: starting")
        with server("hmac-only", argv, self.env, port, self.workdir):
            run_wrk(self.lua, callbacks, port, GOAL_CONNECTIONS, WARMUP_SECONDS)
            for connections in args.connections:
                note(f"HMAC-only ceiling: {connections} connections")
                result = run_wrk(self.lua, callbacks, port, connections, args.duration)
                say(
                    f"HMAC-only {connections} conns: {result.rate(result['requests']):.0f} "
                    f"req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms "
                    f"(non-2xx {result['non2xx']}; it stores nothing)"
                )

    def stage(self, size: int) -> StageResult:
        """The webhooks runs, then the pgbench runs, with at least `size` payments stored."""
        args = self.args
        db = Database(self.url)
        try:
            # `size`: the payments stored when the first timed run starts, its pool and the
            # warm-up's included; a pool alone may exceed a small size (the line says so).
            more = size - payment_count(db) - WARMUP_CALLBACKS - args.pool
            if more > 0:
                note(f"stage {size:,}: {more:,} more pending payments (bulk SQL)")
                topped = time.perf_counter()
                self.block(more, seed=True)
                note(f"  ... in {time.perf_counter() - topped:.0f} s")
            warmup_seed = args.references[0] == "seed"
            warmup, warmup_file = self.callbacks(
                f"warmup-{size}", WARMUP_CALLBACKS, seed=warmup_seed
            )
            vacuum(db)
            result = StageResult(payment_count(db) + args.pool, {}, {})
            say(f"stage {size:,}: {result.payments:,} payments stored at the first timed run")
            port = free_port()
            argv = [
                str(console_script("orderpay")),
                "serve-webhooks",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(WORKERS),
                "--log-level",
                "warning",
            ]
            note("serve-webhooks: starting, warming up")
            with server(f"serve-webhooks-{size}", argv, self.env, port, self.workdir):
                run_wrk(self.lua, warmup_file, port, GOAL_CONNECTIONS, WARMUP_SECONDS)
                settle_count(db, warmup)
                for kind in args.references:
                    for connections in args.connections:
                        seed = kind == "seed"
                        name = f"{kind}-{connections}-{size}"
                        block, callbacks = self.callbacks(name, args.pool, seed=seed)
                        vacuum(db, checkpoint=True)
                        note(f"serve-webhooks: {kind} references, {connections} connections")
                        wrk = run_wrk(self.lua, callbacks, port, connections, args.duration)
                        result.webhooks[kind, connections] = wrk
                        label = f"{kind} refs, {connections} conns, {result.payments:,} payments"
                        self.ok &= check_http_run(db, label, block, wrk)
            if not args.skip_ceilings:
                for kind, script in self.scripts.items():
                    for connections in args.connections:
                        per = pgbench_block(connections, args.duration, args.pgbench_max_tps)
                        block = self.block(connections * per, seed=False)
                        vacuum(db, checkpoint=True)
                        note(f"pgbench {kind}: {connections} clients")
                        pg = run_pgbench(
                            self.url,
                            script,
                            block,
                            connections,
                            args.duration,
                            args.pgbench_protocol,
                        )
                        result.pgbench[kind, connections] = pg
                        say(
                            f"pgbench {kind} {connections} clients: {pg.tps:.0f} tps (latency "
                            f"avg {pg.latency_ms:.2f} ms, {pg.transactions} callbacks)"
                        )
                        self.ok &= check_pgbench_run(db, f"pgbench {kind} {connections}", block, pg)
        finally:
            db.dispose()
        for (kind, connections), wrk in result.webhooks.items():
            say(webhooks_line(kind, connections, result, wrk))
            if connections == GOAL_CONNECTIONS:
                say(goal_line(kind, result, wrk))
        return result

    def flatness(self, results: list[StageResult]) -> None:
        if len(results) < 2:
            return
        first, last = results[0], results[-1]
        for key, wrk in last.webhooks.items():
            if key not in first.webhooks:
                continue
            kind, connections = key
            small = first.webhooks[key].rate(first.webhooks[key]["processed"])
            large = wrk.rate(wrk["processed"])
            share = ratio(large, small)
            within = share >= 1 - GOAL_FLATNESS
            say(
                f"flat {kind} refs, {connections} conns: {large:.0f}/s at {last.payments:,} "
                f"payments vs {small:.0f}/s at {first.payments:,}: {share:.2f}x, within "
                f"{GOAL_FLATNESS:.0%}: {'yes' if within else 'NO'}"
            )


def webhooks_line(kind: str, connections: int, stage: StageResult, result: WrkResult) -> str:
    rate = result.rate(result["processed"])
    ceilings = []
    for pg_kind in PGBENCH_KINDS:
        pg = stage.pgbench.get((pg_kind, connections))
        if pg is not None:
            ceilings.append(f"pgbench {pg_kind} {pg.tps:.0f} tps, ratio {ratio(rate, pg.tps):.2f}")
    suffix = f" ({'; '.join(ceilings)})" if ceilings else ""
    return (
        f"webhooks {kind} refs {connections} conns at {stage.payments:,} payments: "
        f"{rate:.0f} callbacks/s p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms{suffix}"
    )


def goal_line(kind: str, stage: StageResult, result: WrkResult) -> str:
    """The goal: at least the ordinary transaction's pgbench rate, p99 under 100 ms."""
    rate = result.rate(result["processed"])
    verdicts = [
        (f"p99 {result.p99_ms:.1f} ms < {GOAL_P99_MS:.0f}", result.p99_ms < GOAL_P99_MS),
    ]
    pg = stage.pgbench.get(("ordinary", GOAL_CONNECTIONS))
    if pg is not None:
        share = ratio(rate, pg.tps)
        verdicts.append(
            (
                f"{share:.2f}x pgbench of the ordinary transaction >= {GOAL_RATIO}",
                share >= GOAL_RATIO,
            )
        )
    parts = ", ".join(f"{text_}: {'yes' if met else 'no'}" for text_, met in verdicts)
    verdict = "met" if all(met for _, met in verdicts) else "NOT met"
    return (
        f"goal, {kind} refs at {GOAL_CONNECTIONS} conns, {stage.payments:,} payments: "
        f"{rate:.0f}/s; {parts}: {verdict}"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        note("interrupted: servers stopped, database dropped")
        sys.exit(130)
