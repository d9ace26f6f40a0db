"""Callbacks and charge answers on the same orders: FOR UPDATE against FOR NO KEY UPDATE.

Run it from the repository root with the development virtualenv:

    python bench/order_locks.py                 # 8 hot orders, 16 clients, 10 s per run
    python bench/order_locks.py --orders 64 --seconds 20 --repeat 3

A settling transaction locks the order, then the payment, and changes the order's status; a
charge recording its provider's answer updates its payment and inserts an order event, whose
foreign key takes FOR KEY SHARE on the order. With the order locked FOR UPDATE the two wait
for each other in opposite orders, and Postgres breaks the deadlock after deadlock_timeout;
FOR NO KEY UPDATE (what orderpay takes: it never changes an order's key) does not conflict
with FOR KEY SHARE. pgbench runs the two transactions, half each, on a few hot orders of a
throwaway database holding only the three tables' columns that matter.

Each run prints, per lock mode: transactions per second, deadlocks (pg_stat_database) and
failed transactions; then the ratio of FOR UPDATE's rate to FOR NO KEY UPDATE's (the ceiling).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from _common import (
    DEFAULT_BASE_URL,
    libpq_env,
    note,
    pgbench_tps,
    ratio,
    say,
    throwaway_database,
)
from sqlalchemy import NullPool, create_engine, text

SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, updated_at timestamptz);
CREATE TABLE payments (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders (id),
                       status text NOT NULL, updated_at timestamptz);
CREATE TABLE order_events (id bigserial PRIMARY KEY, order_id int NOT NULL REFERENCES orders (id),
                           event text NOT NULL, at timestamptz NOT NULL);
INSERT INTO orders SELECT g, 'pending', now() FROM generate_series(1, {orders}) g;
INSERT INTO payments SELECT g, g, 'pending', now() FROM generate_series(1, {orders}) g;
"""
SETTLE = """\\set o random(1, {orders})
BEGIN;
SELECT o.id FROM orders o JOIN payments p ON p.order_id = o.id WHERE p.id = :o FOR {mode} OF o, p;
UPDATE payments SET status = 'pending', updated_at = now() WHERE id = :o;
UPDATE orders SET status = 'pending', updated_at = now() WHERE id = :o;
INSERT INTO order_events (order_id, event, at) VALUES (:o, 'payment_succeeded', now());
COMMIT;
"""
ANSWER = """\\set o random(1, {orders})
BEGIN;
UPDATE payments SET status = 'pending', updated_at = now() WHERE id = :o;
INSERT INTO order_events (order_id, event, at) VALUES (:o, 'payment_pending', now());
COMMIT;
"""
MODES = ("UPDATE", "NO KEY UPDATE")
_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)


def deadlocks(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def run(url: str, folder: Path, mode: str, args: argparse.Namespace) -> tuple[float, int, int]:
    settle, answer = folder / "settle.sql", folder / "answer.sql"
    settle.write_text(SETTLE.format(orders=args.orders, mode=mode), encoding="utf-8")
    answer.write_text(ANSWER.format(orders=args.orders), encoding="utf-8")
    before = deadlocks(url)
    command = ["pgbench", "-n", "-c", str(args.clients), "-j", "2", "-T", str(args.seconds)]
    command += ["-f", f"{settle}@1", "-f", f"{answer}@1"]
    done = subprocess.run(command, env=libpq_env(url), capture_output=True, text=True, check=True)
    failed = _FAILED.search(done.stdout)
    return pgbench_tps(done.stdout), deadlocks(url) - before, int(failed.group(1)) if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_BASE_URL)
    parser.add_argument("--orders", type=int, default=8, help="hot orders (default 8)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds of both modes")
    args = parser.parse_args()
    with throwaway_database(args.database_url, migrate=False) as url:
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(SCHEMA.format(orders=args.orders))
        engine.dispose()
        with tempfile.TemporaryDirectory() as folder:
            for round_ in range(1, args.repeat + 1):
                rates = {}
                for mode in MODES:
                    note(f"round {round_}: FOR {mode}, {args.clients} clients, {args.seconds} s")
                    tps, dead, failed = run(url, Path(folder), mode, args)
                    rates[mode] = tps
                    say(
                        f"FOR {mode:<13} {args.orders} orders {args.clients} clients: "
                        f"{tps:8.0f} tps, {dead} deadlocks, {failed} failed"
                    )
                say(
                    "FOR UPDATE / FOR NO KEY UPDATE: "
                    f"{ratio(rates['UPDATE'], rates['NO KEY UPDATE']):.3f}x"
                )


if __name__ == "__main__":
    main()
