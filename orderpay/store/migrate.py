"""Schema migrations: Alembic driven from code, with the scripts shipped in the package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

    from orderpay.store.db import Database


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "orderpay.store:migrations")
    return config


def upgrade(database: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the schema; returns the revisions before and after."""
    from alembic import command

    before = database.current_revision()
    config = alembic_config()
    with migrating(database) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return before, database.current_revision()


def downgrade(database: Database, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with migrating(database) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@contextmanager
def migrating(database: Database) -> Iterator[Connection]:
    """One transaction for the migrations. On SQLite, foreign keys are off meanwhile: batch
    mode rebuilds a table (create a copy, drop the old one, rename), and dropping a table that
    other rows refer to fails while they are on, even though the copy takes its place. This is
    SQLite's own procedure for altering a table: off outside the transaction (the pragma does
    nothing inside one), then `PRAGMA foreign_key_check` before the commit, then on again."""
    sqlite = database.engine.url.get_backend_name() == "sqlite"
    with database.translating(), database.engine.connect() as connection:
        if not sqlite:
            with connection.begin():
                yield connection
            return
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys = OFF")  # outside any transaction: not yet begun
        try:
            with connection.begin():
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys = ON")


def script_revisions() -> list[str]:
    """Every revision the shipped scripts define, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]
