"""Shared fixtures: real Postgres databases (a per-process pool of migrated databases, emptied
between tests), migrated SQLite files (copies of one migrated file), and a CLI runner that
reads configuration like a user's shell would.

The servers are ORDERPAY_TEST_POSTGRES and ORDERPAY_TEST_REDIS, or the suite's own
(tests/services.py: started once per run by the controlling process).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg2
import pytest
from click.testing import CliRunner
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from orderpay import clock
from orderpay.cli import app
from orderpay.commands.tree import lazy_command
from orderpay.store import outages
from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from orderpay.store.schema import metadata
from tests.fake_daraja import FakeDaraja
from tests.fake_mtn import FakeMtn
from tests.live_server import TestClient, listener_client, listener_settings
from tests.mpesa_harness import Kenya, kenya
from tests.services import POSTGRES_VARIABLE, REDIS_VARIABLE, Servers

CONFIG_PREFIXES = ("ORDERPAY_", "MTN_MOMO_", "MPESA_", "POSTGRES_")
CONFIG_NAMES = ("DATABASE_URL", "REDIS_URL", "MOMO_WEBHOOK_SECRET")
SERVERS = pytest.StashKey[Servers]()


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process (not an xdist worker) provides the servers for the whole run."""
    if not hasattr(config, "workerinput"):
        servers = Servers()
        servers.provide()
        config.stash[SERVERS] = servers


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers per CPU (most tests wait on a database, a socket or a child process),
    at most four: each holds connections, and a configured server may allow only 100."""
    return min(4, 2 * (os.cpu_count() or 1))


def pytest_unconfigure(config: pytest.Config) -> None:
    servers = config.stash.get(SERVERS, None)
    if servers is not None:
        servers.stop()


def postgres_url() -> str:
    """The test server's URL: its user may create and drop databases."""
    return os.environ[POSTGRES_VARIABLE]


def _admin_execute(statement: str) -> None:
    url = make_url(postgres_url())
    connection = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database
    )
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def url_for(name: str) -> str:
    return make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)


def create_postgres_database(template: str | None = None) -> str:
    name = f"orderpay_test_{uuid.uuid4().hex[:12]}"
    suffix = f" TEMPLATE {template}" if template else ""
    _admin_execute(f"CREATE DATABASE {name}{suffix}")
    return name


def drop_postgres_database(name: str) -> None:
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# What tells a pooled database's schema from the template's: a test that changed the schema
# (or left the alembic revision elsewhere) gets its database dropped instead of reused.
_SCHEMA_SIGNATURE = """
SELECT (SELECT string_agg(version_num, ',') FROM alembic_version),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'),
       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'),
       (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')
"""


# DELETE empties small tables in a millisecond, but each deleted parent row checks its
# children's tables, dead rows included: past a few thousand rows that grows with the square
# of the count, and TRUNCATE, whose cost does not grow, is the cheaper way to empty them.
LARGE_TABLE = 2000
_SIZES = "SELECT " + ", ".join(
    f"(SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {LARGE_TABLE}) AS rows)"
    for table in ("payments", "orders", "order_events", "notifications", "webhook_events")
)


class DatabasePool:
    """This process's migrated Postgres databases. A test takes one and gives it back; the
    next test to take it finds it emptied (other sessions ended, every row deleted, sequences
    restarted), which costs a millisecond where creating a database costs tens or hundreds.
    The template is migrated once per process; databases are cloned from it as needed. The
    pool keeps a connection to each of its databases for this housekeeping."""

    _END_SESSIONS = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid();"
    )
    _RESTART_SEQUENCES = (
        "SELECT count(setval(format('%I', sequencename)::regclass, 1, false)) "
        "FROM pg_sequences WHERE schemaname = 'public';"
    )

    def __init__(self) -> None:
        self._template: str | None = None
        self._signature: tuple[Any, ...] | None = None
        self._free: list[str] = []
        self._connections: dict[str, Any] = {}
        tables = [table.name for table in reversed(metadata.sorted_tables)]
        deletes = "".join(f"DELETE FROM {name};" for name in tables)
        self._delete = self._END_SESSIONS + deletes + self._RESTART_SEQUENCES
        truncate = f"TRUNCATE {', '.join(tables)} RESTART IDENTITY;"
        self._truncate = self._END_SESSIONS + truncate

    def template(self) -> str:
        if self._template is None:
            name = create_postgres_database()
            database = Database(url_for(name))
            try:
                upgrade(database)
            finally:
                database.dispose()
            self._template = name
            connection = _connect(name)
            try:
                self._signature = _signature(connection)
            finally:
                connection.close()
        return self._template

    def clone(self) -> str:
        """A new database with the migrated schema, not pooled: the caller drops it."""
        return create_postgres_database(template=self.template())

    def take(self) -> str:
        if self._free:
            name = self._free.pop()
            connection = self._connections[name]
            with connection.cursor() as cursor:
                cursor.execute(_SIZES)
                large = max(cursor.fetchone() or (0,)) >= LARGE_TABLE
                cursor.execute(self._truncate if large else self._delete)
            connection.commit()
            return name
        name = self.clone()
        self._connections[name] = _connect(name)
        return name

    def give_back(self, name: str) -> None:
        connection = self._connections[name]
        if _signature(connection) == self._signature:
            self._free.append(name)
            return
        del self._connections[name]
        connection.close()
        drop_postgres_database(name)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        for name in [*self._connections, *([self._template] if self._template else [])]:
            drop_postgres_database(name)
        self._connections.clear()
        self._free.clear()
        self._template = None


def _connect(name: str) -> Any:
    url = make_url(postgres_url())
    return psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username, dbname=name)


def _signature(connection: Any) -> tuple[Any, ...]:
    try:
        with connection.cursor() as cursor:
            cursor.execute(_SCHEMA_SIGNATURE)
            return tuple(cursor.fetchone() or ())
    finally:
        connection.rollback()  # no transaction left open between tests


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's configuration or `.env`, a clock another test moved, or an
    outage another test began (its WARNING is said once per process: store.outages)."""
    monkeypatch.setattr(outages, "_outages", {})
    for name in list(os.environ):
        if name in (POSTGRES_VARIABLE, REDIS_VARIABLE):
            continue  # the suite's servers, not orderpay's configuration
        if name.startswith(CONFIG_PREFIXES) or name in CONFIG_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    level = root.level  # a command run in-process (the worker) configures logging
    yield
    clock.reset()
    root.setLevel(level)


@pytest.fixture(scope="session")
def database_pool() -> Iterator[DatabasePool]:
    pool = DatabasePool()
    yield pool
    pool.close()


@pytest.fixture
def pg_url(database_pool: DatabasePool) -> Iterator[str]:
    """A migrated Postgres database with no rows, this test's alone."""
    name = database_pool.take()
    yield url_for(name)
    database_pool.give_back(name)


@pytest.fixture
def scratch_pg_url(database_pool: DatabasePool) -> Iterator[str]:
    """A migrated Postgres database that is dropped afterwards: for a test that changes the
    schema (a downgrade, say)."""
    name = database_pool.clone()
    yield url_for(name)
    drop_postgres_database(name)


@pytest.fixture
def second_pg_url(database_pool: DatabasePool) -> Iterator[str]:
    """Another migrated Postgres database with no rows, for a test that compares two."""
    name = database_pool.take()
    yield url_for(name)
    database_pool.give_back(name)


@pytest.fixture(scope="module")
def shared_url(database_pool: DatabasePool) -> Iterator[str]:
    """One Postgres database for a whole module, for a module whose tests share an expensive
    set-up and read it only."""
    name = database_pool.take()
    yield url_for(name)
    database_pool.give_back(name)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A Postgres database with no schema at all."""
    name = create_postgres_database()
    yield url_for(name)
    drop_postgres_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per process; tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "orderpay.db"
    database = Database(f"sqlite:///{path}")
    try:
        upgrade(database)
    finally:
        database.dispose()
    assert not path.with_name(path.name + "-wal").exists(), "the template was not checkpointed"
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "orderpay.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["postgres", "sqlite"])
def any_url(request: pytest.FixtureRequest) -> str:
    """Run the test on Postgres and on the embedded SQLite default."""
    fixture = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def client(pg_url: str) -> Iterator[TestClient]:
    """The listener in-process (Starlette's TestClient, lifespan run) on Postgres."""
    with listener_client(listener_settings(pg_url)) as in_process:
        yield in_process


@pytest.fixture
def sqlite_client(sqlite_url: str) -> Iterator[TestClient]:
    """The listener on the embedded default, for checks that are the same on every database."""
    with listener_client(listener_settings(sqlite_url)) as in_process:
        yield in_process


@pytest.fixture
def any_db(any_url: str) -> Iterator[Database]:
    database = Database(any_url)
    yield database
    database.dispose()


def count_rows(database: Database) -> dict[str, int]:
    """Rows per table: the "nothing changed" half of every bad-input test. Tables a database
    at an older revision does not have yet are left out."""
    with database.transaction() as conn:
        present = set(inspect(conn).get_table_names())
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
            if table.name in present
        }


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The JSON error document printed on stderr under --json."""
        return json.loads(self.stderr)["error"]  # type: ignore[no-any-return]


@functools.cache
def orderpay_command() -> click.Command:
    """The Click command `orderpay` runs (orderpay.cli.main's lazily built tree), made once:
    the subcommands it builds are kept for the next invocation."""
    return lazy_command(app)


class Cli:
    """Runs `orderpay` in-process with a given configuration, as a shell user would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, **env: str) -> Outcome:
        result = self.runner.invoke(
            orderpay_command(), list(args), env={**self.env, **env}, catch_exceptions=False
        )
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str, **env: str) -> Any:
        """Run a --json command that must succeed; return its document."""
        outcome = self(*args, "--json", **env)
        assert outcome.exit_code == 0, outcome.stderr
        return outcome.json()

    def items(self, *args: str, **env: str) -> Any:
        """Run a --json list command that must succeed; return its page's items."""
        page = self.ok(*args, **env)
        assert set(page) == {"items", "next"}, page
        return page["items"]


@pytest.fixture
def cli(pg_url: str) -> Cli:
    return Cli({"DATABASE_URL": pg_url})


@pytest.fixture
def any_cli(any_url: str) -> Cli:
    return Cli({"DATABASE_URL": any_url})


@pytest.fixture(scope="module")
def mtn_server() -> Iterator[FakeMtn]:
    """A fake of MTN's Collection API on loopback, shared by a module (stopping one is slow)."""
    with FakeMtn(currencies={"EUR"}) as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_daraja() -> Iterator[FakeDaraja]:
    """A fake of M-Pesa's Daraja API on loopback, shared by a module (each test resets it)."""
    with FakeDaraja() as fake:
        yield fake


@pytest.fixture
def place(db: Database, pg_url: str, fake_daraja: FakeDaraja) -> Iterator[Kenya]:
    """A Kenyan merchant: the fake Daraja, reset; orderpay's listener on its M-Pesa route; the
    M-Pesa provider a charging process builds (tests/mpesa_harness.py)."""
    fake_daraja.reset()
    with kenya(db, pg_url, fake_daraja) as ready:
        yield ready
    fake_daraja.wait_until_sent()  # nothing of this test reaches the next one's listener


@pytest.fixture
def mtn(mtn_server: FakeMtn) -> FakeMtn:
    """The module's fake MTN, reset to a fresh state for this test."""
    mtn_server.reset()
    return mtn_server
