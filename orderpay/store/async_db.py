"""asyncpg for the signed-callback route's batches: a pool per listener worker.

Everything else (the CLI, the other routes, the jobs, SQLite) uses the synchronous SQLAlchemy
+ psycopg2 engine of store/db.py. A batch of callbacks is two statements in autocommit
(payments/callback_batches.py), so it runs on the event loop with no thread-pool hop, each
prepared once per connection (asyncpg's statement cache). The statements are the same
SQLAlchemy constructs the rest uses, compiled for asyncpg (`Statement`).

Nothing connects at import time, and asyncpg itself is imported only when a pool is made.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from orderpay.database_urls import database_url
from orderpay.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    DatabaseInaccessible,
    DatabaseUnavailable,
    OrderpayError,
)
from orderpay.store.db import (
    POSTGRES_LOGIN_REFUSALS,
    POSTGRES_NO_WRITE,
    POSTGRES_RETRYABLE,
    PUBLIC_UNAVAILABLE,
    SESSION_GUARDS,
    describe,
)
from orderpay.store.outages import database_outage

if TYPE_CHECKING:
    import asyncpg

# The defaults; the listener sizes its pool to the batches it keeps in flight.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 16
CONNECT_TIMEOUT_S = 5.0  # as store/db.py's psycopg2 connect_timeout
# SQLSTATE classes of a server that cannot serve us now (psycopg2 raises OperationalError for
# them, which store/db.py translates to DatabaseUnavailable): 08 connection, 53 resources,
# 55 object state (lock_timeout), 57 operator intervention (statement_timeout, shutdown),
# 58 system error.
UNAVAILABLE_CLASSES = ("08", "53", "55", "57", "58")
# Login refusals (psycopg2 reports these without a SQLSTATE; store/db.py matches their text):
# a wrong password or role, a missing database.
LOGIN_REFUSED = {"28000", "28P01", "3D000"}


def asyncpg_dsn(url: str | URL) -> str:
    """The libpq-style URL asyncpg takes, from any Postgres URL orderpay accepts
    (postgresql://, postgres://, postgresql+psycopg2://); ConfigurationError otherwise."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError("the callback route's asyncpg pool needs a Postgres URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Released connections are not reset: nothing here changes session state (the guards are
    start-up settings, statements run in autocommit), and asyncpg's default reset (RESET ALL,
    UNLISTEN, advisory locks...) would be a round trip per callback. asyncpg still rolls back
    a connection released inside a transaction."""


async def create_pool(
    url: str | URL,
    *,
    min_size: int = POOL_MIN_SIZE,
    max_size: int = POOL_MAX_SIZE,
    statement_cache_size: int = 100,
    **options: Any,
) -> asyncpg.Pool:
    """One listener worker's pool (make it in the worker's event loop, at start-up; close it
    at shutdown). Its sessions get store/db.py's SESSION_GUARDS, as the synchronous
    listener's do, set at connection start-up: no round trip per statement."""
    import asyncpg

    _quiet_pool_reconnects(describe(database_url(url)))
    # asyncpg's Python API has no annotations (mypy follows it untyped: pyproject.toml).
    pool: asyncpg.Pool = await asyncpg.create_pool(  # type: ignore[no-untyped-call]
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=statement_cache_size,
        timeout=CONNECT_TIMEOUT_S,
        server_settings=dict(SESSION_GUARDS),
        reset=_keep_session,
        **options,
    )
    return pool


class _PoolOutage(logging.Filter):
    """asyncpg's pool logs a WARNING with a traceback at every failed try to reconnect its
    idle connections while the server is away: that is the outage store.outages says once."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        translated = translate(error, self.label) if error is not None else None
        if not isinstance(translated, DatabaseUnavailable):
            return True
        database_outage().failed(f"the callback pool cannot reconnect: {translated.message}")
        return False


def _quiet_pool_reconnects(label: str) -> None:
    """`label`: the database as the operator knows it (store.db.describe)."""
    pool_log = logging.getLogger("asyncpg.pool")
    for existing in pool_log.filters:
        if isinstance(existing, _PoolOutage):
            existing.label = label
            return
    pool_log.addFilter(_PoolOutage(label))


class Statement:
    """A SQLAlchemy statement compiled once for asyncpg: its SQL with $n parameters, and the
    arguments in their order from named values (constants the statement holds included)."""

    def __init__(self, statement: Any) -> None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        compiled = statement.compile(dialect=dialect())  # type: ignore[no-untyped-call]
        self.sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # The statement's own constants (literals), bound once; the rest, each call's values.
        binds = {name: compiled.binds[name] for name in self._names}
        self._given = frozenset(name for name, bind in binds.items() if bind.required)
        self._constants = {
            name: bind.effective_value for name, bind in binds.items() if not bind.required
        }

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        missing = self._given - values.keys()
        if missing:
            raise KeyError(f"no value for {', '.join(sorted(missing))}")
        constants = self._constants
        return [values[n] if n in self._given else constants[n] for n in self._names]


def sqlstate(error: BaseException) -> str | None:
    """The Postgres SQLSTATE of an asyncpg error, if the server sent one."""
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def translate(error: BaseException, label: str) -> OrderpayError | None:
    """The OrderpayError an asyncpg (or connection) error means, as store/db.py's
    Database.translate says it for psycopg2; None for a bug. `label`: the database as the
    operator knows it (Database.label)."""
    state = sqlstate(error)
    detail = _first_line(error)
    if state in POSTGRES_RETRYABLE:
        return ConcurrentUpdate(
            f"{POSTGRES_RETRYABLE[state]} on {label}; retry",
            public_message="a concurrent update got in the way; retry",
        )
    if state in POSTGRES_NO_WRITE:
        return DatabaseInaccessible(
            f"{label}: the session {POSTGRES_NO_WRITE[state]} ({detail}); "
            "grant the database user what it needs, or point DATABASE_URL at the primary"
        )
    if state in LOGIN_REFUSED or (
        state is None and any(hint in detail for hint in POSTGRES_LOGIN_REFUSALS)
    ):
        return DatabaseInaccessible(f"cannot log in to {label}: {detail}; check DATABASE_URL")
    if _unavailable(error, state):
        return DatabaseUnavailable(
            f"database {label} is unavailable: {detail}; retry later",
            public_message=PUBLIC_UNAVAILABLE,
        )
    return None


def _unavailable(error: BaseException, state: str | None) -> bool:
    if state is not None:
        return state[:2] in UNAVAILABLE_CLASSES
    if isinstance(error, OSError | asyncio.TimeoutError):  # refused, reset, timed out
        return True
    from asyncpg.exceptions import InterfaceError, PostgresConnectionError

    # The connection was lost or closed under the statement (InterfaceError: asyncpg's own
    # state, e.g. a pool closing); psycopg2's counterparts are Operational/InterfaceError.
    return isinstance(error, InterfaceError | PostgresConnectionError)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
