"""Engines, transactions and the schema-version check.

Entrypoints build one `Database` per process from configuration and open transactions with
`db.transaction()`; services receive the connection and never commit on their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from sqlalchemy import Column, Connection, Engine, Table, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Executable

from orderpay.errors import DatabaseUnavailable, SchemaOutOfDate

# Alembic revisions in order, oldest first. Kept here so that checking the schema does not
# import Alembic (half a second) on every command; a test keeps it equal to the migrations.
SCHEMA_REVISIONS: tuple[str, ...] = ("0001_initial",)
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]

# How long SQLite waits for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 15_000

UPGRADE_HINT = "run `orderpay db upgrade`"


class Transactional(Protocol):
    """What services that run several transactions (charges, deliveries) are given."""

    def transaction(self) -> AbstractContextManager[Connection]: ...


class InsertIgnoring:
    """`INSERT ... ON CONFLICT (...) DO NOTHING [RETURNING ...]`, built once per dialect.

    Hot paths execute prebuilt statements with parameters: building a statement costs more
    than running it. The columns inserted are the keys of the parameters given.
    """

    def __init__(self, table: Table, conflict: list[str] | None, *returning: Column[Any]) -> None:
        self._by_dialect: dict[str, Executable] = {}
        for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite)):
            statement = dialect.insert(table).on_conflict_do_nothing(index_elements=conflict)
            self._by_dialect[name] = statement.returning(*returning) if returning else statement

    def __call__(self, conn: Connection) -> Executable:
        return self._by_dialect[conn.dialect.name]


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock up front: a deferred transaction that reads, then writes, can
        # fail with "database is locked" no matter how long it waits.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **options: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **options)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per transaction. A connection that died (a database
    # restart) fails one transaction with DatabaseUnavailable, and SQLAlchemy then discards
    # the whole pool; the next transaction reconnects.
    options.setdefault("pool_recycle", 1800)
    options.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(parsed, **options)


class Database:
    """One engine plus the rules for using it; made by entrypoints, never at import time."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_options)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on exit, rolled back on error."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            raise DatabaseUnavailable(
                f"database unavailable: {_first_line(error)}; retry later"
            ) from error

    def current_revision(self) -> str | None:
        if self._sqlite_file_missing():
            return None  # don't create an empty database file just to look inside it
        with self.transaction() as connection:
            return current_revision(connection)

    def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is at this code's schema head."""
        revision = self.current_revision()
        if revision == SCHEMA_HEAD:
            return
        if revision is None:
            raise SchemaOutOfDate(f"the database has no orderpay schema; {UPGRADE_HINT}")
        if revision in SCHEMA_REVISIONS:
            raise SchemaOutOfDate(
                f"the database schema is behind ({revision}, code needs {SCHEMA_HEAD}); "
                f"{UPGRADE_HINT}"
            )
        raise SchemaOutOfDate(
            f"the database schema ({revision}) is newer than this orderpay; upgrade orderpay"
        )

    def _sqlite_file_missing(self) -> bool:
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return False
        return not os.path.exists(str(url.database))

    def dispose(self) -> None:
        self.engine.dispose()


def current_revision(connection: Connection) -> str | None:
    if not connection.dialect.has_table(connection, "alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__
