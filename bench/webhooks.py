"""Signed payment callbacks per second through `orderpay serve-webhooks` on Postgres, with ceilings.

Run it from the repository root with the development virtualenv (it needs wrk and pgbench on
PATH: `apt-get install wrk postgresql-client`):

    python bench/webhooks.py                       # 16 and 64 connections, 10 s each
    python bench/webhooks.py --duration 5 --connections 64
    python bench/webhooks.py --database-url postgresql+psycopg2://user@host:5432/postgres

Set-up (not timed): a throwaway database `orderpay_bench_<hex>` on the server of
--database-url, `orderpay db upgrade`, then one customer and one product through the service
layer and, in bulk SQL shaped like orders.create_order and charges.charge_order, one order of
25.00 GHS per payment with its item, timeline rows and a `pending` simulator payment. Payment
number n has the id md5('p' || n)::uuid and its order md5('o' || n)::uuid, so Python, SQL and
pgbench all derive the same random-looking ids from n without a lookup. The database is dropped
at the end, and every server started is stopped, even on error or Ctrl-C.

What is measured (stdout holds the figures; progress goes to stderr):

* `webhooks N conns`: `orderpay serve-webhooks --workers 2 --log-level warning` driven by
  `wrk -t2 -cN -d10s` for the duration. Every request is a distinct, pre-signed success
  callback (X-Momo-Signature = hex HMAC-SHA256 of the exact body,
  orderpay.domain.signatures.sign_hex)
  for its own pending payment: each run has its own pool of payments, split between wrk's
  threads, and each thread sends its share in order. callbacks/s = 200 `processed` answers
  divided by wrk's run time; p50/p99 are wrk's latency percentiles over all answers.
* `HMAC-only ceiling`: bench/webhooks_hmac_app.py, a Starlette route that only reads the body
  and checks the HMAC, under uvicorn with the same settings (2 workers, auto loop/http), driven
  by the same script and callbacks (it stores nothing, so re-sent callbacks are harmless).
* `pgbench N clients`: the database ceiling. pgbench (-j 2, -T duration, -M prepared by
  default) runs the statements the service sends for one success callback, in one transaction
  (see PGBENCH_SCRIPT), each on a distinct pending payment from a pool of its own.
  ratio = webhooks callbacks/s divided by the ceiling.

After each webhooks run the script checks in SQL that the payments moved to `succeeded` are the
200 `processed` answers (plus at most the requests still in flight when wrk stopped), that no
payment outside those sent moved, and that each has its notification row and event; after each
pgbench run, that succeeded payments, events and notifications equal its transaction count. It
exits 1 when a check fails. Goal (from the issue): at 64 connections at least 2,500
callbacks/s, p99 under 100 ms, and at least half of pgbench's figure.
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
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from _common import (
    DEFAULT_BASE_URL,
    a_customer_and_product,
    console_script,
    libpq_env,
    note,
    payment_columns,
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
WARMUP_CALLBACKS = 8_000
DEFAULT_CONNECTIONS = "16,64"
DEFAULT_DURATION = 10
# Callbacks per webhooks run: enough for 4,000/s for 10 s. A run that gets through its pool
# wraps around and re-sends (answered `duplicate`); the check line then says so.
DEFAULT_POOL = 40_000
# The pgbench pool per run is sized for this rate (times the duration, plus a margin): each
# client gets an equal slice and a client that runs out of its slice aborts the run.
DEFAULT_PGBENCH_MAX_TPS = 6_000
PGBENCH_MARGIN = 1.5
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
SETTLE_TIMEOUT = 15.0

GOAL_CONNECTIONS = 64
GOAL_RATE = 2_500
GOAL_P99_MS = 100.0
GOAL_RATIO = 0.5

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
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"orderpay db upgrade failed:\n{completed.stdout}{completed.stderr}")


def create_payments(url: str, count: int) -> None:
    """`count` pending orders, each with a `pending` payment, as the service would leave them."""
    db = Database(url)
    try:
        with db.transaction() as conn:
            customer, product = a_customer_and_product(
                conn, phone=PAYER, region=DEFAULT_REGION, price_minor=PRICE_MINOR,
                currency=CURRENCY,
            )  # fmt: skip
            params = {
                "count": count, "customer": customer.id, "product": product.id,
                "quantity": QUANTITY, "price": PRICE_MINOR, "total": TOTAL_MINOR,
                "currency": CURRENCY, "phone": customer.phone, "masked": MASKED_PAYER,
                "amount": f"{AMOUNT_TEXT} {CURRENCY}",
            }  # fmt: skip
            statements = [
                "INSERT INTO orders (id, customer_id, status, currency, total, created_at,"
                " updated_at) SELECT md5('o' || n)::uuid, :customer, 'pending', :currency,"
                " :total, now(), now() FROM generate_series(1, :count) AS n",
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                " SELECT md5('o' || n)::uuid, :product, :quantity, :price"
                " FROM generate_series(1, :count) AS n",
                "INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount,"
                " currency, payer_phone, provider, provider_reference, status, failure_reason,"
                " lease_expires_at, created_at, updated_at)"
                " SELECT md5('p' || n)::uuid, md5('o' || n)::uuid, 'bench-' || n,"
                " encode(sha256(('charge-' || n)::bytea), 'hex'), :total, :currency, :phone,"
                " 'simulator', md5('p' || n)::uuid::text, 'pending', NULL, NULL, now(), now()"
                " FROM generate_series(1, :count) AS n",
                "INSERT INTO order_events (order_id, at, event, detail)"
                " SELECT md5('o' || n)::uuid, now(), e.event, CASE e.event"
                "  WHEN 'order_created' THEN '2 items, total ' || :amount"
                "  WHEN 'payment_initiated' THEN 'payment ' || md5('p' || n)::uuid || ' for '"
                "   || :amount || ' from ' || :masked || ' via simulator'"
                "  ELSE 'payment ' || md5('p' || n)::uuid || ' accepted by simulator' END"
                " FROM generate_series(1, :count) AS n, (VALUES (1, 'order_created'),"
                "  (2, 'payment_initiated'), (3, 'payment_pending')) AS e(k, event)"
                " ORDER BY n, e.k",
            ]
            for statement in statements:
                conn.execute(text(statement), params)
            stored = conn.execute(
                text("SELECT id, order_id FROM payments WHERE idempotency_key = 'bench-1'")
            ).one()
            if tuple(stored) != (payment_id(1), order_id(1)):
                raise RuntimeError("Python and SQL disagree on payment ids")
        vacuum(db)
    finally:
        db.dispose()


def callback_body(n: int) -> bytes:
    document = {
        "provider_reference": str(payment_id(n)),
        "order_id": str(order_id(n)),
        "status": "success",
        "amount": AMOUNT_TEXT,
        "currency": CURRENCY,
    }
    return json.dumps(document).encode()


def write_callbacks(path: Path, block: Block, secret: bytes) -> None:
    """One line per callback, in payment order: `<hex signature>\\t<body>`."""
    with path.open("wb") as out:
        for n in range(block.first, block.last + 1):
            body = callback_body(n)
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
        wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "30s",
        "-s", str(lua), f"http://{HOST}:{port}{CALLBACK_PATH}",
        "--", str(callbacks), str(WRK_THREADS),
    ]  # fmt: skip
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
def server(name: str, argv: Sequence[str], env: dict[str, str], port: int, workdir: Path
           ) -> Iterator[None]:  # fmt: skip
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
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
        first=first, last=last,
    )  # fmt: skip


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
    """(notifications, webhook events, timeline rows) of the block's payments."""
    params = {"first": block.first, "last": block.last}
    series = "generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
    notifications = scalar(
        db, f"SELECT count(*) FROM {series} JOIN notifications AS x"
        " ON x.payment_id = md5('p' || n)::uuid", **params,
    )  # fmt: skip
    events = scalar(
        db, f"SELECT count(*) FROM {series} JOIN webhook_events AS w"
        " ON w.payment_id = md5('p' || n)::uuid", **params,
    )  # fmt: skip
    timeline = scalar(
        db, f"SELECT count(*) FROM {series} JOIN order_events AS e"
        " ON e.order_id = md5('o' || n)::uuid"
        " AND e.event IN ('payment_succeeded', 'order_paid', 'notification_queued')", **params,
    )  # fmt: skip
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


# --- pgbench -----------------------------------------------------------------------------

# One success callback as pgbench sees it: the statements apply_callback sends (copied from
# SQLAlchemy's echo for one callback), in one transaction. Values the service binds from
# Python (ids, timestamps, texts) are expressions of n or now() here, so the same script runs
# under -M simple and -M prepared. The pool's pre-ping (`SELECT 1` on checkout) is left out.
#
# Distinct payments: pgbench keeps each client's variables across its transactions, so `:i`
# (set to 0 by `-D i=0`) counts the client's transactions 1, 2, ... Client c (0-based
# :client_id) settles payments first + c * per_client ... first + (c + 1) * per_client - 1, in
# order: no two transactions touch the same payment. A client that would leave its slice
# divides by zero instead, which aborts the run (make the pool larger). The \gset after the
# lock, the inbox INSERT and the settling statement makes a missing row or a lost ON CONFLICT
# fail the run too.
# The relay's wake-up (NOTIFY) is not here: the listener sends it after the commit, at most
# one per 20 ms per process (orderpay.store.wakeups.Nudger), not once per callback.
PAYMENT_COLUMNS = payment_columns()
PGBENCH_SCRIPT = f"""\
\\set i :i + 1
\\if :i > :per_client
\\set pool_exhausted 1 / 0
\\endif
\\set n :first + :client_id * :per_client + :i - 1
BEGIN;
SELECT {PAYMENT_COLUMNS}, orders.status AS status_1, customers.phone
FROM payments JOIN orders ON orders.id = payments.order_id
JOIN customers ON customers.id = orders.customer_id
WHERE payments.id = md5('p' || :n::text)::uuid
FOR UPDATE OF payments, orders \\gset sel_
INSERT INTO webhook_events (source, dedupe_key, payload, received_at, outcome, order_id,
  payment_id)
VALUES ('momo', md5('p' || :n::text)::uuid || ':' || 'succeeded',
  '{{"provider_reference": "' || md5('p' || :n::text)::uuid || '", "order_id": "'
  || md5('o' || :n::text)::uuid || '", "status": "success", "amount": "{AMOUNT_TEXT}", '
  || '"currency": "{CURRENCY}"}}', now(), 'processed', md5('o' || :n::text)::uuid,
  md5('p' || :n::text)::uuid)
ON CONFLICT (source, dedupe_key) DO NOTHING RETURNING webhook_events.id \\gset ev_
WITH paid AS (UPDATE payments SET status = 'succeeded', failure_reason = NULL,
  lease_expires_at = NULL, updated_at = now()
  WHERE payments.id = md5('p' || :n::text)::uuid AND payments.status = 'pending'
  RETURNING payments.id, payments.order_id),
order_paid AS (UPDATE orders SET status = 'paid', updated_at = now() FROM paid
  WHERE orders.id = paid.order_id AND orders.status = 'pending' RETURNING orders.id),
queued AS (INSERT INTO notifications (order_id, payment_id, kind, channel, recipient, body,
  status, attempts, due_at, created_at, updated_at)
  SELECT paid.order_id, paid.id, 'payment_received', 'log', '{PAYER}', '', 'pending', 0, now(),
  now(), now() FROM paid
  ON CONFLICT (payment_id, kind) WHERE refund_id IS NULL DO NOTHING RETURNING notifications.id),
timeline AS (INSERT INTO order_events (order_id, at, event, detail)
  SELECT e.order_id, now(), e.event, e.detail FROM (
    SELECT 1 AS k, paid.order_id, 'payment_succeeded' AS event, 'payment ' || paid.id
      || ' of {AMOUNT_TEXT} {CURRENCY} succeeded (momo callback)' AS detail FROM paid
    UNION ALL SELECT 2, paid.order_id, 'order_paid', 'paid by payment ' || paid.id FROM paid
    UNION ALL SELECT 3, paid.order_id, 'notification_queued',
      'notification ' || CAST(queued.id AS TEXT) || ' via log' FROM paid JOIN queued ON true
  ) AS e ORDER BY e.k)
SELECT paid.id FROM paid \\gset paid_
COMMIT;
"""


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
        pgbench, "--no-vacuum", f"--protocol={protocol}", "--file", str(script),
        "--client", str(clients), "--jobs", str(min(clients, PGBENCH_JOBS)),
        "--time", f"{duration:g}",
        "--define", "i=0", "--define", f"first={block.first}",
        "--define", f"per_client={block.size // clients}",
    ]  # fmt: skip
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


@dataclass(frozen=True, slots=True)
class Plan:
    connections: list[int]
    warmup: Block
    http: dict[int, Block]
    pgbench: dict[int, Block]


def make_plan(args: argparse.Namespace) -> Plan:
    allocator = Allocator()
    warmup = allocator.block(WARMUP_CALLBACKS)
    http = {c: allocator.block(args.pool - args.pool % WRK_THREADS) for c in args.connections}
    pgbench = {
        c: allocator.block(c * pgbench_block(c, args.duration, args.pgbench_max_tps))
        for c in args.connections
    }
    return Plan(args.connections, warmup, http, pgbench)


def interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_connections(raw: str) -> list[int]:
    try:
        counts = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {raw!r}") from None
    if not counts or any(count < WRK_THREADS for count in counts):
        raise argparse.ArgumentTypeError(f"connection counts must be >= {WRK_THREADS}")
    return counts


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
        help="comma-separated wrk connections / pgbench clients (16,64)",
    )
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION, help="seconds per timed run (10)"
    )
    parser.add_argument(
        "--pool", type=int, default=DEFAULT_POOL, help="distinct callbacks per webhooks run (40000)"
    )
    parser.add_argument(
        "--pgbench-max-tps",
        type=float,
        default=DEFAULT_PGBENCH_MAX_TPS,
        help="the pgbench pool is sized for this rate (6000)",
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
    plan = make_plan(args)
    secret = secrets.token_urlsafe(36)  # 48 characters
    with (
        tempfile.TemporaryDirectory(prefix="orderpay-webhooks-bench-") as tmp,
        throwaway_database(args.database_url, migrate=False) as url,
    ):
        workdir = Path(tmp)
        return run(args, plan, url, secret, workdir)


def run(args: argparse.Namespace, plan: Plan, url: str, secret: str, workdir: Path) -> int:
    started = time.perf_counter()
    note("set-up: orderpay db upgrade")
    upgrade_schema(url)
    total = (
        sum(b.size for b in plan.http.values())
        + plan.warmup.size
        + sum(b.size for b in plan.pgbench.values())
    )
    note(f"set-up: {total} pending orders and payments")
    create_payments(url, total)
    lua = workdir / "callbacks.lua"
    lua.write_text(WRK_SCRIPT)
    files = {"warmup": workdir / "warmup.tsv"}
    write_callbacks(files["warmup"], plan.warmup, secret.encode())
    for connections, block in plan.http.items():
        files[str(connections)] = workdir / f"callbacks-{connections}.tsv"
        write_callbacks(files[str(connections)], block, secret.encode())
    pg_script = workdir / "callback.sql"
    pg_script.write_text(PGBENCH_SCRIPT)
    say(
        f"set-up: {total} pending payments ({plan.warmup.size} warm-up, "
        f"{' + '.join(str(b.size) for b in plan.http.values())} for webhooks, "
        f"{' + '.join(str(b.size) for b in plan.pgbench.values())} for pgbench) in "
        f"{time.perf_counter() - started:.0f} s; uvicorn {WORKERS} workers, {uvicorn_impl()} "
        f"(auto, both servers); wrk -t{WRK_THREADS} -d{args.duration:g}s; pgbench "
        f"-j{PGBENCH_JOBS} -T{args.duration:g} -M {args.pgbench_protocol}; {os.cpu_count()} CPUs, "
        f"{load_average()}"
    )

    env = server_env(url, secret)
    hmac_results: dict[int, WrkResult] = {}
    pg_results: dict[int, PgbenchResult] = {}
    if not args.skip_ceilings:
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
        with server("hmac-only", argv, env, port, workdir):
            run_wrk(lua, files["warmup"], port, GOAL_CONNECTIONS, WARMUP_SECONDS)
            for connections in plan.connections:
                note(f"HMAC-only ceiling: {connections} connections")
                hmac_results[connections] = result = run_wrk(
                    lua, files[str(connections)], port, connections, args.duration
                )
                say(
                    f"HMAC-only {connections} conns: {result.rate(result['requests']):.0f} "
                    f"req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms "
                    f"(non-2xx {result['non2xx']}, callbacks re-sent {result['wrapped']}; "
                    f"it stores nothing)"
                )

    ok = True
    db = Database(url)
    try:
        if not args.skip_ceilings:
            for connections in plan.connections:
                vacuum(db, checkpoint=True)
                note(f"pgbench: {connections} clients")
                block = plan.pgbench[connections]
                pg_results[connections] = result = run_pgbench(
                    url, pg_script, block, connections, args.duration, args.pgbench_protocol
                )
                say(
                    f"pgbench {connections} clients: {result.tps:.0f} tps "
                    f"(latency avg {result.latency_ms:.2f} ms, {result.transactions} callbacks)"
                )
                ok &= check_pgbench_run(db, f"pgbench {connections}", block, result)

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
        vacuum(db)
        note("serve-webhooks: starting, warming up")
        with server("serve-webhooks", argv, env, port, workdir):
            run_wrk(lua, files["warmup"], port, GOAL_CONNECTIONS, WARMUP_SECONDS)
            settle_count(db, plan.warmup)
            for connections in plan.connections:
                vacuum(db, checkpoint=True)
                note(f"serve-webhooks: {connections} connections")
                block = plan.http[connections]
                result = run_wrk(lua, files[str(connections)], port, connections, args.duration)
                say(webhooks_line(connections, result, hmac_results, pg_results))
                ok &= check_http_run(db, f"{connections} conns", block, result)
                if connections == GOAL_CONNECTIONS:
                    say(goal_line(result, pg_results.get(connections)))
        ok &= check_totals(db)
    finally:
        db.dispose()
    say(f"done in {time.perf_counter() - started:.0f} s; {load_average()}")
    if not ok:
        say("FAILED: a correctness check did not hold")
    return 0 if ok else 1


def webhooks_line(
    connections: int,
    result: WrkResult,
    hmac_results: dict[int, WrkResult],
    pg_results: dict[int, PgbenchResult],
) -> str:
    rate = result.rate(result["processed"])
    ceilings = []
    if connections in hmac_results:
        ceiling = hmac_results[connections]
        hmac_rate = ceiling.rate(ceiling["requests"])
        ceilings.append(
            f"HMAC-only ceiling {hmac_rate:.0f} req/s, ratio {ratio(rate, hmac_rate):.2f}"
        )
    if connections in pg_results:
        tps = pg_results[connections].tps
        ceilings.append(
            f"pgbench {connections} clients {tps:.0f} tps, ratio {ratio(rate, tps):.2f}"
        )
    if connections == GOAL_CONNECTIONS:
        ceilings.append(
            f"goal >= {GOAL_RATE}/s, p99 < {GOAL_P99_MS:.0f} ms, >= {GOAL_RATIO} of pgbench"
        )
    suffix = f" ({'; '.join(ceilings)})" if ceilings else ""
    return (
        f"webhooks {connections} conns: {rate:.0f} callbacks/s p50 {result.p50_ms:.1f} ms "
        f"p99 {result.p99_ms:.1f} ms{suffix}"
    )


def goal_line(result: WrkResult, pg: PgbenchResult | None) -> str:
    rate = result.rate(result["processed"])
    verdicts = [
        (f"{rate:.0f}/s >= {GOAL_RATE}", rate >= GOAL_RATE),
        (f"p99 {result.p99_ms:.1f} ms < {GOAL_P99_MS:.0f}", result.p99_ms < GOAL_P99_MS),
    ]
    if pg is not None:
        share = ratio(rate, pg.tps)
        verdicts.append((f"{share:.2f} of pgbench >= {GOAL_RATIO}", share >= GOAL_RATIO))
    parts = ", ".join(f"{text_}: {'yes' if met else 'no'}" for text_, met in verdicts)
    verdict = "met" if all(met for _, met in verdicts) else "NOT met"
    return f"goal at {GOAL_CONNECTIONS} conns: {parts}: {verdict}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        note("interrupted: servers stopped, database dropped")
        sys.exit(130)
