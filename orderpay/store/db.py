"""Engines, transactions and the schema-version check.

Entrypoints build one `Database` per process from configuration and open transactions with
`db.transaction()`; services receive the connection and never commit on their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    exc,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql import Executable

from orderpay.database_urls import database_url
from orderpay.errors import (
    ConcurrentUpdate,
    DatabaseInaccessible,
    DatabaseUnavailable,
    OrderpayError,
    SchemaOutOfDate,
)

# Alembic revisions in order, oldest first. Kept here so that checking the schema does not
# import Alembic (slow to import) on every command; a test keeps it equal to the migrations.
SCHEMA_REVISIONS: tuple[str, ...] = (
    "0001_initial",
    "0002_ledger_integrity",
    "0003_price_positive",
    "0004_refunds_review",
    "0005_callback_in_one_trip",
    "0006_callbacks_in_batches",
    "0007_no_database_functions",
    "0008_catch_up",
    "0009_order_idempotency_keys",
    "0010_provider_references",
)
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]

# The execution option of a connection that only reads (Database.reading).
READ_ONLY = "orderpay_read_only"

# How long SQLite waits for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 15_000

UPGRADE_HINT = "run `orderpay db upgrade`"

# What the outside world is told when the database fails; the operator's log has the details.
PUBLIC_UNAVAILABLE = "database unavailable; retry later"
# Postgres errors that retrying never mends: a missing database or role, a refused login.
POSTGRES_LOGIN_REFUSALS = (
    "does not exist",
    "authentication failed",
    "pg_hba.conf",
    "permission denied",
    "no password supplied",
)
# SQLSTATEs of a connected session that may not write: no privilege, a read-only server.
POSTGRES_NO_WRITE = {"42501": "lacks a privilege it needs", "25006": "is read-only"}


def describe(url: URL) -> str:
    """The database as an operator should see it: password masked, SQLite paths absolute."""
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return "SQLite in memory"
        return f"SQLite file {Path(url.database).absolute()}"
    return url.render_as_string(hide_password=True)


def _no_directory(directory: Path) -> str:
    return (
        f"the directory {directory} does not exist: create it (mkdir -p {directory}) "
        "or point DATABASE_URL elsewhere"
    )


def sqlite_access_problem(path: Path) -> str | None:
    """What keeps this process from using a SQLite file, with what to do about it; or None."""
    path = path.absolute()
    directory = path.parent
    if not directory.is_dir():
        return _no_directory(directory)
    for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        if candidate.exists() and not os.access(candidate, os.R_OK | os.W_OK):
            return (
                f"{candidate} is read-only for this user: make it writable "
                f"(chmod u+rw {candidate}) or point DATABASE_URL at a copy you can write"
            )
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"the directory {directory} is not writable by this user, and SQLite keeps "
            f"{path.name} and its -wal and -shm files there: make it writable or point "
            "DATABASE_URL at a directory you can write"
        )
    return None


class Transactional(Protocol):
    """What services that run several transactions (charges, deliveries) are given."""

    def transaction(self) -> AbstractContextManager[Connection]: ...


# How many times a transaction that lost a race (a deadlock, a serialization failure, a row
# changed under a compare-and-set) is run again before the caller is told to retry.
TRANSACTION_ATTEMPTS = 3
# SQLSTATEs of a transaction Postgres aborted because of another one: running it again works.
POSTGRES_RETRYABLE = {"40P01": "deadlock detected", "40001": "serialization failure"}

T = TypeVar("T")


def retrying(db: Transactional, work: Callable[[Connection], T]) -> T:
    """`work(conn)` in one transaction, run again (a bounded number of times) when it lost a
    race to another transaction: a conflict is the service's to absorb, not the caller's."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            with db.transaction() as conn:
                return work(conn)
        except ConcurrentUpdate:
            if attempt == TRANSACTION_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class InsertIgnoring:
    """`INSERT ... ON CONFLICT (...) DO NOTHING [RETURNING ...]`, built once per dialect.

    Hot paths execute prebuilt statements with parameters: building a statement costs more
    than running it. The columns inserted are the keys of the parameters given.
    """

    def __init__(
        self,
        table: Table,
        conflict: list[str] | None,
        *returning: Column[Any],
        where: ColumnElement[bool] | None = None,
    ) -> None:
        """`where`: the predicate of the partial unique index that `conflict` names."""
        self._table, self._conflict, self._where = table, conflict, where
        self._returning = returning
        self._by_dialect: dict[str, Executable] = {}

    def __call__(self, conn: Connection) -> Executable:
        name = conn.dialect.name
        statement = self._by_dialect.get(name)
        if statement is None:
            # Built on first use, not at import: a process uses one dialect, and importing the
            # other (Postgres's loads its async driver's support) is start-up time for nothing.
            statement = self._by_dialect[name] = self._build(name)
        return statement

    def _build(self, name: str) -> Executable:
        if name == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect
        elif name == "sqlite":
            from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
        else:
            raise KeyError(name)
        statement = dialect.insert(self._table).on_conflict_do_nothing(
            index_elements=self._conflict, index_where=self._where
        )
        return statement.returning(*self._returning) if self._returning else statement


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
        # fail with "database is locked" no matter how long it waits. Only a transaction
        # that never writes (Database.reading) takes none: a long read holds no writer back.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# The long-running processes' Postgres sessions (listener, worker): a lock waited on too long
# fails the transaction rather than piling up requests behind it, a runaway statement ends, and
# a transaction abandoned mid-way (a hung process) gives its row locks back.
SESSION_GUARDS = {
    "lock_timeout": "5s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
}


def make_engine(url: str, *, session_guards: bool = False, **options: Any) -> Engine:
    parsed = make_url(url)
    # An error's message and log line never show a statement's parameters: they hold the
    # customers' phone numbers.
    options.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **options)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per transaction. A connection that died (a database
    # restart) fails one transaction with DatabaseUnavailable, and SQLAlchemy then discards
    # the whole pool; the next transaction reconnects.
    options.setdefault("pool_recycle", 1800)
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if session_guards:
        # Set at connection start-up (libpq options): no extra round trip per transaction.
        connect_args["options"] = " ".join(f"-c {k}={v}" for k, v in SESSION_GUARDS.items())
    options.setdefault("connect_args", connect_args)
    return create_engine(parsed, **options)


class Database:
    """One engine plus the rules for using it; made by entrypoints, never at import time."""

    def __init__(self, url: str | URL, **engine_options: Any) -> None:
        parsed = database_url(url)
        self.url = parsed.render_as_string(hide_password=False)
        # Named in every error, so an operator knows which database was opened.
        self.label = describe(parsed)
        self.engine = make_engine(self.url, **engine_options)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on exit, rolled back on error."""
        with self.translating(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A transaction that only reads (a long one: an export). On SQLite it takes no write
        lock, so writers go on meanwhile; elsewhere it is transaction()."""
        with self.translating(), self.engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                yield connection

    @contextmanager
    def translating(self) -> Iterator[None]:
        """Driver errors raised inside become the OrderpayError they mean (see translate)."""
        try:
            yield
        except (exc.DBAPIError, exc.TimeoutError) as error:
            translated = self.translate(error)
            if translated is None:
                raise
            raise translated from error

    def check_writable(self) -> None:
        """DatabaseInaccessible unless this process may write here: a write, rolled back."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            problem = sqlite_access_problem(Path(str(url.database)))
            if problem is not None:
                raise DatabaseInaccessible(f"cannot use {self.label}: {problem}")
        with self.translating(), self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
            finally:
                transaction.rollback()

    def translate(self, error: Exception) -> OrderpayError | None:
        """The OrderpayError a driver error means, naming this database; None for a bug."""
        detail = _first_line(error)
        if self.engine.url.get_backend_name() == "sqlite":
            if isinstance(error, exc.OperationalError) and _sqlite_access_error(detail):
                database = str(self.engine.url.database)
                problem = sqlite_access_problem(Path(database))
                if problem is not None:
                    return DatabaseInaccessible(f"cannot use {self.label}: {problem}")
            if "file is not a database" in detail:
                return DatabaseInaccessible(
                    f"cannot use {self.label}: it is not a SQLite database; point DATABASE_URL "
                    "at orderpay's database, or at a new file"
                )
        else:
            state = getattr(getattr(error, "orig", None), "pgcode", None)
            if state in POSTGRES_RETRYABLE:
                return ConcurrentUpdate(
                    f"{POSTGRES_RETRYABLE[state]} on {self.label}; retry",
                    public_message="a concurrent update got in the way; retry",
                )
            if state in POSTGRES_NO_WRITE:
                return DatabaseInaccessible(
                    f"{self.label}: the session {POSTGRES_NO_WRITE[state]} ({detail}); "
                    "grant the database user what it needs, or point DATABASE_URL at the primary"
                )
            if state is None and any(hint in detail for hint in POSTGRES_LOGIN_REFUSALS):
                return DatabaseInaccessible(
                    f"cannot log in to {self.label}: {detail}; check DATABASE_URL"
                )
        if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
            return DatabaseUnavailable(
                f"database {self.label} is unavailable: {detail}; retry later",
                public_message=PUBLIC_UNAVAILABLE,
            )
        return None

    def current_revision(self) -> str | None:
        if self._sqlite_file_missing():
            # Don't create an empty database file just to look inside it; but a directory
            # that is not there is worth saying at once, not after `db upgrade`.
            directory = Path(str(self.engine.url.database)).absolute().parent
            if not directory.is_dir():
                raise DatabaseInaccessible(f"cannot use {self.label}: {_no_directory(directory)}")
            return None
        with self.transaction() as connection:
            return current_revision(connection)

    def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is at this code's schema head."""
        revision = self.current_revision()
        if revision == SCHEMA_HEAD:
            return
        public = "the database schema is not current"
        if revision is None:
            raise SchemaOutOfDate(
                f"{self.label} has no orderpay schema; {UPGRADE_HINT}", public_message=public
            )
        if revision in SCHEMA_REVISIONS:
            raise SchemaOutOfDate(
                f"the schema of {self.label} is behind ({revision}, code needs {SCHEMA_HEAD}); "
                f"{UPGRADE_HINT}",
                public_message=public,
            )
        raise SchemaOutOfDate(
            f"the schema of {self.label} ({revision}) is newer than this orderpay; "
            "upgrade orderpay",
            public_message=public,
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


def _sqlite_access_error(detail: str) -> bool:
    return "readonly database" in detail or "unable to open database file" in detail


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__
