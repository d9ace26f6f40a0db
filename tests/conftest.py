"""Shared fixtures: real Postgres databases (one per test, cloned from a migrated template),
migrated SQLite files, and a CLI runner that reads configuration like a user's shell would.

Postgres is at ORDERPAY_TEST_POSTGRES (default: the CI machine's trust-auth server).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from orderpay import clock
from orderpay.cli import app
from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from orderpay.store.schema import metadata
from tests.fake_mtn import FakeMtn
from tests.live_server import TestClient, listener_client, listener_settings

POSTGRES = os.environ.get(
    "ORDERPAY_TEST_POSTGRES", "postgresql+psycopg2://root@127.0.0.1:5432/root"
)
CONFIG_PREFIXES = ("ORDERPAY_", "MTN_MOMO_", "POSTGRES_")
CONFIG_NAMES = ("DATABASE_URL", "REDIS_URL", "MOMO_WEBHOOK_SECRET")


def _admin_execute(statement: str) -> None:
    url = make_url(POSTGRES)
    connection = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database
    )
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _url_for(name: str) -> str:
    return make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)


def create_postgres_database(template: str | None = None) -> str:
    name = f"orderpay_test_{uuid.uuid4().hex[:12]}"
    suffix = f" TEMPLATE {template}" if template else ""
    _admin_execute(f"CREATE DATABASE {name}{suffix}")
    return name


def drop_postgres_database(name: str) -> None:
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's configuration or `.env`, or a clock another test moved."""
    for name in list(os.environ):
        if name.startswith(CONFIG_PREFIXES) or name in CONFIG_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    clock.reset()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database that each test's database is cloned from (fast: no migrations)."""
    name = create_postgres_database()
    database = Database(_url_for(name))
    upgrade(database)
    database.dispose()
    yield name
    drop_postgres_database(name)


@pytest.fixture
def pg_url(postgres_template: str) -> Iterator[str]:
    name = create_postgres_database(template=postgres_template)
    yield _url_for(name)
    drop_postgres_database(name)


@pytest.fixture
def twins(postgres_template: str) -> Iterator[tuple[str, Callable[[], str]]]:
    """A database to set a case up in, and a way to clone it once it is set up."""
    names = [create_postgres_database(template=postgres_template)]

    def clone() -> str:
        names.append(create_postgres_database(template=names[0]))
        return _url_for(names[-1])

    yield _url_for(names[0]), clone
    for name in names:
        drop_postgres_database(name)


@pytest.fixture(scope="module")
def shared_url(postgres_template: str) -> Iterator[str]:
    """One Postgres database for a whole module, for tests that only compare row counts
    before and after what they do (cloning a database per test costs far more than such a
    test)."""
    name = create_postgres_database(template=postgres_template)
    yield _url_for(name)
    drop_postgres_database(name)


@pytest.fixture
def shared_db(shared_url: str) -> Iterator[Database]:
    database = Database(shared_url)
    yield database
    database.dispose()


@pytest.fixture
def shared_cli(shared_url: str) -> Cli:
    return Cli({"DATABASE_URL": shared_url})


@pytest.fixture
def emptied_shared_url(shared_url: str) -> str:
    """The module's database, emptied: a test starts from the bare migrated schema."""
    database = Database(shared_url)
    try:
        with database.transaction() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            tables = ", ".join(table.name for table in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        database.dispose()
    return shared_url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    name = create_postgres_database()
    yield _url_for(name)
    drop_postgres_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'orderpay.db'}"
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


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


class Cli:
    """Runs `orderpay` in-process with a given configuration, as a shell user would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, **env: str) -> Outcome:
        result = self.runner.invoke(
            app, list(args), env={**self.env, **env}, catch_exceptions=False
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


@pytest.fixture
def mtn(mtn_server: FakeMtn) -> FakeMtn:
    """The module's fake MTN, reset to a fresh state for this test."""
    mtn_server.reset()
    return mtn_server
