"""Charges per second through the service layer on Postgres, next to pgbench doing the same SQL.

Run it from the repository root with the development virtualenv:

    python bench/charge.py                      # 2,000 charges per run, 1 and 8 workers
    python bench/charge.py --orders 5000 --workers 1,2,8
    python bench/charge.py --database-url postgresql+psycopg2://user@host:5432/postgres
    python bench/charge.py --profile 1000       # also cProfile 1,000 charges (to stderr)
    python bench/charge.py --repeat 3           # medians of 3 interleaved pairs of runs

It creates a throwaway database `orderpay_bench_<hex>` on the server of --database-url,
migrates it to head, pre-creates pending orders (one customer, one product; not timed) and
drops the database at the end, even on error. Every charge uses its own order and key.

What the numbers mean (stdout holds only these lines; progress goes to stderr):

* `charge service N workers`: N forked processes, each with its own orderpay.store.db.Database and
  SimulatorProvider, call orderpay.payments.charge.charge_order for their share of the orders; the
  rate is charges divided by the wall time from the barrier release to the last worker's
  finish (connections are opened and a few warm-up charges made before the barrier).
* `pgbench N clients`: the ceiling. pgbench runs the statements charge_order sends on
  Postgres, in the same two transactions (BEGIN; SELECT ... FOR SHARE; INSERT payment with
  its event in one statement; COMMIT; BEGIN; UPDATE payment with its event in one statement;
  COMMIT), over the same simple query protocol psycopg2 uses, on its own fresh orders. One
  pgbench "transaction" is one charge, so tps is charges/s.
  The ratio service/pgbench is the share of the database's capacity the Python layer keeps.
* `orderpay --help`: median wall time of the console script next to `python -c pass`; the
  difference is what importing and running the CLI costs. Both may write bytecode during
  the warm-up, as an installed package has it (PYTHONDONTWRITEBYTECODE is dropped).
After the runs every order must have exactly one payment, `pending`, and three order events
(order_created, payment_initiated, payment_pending); otherwise the script exits with status 1.

Goals (GOAL_* below, printed beside the figures): `orderpay --help` costs less than
GOAL_HELP_OVERHEAD_MS above bare Python start-up; at GOAL_WORKERS workers the service reaches
at least GOAL_RATIO of pgbench's rate.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Barrier
from pathlib import Path

from _common import (
    DEFAULT_BASE_URL,
    a_customer_and_product,
    console_script,
    libpq_env,
    median_wall_ms,
    note,
    payment_columns,
    pgbench_tps,
    ratio,
    say,
    throwaway_database,
    vacuum,
)
from sqlalchemy import text

from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database

DEFAULT_ORDERS = 2000
DEFAULT_WORKERS = "1,8"
WARMUP_CHARGES = 3  # per worker, before the barrier: connection, compiled-statement cache
HELP_RUNS = 20
GOAL_RATIO = 0.5
GOAL_WORKERS = 8
GOAL_HELP_OVERHEAD_MS = 150.0
BARRIER_TIMEOUT_SECONDS = 60.0

PAYER = "+233241234567"  # the customer's phone: the simulator accepts it, with no network
DEFAULT_REGION = "GH"
LEASE_SECONDS = 90
PRICE_MINOR = 1250  # 12.50 GHS, two of them per order
QUANTITY = 2
CURRENCY = "GHS"

# Order number n (1, 2, ...) has the id 00000000-0000-4000-8000-1nnnnnnnnnnn: twelve decimal
# digits are valid hex, so pgbench can spell an order's id from an integer without a lookup
# (`'00000000-0000-4000-8000-:m'` with m = ID_OFFSET + n) and Python agrees with it exactly.
ID_PREFIX = "00000000-0000-4000-8000-"
ID_OFFSET = 100_000_000_000


def order_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"{ID_PREFIX}{ID_OFFSET + n}")


def charge_key(n: int) -> str:
    return f"bench-{n}"


# One charge as pgbench sees it: the statements charge_order sends for an order that is
# pending (see the SQL SQLAlchemy emits with echo=True), in its two transactions. Values the
# service computes in Python (ids, fingerprint, timestamps) are constants or now() here.
#
# Distinct orders: pgbench keeps each client's variables from one run of the script to the
# next, so `:i` (started at 0 by `-D i=0`) counts the client's charges 1, 2, ... With
# `-t per_client`, client c (0-based :client_id) charges orders first + c * per_client ...
# first + (c + 1) * per_client - 1: no two charges share an order or a key. The \gset after
# the INSERT also makes a lost ON CONFLICT (no row back) fail the run instead of passing.
PAYMENT_COLUMNS = payment_columns()
WRITTEN_COLUMNS = PAYMENT_COLUMNS.replace("payments.", "written.")
PGBENCH_SCRIPT = f"""\
\\set i :i + 1
\\set n :first + :client_id * :per_client + :i - 1
\\set m {ID_OFFSET} + :n
BEGIN;
SELECT orders.status, orders.total, orders.currency, customers.phone
FROM orders JOIN customers ON customers.id = orders.customer_id
WHERE orders.id = '{ID_PREFIX}:m'::uuid FOR SHARE OF orders \\gset o_
WITH written AS (INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount,
  currency, payer_phone, provider, status, lease_expires_at, created_at, updated_at)
  VALUES (gen_random_uuid(), '{ID_PREFIX}:m'::uuid, 'bench-:n', '{"0f" * 32}', :o_total,
  ':o_currency', ':o_phone', 'simulator', 'initiated', now() + interval '{LEASE_SECONDS} s',
  now(), now())
  ON CONFLICT DO NOTHING RETURNING {PAYMENT_COLUMNS}),
event AS (INSERT INTO order_events (order_id, at, event, detail)
  SELECT written.order_id, now(), 'payment_initiated',
  'payment ' || written.id || ' for 25.00 GHS from +233*****4567 via simulator' FROM written)
SELECT {WRITTEN_COLUMNS} FROM written \\gset p_
COMMIT;
BEGIN;
WITH written AS (UPDATE payments SET provider_reference = ':p_id', status = 'pending',
  failure_reason = NULL, lease_expires_at = NULL, updated_at = now()
  WHERE payments.id = ':p_id'::uuid AND payments.status = 'initiated'
  RETURNING {PAYMENT_COLUMNS}),
event AS (INSERT INTO order_events (order_id, at, event, detail)
  SELECT written.order_id, now(), 'payment_pending', 'payment :p_id accepted by simulator'
  FROM written)
SELECT {WRITTEN_COLUMNS} FROM written;
COMMIT;
"""


@dataclass(frozen=True, slots=True)
class Block:
    """Order numbers first .. first + clients * per_client - 1, per_client for each client."""

    first: int
    clients: int
    per_client: int

    @property
    def size(self) -> int:
        return self.clients * self.per_client

    def share(self, client: int) -> range:
        start = self.first + client * self.per_client
        return range(start, start + self.per_client)


class Allocator:
    """Hands out consecutive blocks of order numbers, so that no order is charged twice."""

    def __init__(self) -> None:
        self.next = 1

    def block(self, clients: int, per_client: int) -> Block:
        block = Block(self.next, clients, per_client)
        self.next += block.size
        return block

    @property
    def total(self) -> int:
        return self.next - 1


@dataclass(frozen=True, slots=True)
class Pair:
    """One pgbench run and the service run next to it, each on its own orders."""

    pgbench: Block
    warmup: Block
    service: Block


# --- set-up and checks ------------------------------------------------------------------


def create_orders(url: str, count: int) -> None:
    """One customer and one product through the service layer, then `count` orders in bulk
    SQL shaped like create_order's (order, one item, an order_created order event)."""
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
            params = {
                "count": count,
                "prefix": ID_PREFIX,
                "offset": ID_OFFSET,
                "customer": customer.id,
                "product": product.id,
                "quantity": QUANTITY,
                "price": PRICE_MINOR,
                "total": PRICE_MINOR * QUANTITY,
                "currency": CURRENCY,
            }
            conn.execute(
                text(
                    "INSERT INTO orders (id, customer_id, status, currency, total, created_at,"
                    " updated_at) SELECT (:prefix || (:offset + n))::uuid, :customer, 'pending',"
                    " :currency, :total, now(), now() FROM generate_series(1, :count) AS n"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                    " SELECT id, :product, :quantity, :price FROM orders ORDER BY id"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO order_events (order_id, at, event, detail) SELECT id,"
                    " created_at, 'order_created', '2 items, total 25.00 GHS' FROM orders"
                    " ORDER BY id"
                )
            )
        vacuum(db)
    finally:
        db.dispose()


def check_orders(url: str, expected: int) -> bool:
    """Every order has exactly one payment, `pending`, and three order events."""
    db = Database(url)
    try:
        with db.transaction() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*),"
                    " count(*) FILTER (WHERE p.total = 1 AND p.pending = 1 AND e.total = 3),"
                    " coalesce(sum(p.total), 0)"
                    " FROM orders AS o"
                    " LEFT JOIN (SELECT order_id, count(*) AS total,"
                    "  count(*) FILTER (WHERE status = 'pending') AS pending"
                    "  FROM payments GROUP BY order_id) AS p ON p.order_id = o.id"
                    " LEFT JOIN (SELECT order_id, count(*) AS total FROM order_events"
                    "  GROUP BY order_id) AS e ON e.order_id = o.id"
                )
            ).one()
    finally:
        db.dispose()
    orders, good, payments = (int(value) for value in row)
    ok = orders == expected and good == expected and payments == expected
    verdict = "ok" if ok else "WRONG"
    say(
        f"check: {good} of {orders} orders (expected {expected}) have exactly one pending "
        f"payment and 3 order events; {payments} payments in all: {verdict}"
    )
    return ok


# --- the service layer ------------------------------------------------------------------


def _charge_all(db: Database, provider: SimulatorProvider, numbers: Sequence[int]) -> None:
    for n in numbers:
        charge_order(
            db,
            provider,
            order_id=order_id(n),
            key=charge_key(n),
            default_region=DEFAULT_REGION,
            lease_seconds=LEASE_SECONDS,
        )


def _worker(
    url: str, warmup: range, share: range, barrier: Barrier, results: Pipe, profile: bool
) -> None:
    """One forked process: its own Database and provider, warm up, wait, charge, report."""
    try:
        db = Database(url)
        provider = SimulatorProvider()
        _charge_all(db, provider, warmup)
        barrier.wait(BARRIER_TIMEOUT_SECONDS)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        _charge_all(db, provider, share)
        finished = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        if profiler is not None:
            profiler.disable()
            report = io.StringIO()
            stats = pstats.Stats(profiler, stream=report).strip_dirs()
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
            note(report.getvalue())
        db.dispose()
        results.send(("done", finished))
    except threading.BrokenBarrierError:
        results.send(("error", "barrier broken: another worker failed, or the start timed out"))
    except BaseException as error:
        barrier.abort()
        results.send(("error", f"{type(error).__name__}: {error}"))
        raise
    finally:
        results.close()


def run_service(url: str, warmup: Block, service: Block, *, profile: bool = False) -> float:
    """Charges per second of `service.clients` forked workers; the clock starts when the
    barrier releases them and stops when the last one finishes."""
    context = mp.get_context("fork")
    barrier = context.Barrier(service.clients + 1)
    pipes = []
    processes = []
    for client in range(service.clients):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker,
            args=(url, warmup.share(client), service.share(client), barrier, sender, profile),
        )
        process.start()
        sender.close()
        pipes.append(receiver)
        processes.append(process)
    started = 0.0
    try:
        barrier.wait(BARRIER_TIMEOUT_SECONDS)
        started = time.perf_counter()
    except threading.BrokenBarrierError:
        pass  # a worker failed before the start (or timed out); its report says why
    outcomes: list[tuple[str, float | str]] = []
    for pipe in pipes:
        try:
            outcomes.append(pipe.recv())
        except EOFError:
            outcomes.append(("error", "a worker exited without reporting"))
    for process in processes:
        process.join()
    errors = [str(value) for status, value in outcomes if status != "done"]
    errors += [f"worker exit code {p.exitcode}" for p in processes if p.exitcode != 0]
    if errors or not started:
        raise RuntimeError("service run failed: " + "; ".join(errors or ["barrier broken"]))
    finished = max(float(value) for _, value in outcomes)
    return service.size / (finished - started)


# --- pgbench ----------------------------------------------------------------------------


def run_pgbench(url: str, script: Path, block: Block) -> float:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench not found on PATH")
    command = [
        pgbench,
        "--no-vacuum",
        "--protocol=simple",
        "--file",
        str(script),
        "--client",
        str(block.clients),
        "--jobs",
        str(min(block.clients, 2)),
        "--transactions",
        str(block.per_client),
        "--define",
        "i=0",
        "--define",
        f"first={block.first}",
        "--define",
        f"per_client={block.per_client}",
    ]
    completed = subprocess.run(
        command, env=libpq_env(url), capture_output=True, text=True, check=False
    )
    output = completed.stdout + completed.stderr
    processed = f"number of transactions actually processed: {block.size}/{block.size}"
    if completed.returncode != 0 or processed not in output:
        raise RuntimeError(f"pgbench failed (exit {completed.returncode}):\n{output}")
    return pgbench_tps(output)


# --- --help start-up --------------------------------------------------------------------


def measure_help() -> str:
    help_ms = median_wall_ms([console_script("orderpay"), "--help"], runs=HELP_RUNS)
    bare_ms = median_wall_ms([sys.executable, "-c", "pass"], runs=HELP_RUNS)
    return (
        f"orderpay --help: {help_ms:.0f} ms; python -c pass: {bare_ms:.0f} ms; "
        f"overhead {help_ms - bare_ms:.0f} ms (goal < {GOAL_HELP_OVERHEAD_MS:.0f} ms)"
    )


# --- main -------------------------------------------------------------------------------


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def parse_workers(raw: str) -> list[int]:
    try:
        counts = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {raw!r}"
        ) from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("worker counts must be positive integers")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Charges per second through the service layer next to pgbench.",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=DEFAULT_ORDERS,
        help=f"charges in each measured run, split evenly between workers "
        f"(default {DEFAULT_ORDERS})",
    )
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=parse_workers(DEFAULT_WORKERS),
        help=f"comma-separated worker (and pgbench client) counts (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_BASE_URL,
        help="server to create the throwaway database on (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="CHARGES",
        help="after the runs, cProfile this many charges in one worker (report on stderr)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each pgbench/service pair this many times, interleaved; report medians",
    )
    parser.add_argument("--skip-help", action="store_true", help="don't time orderpay --help")
    args = parser.parse_args(argv)
    if args.orders < max(args.workers):
        parser.error("--orders must be at least the largest worker count")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    allocator = Allocator()
    plans = {
        workers: [
            Pair(
                pgbench=allocator.block(workers, args.orders // workers),
                warmup=allocator.block(workers, WARMUP_CHARGES),
                service=allocator.block(workers, args.orders // workers),
            )
            for _ in range(args.repeat)
        ]
        for workers in args.workers
    }
    profile = (
        (allocator.block(1, WARMUP_CHARGES), allocator.block(1, args.profile))
        if args.profile
        else None
    )

    with throwaway_database(args.database_url) as url, tempfile.TemporaryDirectory() as tmp:
        note(f"creating {allocator.total} orders in {url.rsplit('/', 1)[-1]} ...")
        create_orders(url, allocator.total)
        script = Path(tmp) / "charge.sql"
        script.write_text(PGBENCH_SCRIPT)
        for workers, pairs in plans.items():
            tps_runs: list[float] = []
            rate_runs: list[float] = []
            for pair in pairs:
                note(f"pgbench, {plural(workers, 'client')} ...")
                tps_runs.append(run_pgbench(url, script, pair.pgbench))
                note(f"service, {plural(workers, 'worker')} ...")
                rate_runs.append(run_service(url, pair.warmup, pair.service))
                note(f"  {rate_runs[-1]:.0f} charges/s next to {tps_runs[-1]:.0f} tps")
            tps, rate = statistics.median(tps_runs), statistics.median(rate_runs)
            goal = f"; goal >= {GOAL_RATIO}" if workers == GOAL_WORKERS else ""
            say(
                f"charge service {plural(workers, 'worker')}: {rate:.0f} charges/s "
                f"(pgbench {plural(workers, 'client')}: {tps:.0f} tps; "
                f"ratio {ratio(rate, tps):.2f}{goal})"
            )
        if profile is not None:
            note(f"profiling {args.profile} charges in one worker ...")
            run_service(url, *profile, profile=True)
        ok = check_orders(url, allocator.total)
    if not args.skip_help:
        note("timing orderpay --help ...")
        say(measure_help())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
