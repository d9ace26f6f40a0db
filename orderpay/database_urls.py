"""Database URLs: the forms orderpay accepts, and the driver it connects with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderpay.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

URL_FORMS = (
    "postgresql://USER:PASSWORD@HOST:PORT/DB (or postgres://, postgresql+psycopg2://) "
    "or sqlite:///PATH"
)
# Spellings of the drivers `pip install .` installs; bare `postgresql://` means psycopg 3 to
# SQLAlchemy 2.1, which orderpay does not install, so it is pinned to psycopg2 here.
POSTGRES_NAMES = frozenset({"postgres", "postgresql", "postgresql+psycopg2"})
SQLITE_NAMES = frozenset({"sqlite", "sqlite+pysqlite"})


def database_url(url: str | URL) -> URL:
    """The URL orderpay connects with, or ConfigurationError naming the forms that work.

    The URL itself is never echoed: it may carry a password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"the database URL does not parse; write {URL_FORMS}") from None
    name = parsed.drivername
    if name in POSTGRES_NAMES:
        return parsed.set(drivername="postgresql+psycopg2")
    if name in SQLITE_NAMES:
        return parsed
    backend, _, driver = name.partition("+")
    if backend in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"the database URL asks for the {driver!r} driver, which orderpay does not install "
            f"(it uses psycopg2); write {URL_FORMS}"
        )
    raise ConfigurationError(
        f"the database URL names {backend!r}, which orderpay does not support; write {URL_FORMS}"
    )
