"""Helpers shared by the bench scripts: throwaway Postgres databases, timing, printing.

Import it from a script in this directory (`from _common import ...`): running
`python bench/<script>.py` puts bench/ first on sys.path.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, NullPool, create_engine
from sqlalchemy.engine import URL, make_url

DEFAULT_BASE_URL = "postgresql+psycopg2://root@127.0.0.1:5432/root"
DATABASE_PREFIX = "orderpay_bench"


def admin_execute(base_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse to run in one)."""
    engine = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def libpq_kwargs(url: URL) -> dict[str, str | int]:
    kwargs: dict[str, str | int] = {"host": url.host or "127.0.0.1", "port": url.port or 5432}
    if url.username:
        kwargs["user"] = url.username
    if url.password:
        kwargs["password"] = url.password
    if url.database:
        kwargs["dbname"] = url.database
    return kwargs


def libpq_env(url: str) -> dict[str, str]:
    """The environment that points libpq tools (pgbench, psql) at the database of `url`."""
    kwargs = libpq_kwargs(make_url(url))
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
    }
    env = dict(os.environ)
    env.update({names[key]: str(value) for key, value in kwargs.items()})
    return env


def url_for(base_url: str, database: str) -> str:
    return make_url(base_url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def throwaway_database(base_url: str = DEFAULT_BASE_URL, *, migrate: bool = True) -> Iterator[str]:
    """Create `orderpay_bench_<hex>` on the server of `base_url`, yield its URL, drop it.

    The database is dropped even when the body raises (WITH (FORCE) ends leftover sessions).
    With `migrate`, the schema is brought to head through orderpay.store.migrate.upgrade.
    """
    name = f"{DATABASE_PREFIX}_{uuid.uuid4().hex[:12]}"
    admin_execute(base_url, f"CREATE DATABASE {name}")
    url = url_for(base_url, name)
    try:
        if migrate:
            from orderpay.store.db import Database
            from orderpay.store.migrate import upgrade

            database = Database(url)
            try:
                upgrade(database)
            finally:
                database.dispose()
        yield url
    finally:
        admin_execute(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def console_script(name: str) -> Path:
    """A console script installed next to the running interpreter (same virtualenv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} not found: is the package installed in this environment?")
    return path


def wall_times_ms(argv: Sequence[str | Path], *, runs: int, warmup: int = 2) -> list[float]:
    """Wall time of each of `runs` executions of argv (after `warmup` untimed ones), in ms.

    Bytecode may be written (PYTHONDONTWRITEBYTECODE is dropped), so the warm-up leaves what
    `pip install` leaves: compiled modules, not source compiled again on every start.
    """
    command = [str(part) for part in argv]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(warmup):
        subprocess.run(command, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append((time.perf_counter() - start) * 1000)
    return times


def median_wall_ms(argv: Sequence[str | Path], *, runs: int = 20, warmup: int = 2) -> float:
    return statistics.median(wall_times_ms(argv, runs=runs, warmup=warmup))


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def pgbench_tps(output: str) -> float:
    """The tps pgbench reports, excluding the time spent opening connections."""
    match = _TPS.search(output)
    if match is None:
        raise RuntimeError(f"no tps line in pgbench output:\n{output}")
    return float(match.group(1))


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling else float("nan")


def say(line: str) -> None:
    print(line, flush=True)


def note(line: str) -> None:
    """Progress that is not a result: to stderr, so stdout holds only the figures."""
    print(line, file=sys.stderr, flush=True)


def a_customer_and_product(
    conn: Connection, *, phone: str, region: str, price_minor: int, currency: str
) -> tuple[Any, Any]:
    """The one customer and one product a bench's bulk orders refer to, made by the service."""
    from orderpay.shop.customers import create_customer
    from orderpay.shop.products import create_product

    customer = create_customer(
        conn, name="Bench Customer", phone=phone, email=None, default_region=region
    )
    product = create_product(
        conn, name="Kenkey", price=f"{price_minor / 100:.2f}", currency=currency
    )
    return customer, product


def vacuum(db: Any, *, checkpoint: bool = False) -> None:
    """VACUUM ANALYZE the database of `db` (and CHECKPOINT), so each timed run starts alike."""
    with db.engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        auto.exec_driver_sql("VACUUM ANALYZE")
        if checkpoint:
            try:
                auto.exec_driver_sql("CHECKPOINT")
            except Exception as error:  # not allowed for this role: the run is only noisier
                note(f"CHECKPOINT refused ({type(error).__name__}); continuing")


def payment_columns() -> str:
    """The payment columns the service selects and returns, as its SQL names them."""
    from orderpay.store.payments import COLUMNS

    return ", ".join(str(column) for column in COLUMNS)
