"""The `orderpay` command line: command groups, and the one place errors become exit codes.

Only typer and the standard library are imported here at the top; every command imports what
it needs when it runs, so `orderpay --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from orderpay import __version__
from orderpay.commands import (
    customers,
    database,
    events,
    exports,
    listener,
    operations,
    orders,
    payments,
    products,
    refunds,
    review,
    webhooks,
    worker,
)
from orderpay.commands.common import JSON_META_KEY
from orderpay.commands.tree import LazyCommands, lazy_command
from orderpay.commands.values import read_values_plainly
from orderpay.errors import OrderpayError, UsageError

DEBUG_ENV = "ORDERPAY_DEBUG"

# Plain Click help: rich help formatting adds a noticeable start-up cost to every --help.
MARKUP = None


class OrderpayGroup(TyperGroup):
    """The root group: translates every OrderpayError into its exit code, once, here."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        # Known before any option is parsed, so even a usage error can be reported as JSON.
        if "--json" in args:
            ctx.meta[JSON_META_KEY] = True
        read_values_plainly(self, ctx.help_option_names)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(self.commands)  # the names only: Typer's own asks for every command

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        # A list of commands needs their names and short help, not their subcommands.
        commands = self.commands
        if isinstance(commands, LazyCommands):
            self.commands = commands.listing()
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands = commands

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        as_json = bool(ctx.meta.get(JSON_META_KEY))
        try:
            try:
                return super().invoke(ctx)
            finally:
                _close_runtime(ctx)
        except OrderpayError as error:
            report(error.to_dict()["error"], as_json=as_json)
            raise typer.Exit(error.exit_code) from None
        except typer.TyperException as error:
            if not as_json:
                raise  # Click's own usage message, with the command's usage line
            usage = UsageError(error.format_message())
            report(usage.to_dict()["error"], as_json=True)
            raise typer.Exit(usage.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`orderpay order list | head`): nothing is left to say.
            _silence_stdout()
            raise typer.Exit(1) from None
        except Exception as error:
            if _debugging():
                raise
            internal = OrderpayError(
                f"{type(error).__name__}: {_first_line(error)} "
                f"(a bug; {DEBUG_ENV}=1 shows the traceback)"
            )
            report(internal.to_dict()["error"], as_json=as_json)
            raise typer.Exit(internal.exit_code) from None


def _close_runtime(ctx: typer.Context) -> None:
    runtime = ctx.obj
    if runtime is not None:
        ctx.obj = None
        runtime.close()


def _debugging() -> bool:
    value = os.environ.get(DEBUG_ENV)
    if value is None:
        from orderpay.config import dotenv_value

        value = dotenv_value(DEBUG_ENV)
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would fail again on the closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def report(error: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        import json  # not at the top: `orderpay --help` never needs it

        # ensure_ascii=False: a name like "Akosua Nyàmé" reads as itself, not as \u escapes.
        sys.stderr.write(json.dumps({"error": error}, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write(f"error: {error['message']} [{error['code']}]\n")


app = typer.Typer(
    cls=OrderpayGroup,
    name="orderpay",
    help=(
        "Payments back office for merchants paid by mobile money.\n\n"
        "\b\n"
        "Examples:\n"
        "  orderpay demo                 # the whole flow on a throwaway database\n"
        "  orderpay db upgrade\n"
        "  orderpay customer create --name Ama --phone 0241234567\n"
        "  orderpay product create --name Kenkey --price 12.50 --currency GHS\n"
        "  orderpay order create --customer 1 --item PRODUCT_ID:2\n"
        "  orderpay charge ORDER_ID --key order-1-attempt-1\n"
        '  orderpay refund PAYMENT_ID --key refund-1 --amount 5.00 --reason "one item" --yes\n'
        "  orderpay order show 3f1c2a9e  # any unique id prefix\n"
        "  orderpay order list --since 7d --status paid\n"
        "  orderpay serve-webhooks --port 8000\n"
        "  orderpay worker\n"
        "  orderpay events tail          # follow the order events live\n"
        "  orderpay webhook list --outcome unmatched\n"
        "  orderpay review list          # outcomes kept for an operator's decision\n"
        "  orderpay payment export --since 2026-11-01 --until 2026-12-01 -o nov.csv\n"
        "  orderpay db prune --older-than 90d\n\n"
        "Configuration comes from the environment and ./.env (see `orderpay config show`). "
        "Exit codes: 0 ok, 1 bug, 2 invalid input, 3 not found, 4 conflict, "
        "5 idempotency key reused, 6 payment or refund declined, 7 unavailable (retry)."
    ),
    no_args_is_help=True,
    rich_markup_mode=MARKUP,
    # ORDERPAY_DEBUG=1 re-raises a bug: print Python's own traceback, no locals (secrets).
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orderpay {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    from orderpay.runtime import Runtime

    ctx.obj = Runtime()  # closed by OrderpayGroup.invoke


app.add_typer(database.db_app, name="db")
app.add_typer(database.config_app, name="config")
app.add_typer(customers.customer_app, name="customer")
app.add_typer(products.product_app, name="product")
app.add_typer(orders.order_app, name="order")
app.command("charge", short_help="Collect an order's total from the payer.")(payments.charge)
app.add_typer(payments.payment_app, name="payment")
app.command("refund", short_help="Give (part of) a succeeded payment back to its payer.")(
    refunds.refund
)
payments.payment_app.command("export", short_help="Export a period's payments as CSV or JSON.")(
    exports.payment_export
)
app.command("serve-webhooks", short_help="Run the callback listener and the REST API.")(
    listener.serve_webhooks
)
app.add_typer(webhooks.webhook_app, name="webhook")
app.command("worker", short_help="Deliver notifications; ask providers about open payments.")(
    worker.worker
)
app.add_typer(events.events_app, name="events")
app.add_typer(worker.notification_app, name="notification")
app.add_typer(review.review_app, name="review", short_help="Decide outcomes kept for review.")
app.command("reconcile", short_help="Ask providers now about open payments and refunds.")(
    operations.reconcile
)
app.command("doctor", short_help="Check configuration, database, schema and Redis.")(
    operations.doctor
)
app.command("demo", short_help="Run the whole flow on a throwaway database.")(operations.demo)


def main() -> None:
    # Not app(): Typer would build every command to run one. Pretty exceptions are off,
    # so Typer's exception hook would only hand over to Python's.
    lazy_command(app)()
