"""`orderpay db ...` and `orderpay config ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from orderpay.commands.common import JsonFlag, confirm, emit_json, info, runtime

db_app = typer.Typer(
    help="Upgrade and check the schema; mask old phone numbers.\n\n\b\nExamples:\n"
    "  orderpay db upgrade\n  orderpay db status --json\n  orderpay db prune --older-than 90d",
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
            {
                "before": before,
                "after": after,
                "database": database.dialect,
                "location": database.label,
            }
        )
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
        "current": current,
        "head": SCHEMA_HEAD,
        "up_to_date": current == SCHEMA_HEAD,
        "location": rt.raw_database.label,
    }
    if json_:
        emit_json(document)
    else:
        typer.echo(f"current {current or '(none)'}, head {SCHEMA_HEAD} ({rt.raw_database.label})")
    rt.raw_database.check_schema()


@db_app.command("prune", short_help="Mask phone numbers in old callbacks and messages.")
def db_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Mask what is older than this age (90d, 12h) or from before this date.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Mask the phone numbers kept in old callbacks and notifications (retention).

    Callback payloads received before the cutoff, and the bodies and phone recipients of
    notifications created before it (and no longer pending), keep their numbers masked
    (+233*****4567). Ids, references, amounts and statuses stay as they are; orders and
    payments are not touched. Safe to re-run, and to run beside the listener and the worker.

    \b
    Examples:
      orderpay db prune --older-than 90d
      orderpay db prune --older-than 90d --yes --json    # from cron
    """
    from orderpay.clock import utcnow
    from orderpay.domain.times import parse_moment
    from orderpay.errors import InvalidField
    from orderpay.store.retention import old_rows, prune_phones

    now = utcnow()
    cutoff = parse_moment(older_than, now, "older-than")
    if cutoff > now:
        raise InvalidField(f"--older-than {older_than} is in the future", field="older-than")
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        callbacks, messages = old_rows(conn, cutoff)
    since = f"from before {cutoff:%Y-%m-%d %H:%M} UTC"
    if callbacks or messages:
        confirm(
            f"Mask phone numbers in {_many(callbacks, 'callback')} and "
            f"{_many(messages, 'notification')} {since} ({rt.raw_database.label})?",
            yes=yes,
        )
    done = prune_phones(rt.database, cutoff, rt.settings.default_region)
    if json_:
        emit_json(
            {
                "cutoff": cutoff.isoformat(),
                "callbacks": {"examined": done.callbacks.examined, "masked": done.callbacks.masked},
                "notifications": {
                    "examined": done.notifications.examined,
                    "masked": done.notifications.masked,
                },
            }
        )
    else:
        info(
            f"masked phone numbers in {done.callbacks.masked} of "
            f"{_many(done.callbacks.examined, 'callback')} and {done.notifications.masked} of "
            f"{_many(done.notifications.examined, 'notification')} {since}"
        )


def _many(count: int, thing: str) -> str:
    return f"{count} {thing}{'' if count == 1 else 's'}"


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
