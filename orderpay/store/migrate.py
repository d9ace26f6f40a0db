"""Schema migrations: Alembic driven from code, with the scripts shipped in the package."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

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
    with database.transaction() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return before, database.current_revision()


def downgrade(database: Database, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with database.transaction() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def script_revisions() -> list[str]:
    """Every revision the shipped scripts define, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]
