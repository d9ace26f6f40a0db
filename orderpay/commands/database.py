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


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Create the schema, or upgrade it to this version of orderpay. Safe to re-run.

    \b
    Example:
      DATABASE_URL=postgresql+psycopg2://root@127.0.0.1/shop orderpay db upgrade
    """
    from orderpay.migrate import upgrade

    database = runtime(ctx).raw_database
    before, after = upgrade(database)
    if json_:
        emit_json({"before": before, "after": after, "database": database.dialect})
    elif before == after:
        info(f"schema already at {after} ({database.dialect})")
    else:
        info(f"schema upgraded {before or '(empty)'} -> {after} ({database.dialect})")


@db_app.command("status")
def db_status(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Show the schema revision; exit 7 when the database is behind this version.

    \b
    Example:
      orderpay db status --json
    """
    from orderpay.db import SCHEMA_HEAD

    rt = runtime(ctx)
    current = rt.raw_database.current_revision()
    document = {"current": current, "head": SCHEMA_HEAD, "up_to_date": current == SCHEMA_HEAD}
    if json_:
        emit_json(document)
    else:
        typer.echo(f"current {current or '(none)'}, head {SCHEMA_HEAD}")
    rt.raw_database.check_schema()


@config_app.command("show")
def config_show(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Print every setting as orderpay sees it; secrets are masked.

    \b
    Example:
      orderpay config show --json
    """
    view = runtime(ctx).settings.public_view()
    if json_:
        emit_json(view)
    else:
        from orderpay.render import key_values

        key_values("Configuration", view)
