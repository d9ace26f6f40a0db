"""`orderpay db ...` and `orderpay config ...`."""

from __future__ import annotations

import typer

from orderpay.commands.common import JsonFlag, emit_json, info, runtime

db_app = typer.Typer(
    help="Create, upgrade and check the database schema.\n\n\b\nExamples:\n"
    "  orderpay db upgrade\n  orderpay db status --json",
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Show the configuration in effect.\n\n\b\nExample:\n  orderpay config show --json",
    rich_markup_mode=None,
)


@db_app.command("upgrade", short_help="Create or upgrade the schema.")
def db_upgrade(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Create the schema, or upgrade it to this version of orderpay. Safe to re-run.

    \b
    Example:
      DATABASE_URL=postgresql+psycopg2://root@127.0.0.1/shop orderpay db upgrade
    """
    from orderpay.store.migrate import upgrade

    database = runtime(ctx).raw_database
    before, after = upgrade(database)
    if json_:
        emit_json(
            {"before": before, "after": after, "database": database.dialect,
             "location": database.label}
        )  # fmt: skip
    elif before == after:
        info(f"schema already at {after} ({database.label})")
    else:
        info(f"schema upgraded {before or '(empty)'} -> {after} ({database.label})")


@db_app.command("status", short_help="Show the schema revision.")
def db_status(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Show the schema revision; exit 7 when the database is behind this version.

    \b
    Example:
      orderpay db status --json
    """
    from orderpay.store.db import SCHEMA_HEAD

    rt = runtime(ctx)
    current = rt.raw_database.current_revision()
    document = {
        "current": current, "head": SCHEMA_HEAD, "up_to_date": current == SCHEMA_HEAD,
        "location": rt.raw_database.label,
    }  # fmt: skip
    if json_:
        emit_json(document)
    else:
        typer.echo(f"current {current or '(none)'}, head {SCHEMA_HEAD} ({rt.raw_database.label})")
    rt.raw_database.check_schema()


@config_app.command("show", short_help="Show every setting and where it came from.")
def config_show(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Print every setting as orderpay sees it, and where its value came from.

    Sources: flag, environment, .env (in the working directory) or default. Secrets are
    masked, and URL passwords hidden.

    \b
    Example:
      orderpay config show --json
    """
    view = runtime(ctx).settings.public_view()
    if json_:
        emit_json(view)
    else:
        from orderpay.commands.render import settings_table

        settings_table(view)
