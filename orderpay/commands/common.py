"""What every command shares: the --json option, the runtime, output helpers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    import uuid

    from sqlalchemy import Connection

    from orderpay.runtime import Runtime
    from orderpay.store.paging import Page, Window

JSON_META_KEY = "orderpay.json"
T = TypeVar("T")


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    # ctx.meta is shared by the whole context tree, so the root group's error handler can
    # tell whether to report errors as JSON.
    if value:
        ctx.meta[JSON_META_KEY] = True
    return value


JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout (errors as JSON on stderr).",
        callback=_remember_json,
    ),
]

Limit = Annotated[
    int, typer.Option("--limit", min=1, max=1000, help="Show at most this many, newest first.")
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only from this time on: 2026-11-01, 2026-11-01T14:30, or an age (7d)."
    ),
]
Until = Annotated[
    str | None,
    typer.Option("--until", help="Only before this time (same forms as --since)."),
]
After = Annotated[
    str | None,
    typer.Option("--after", help="The next page: the cursor a previous page ended with."),
]


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_root().obj
    assert obj is not None, "the root callback sets the runtime"
    return obj  # type: ignore[no-any-return]


def emit_json(document: Any) -> None:
    """One JSON document on stdout (without importing rich, which human output needs)."""
    import json

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def order_id(conn: Connection, raw: str) -> uuid.UUID:
    """The order `raw` names: its id, or a unique prefix of it."""
    from orderpay.errors import OrderNotFound
    from orderpay.store.ids import resolve
    from orderpay.store.schema import orders

    return resolve(conn, orders, raw, what="order", not_found=OrderNotFound)


def payment_id(conn: Connection, raw: str) -> uuid.UUID:
    """The payment `raw` names: its id, or a unique prefix of it."""
    from orderpay.errors import PaymentNotFound
    from orderpay.store.ids import resolve
    from orderpay.store.schema import payments

    return resolve(conn, payments, raw, what="payment", not_found=PaymentNotFound)


def refund_id(conn: Connection, raw: str) -> uuid.UUID:
    """The refund `raw` names: its id, or a unique prefix of it."""
    from orderpay.errors import RefundNotFound
    from orderpay.store.ids import resolve
    from orderpay.store.schema import refunds

    return resolve(conn, refunds, raw, what="refund", not_found=RefundNotFound)


def product_id(conn: Connection, raw: str) -> uuid.UUID:
    """The product `raw` names: its id, or a unique prefix of it."""
    from orderpay.errors import ProductNotFound
    from orderpay.store.ids import resolve
    from orderpay.store.schema import products

    return resolve(conn, products, raw, what="product", not_found=ProductNotFound)


def window(since: str | None, until: str | None, limit: int, after: str | None) -> Window:
    """The page a list command asks for, from its --since, --until, --limit and --after."""
    from orderpay.clock import utcnow
    from orderpay.domain.times import parse_moment
    from orderpay.store.paging import Window

    now = utcnow()
    return Window(
        since=parse_moment(since, now, "since") if since is not None else None,
        until=parse_moment(until, now, "until") if until is not None else None,
        limit=limit,
        after=after,
    )


def emit_page(page: Page[T], shape: Callable[[T], Any]) -> None:
    """A page as JSON: {"items": [...], "next": cursor or null}."""
    emit_json({"items": [shape(item) for item in page.items], "next": page.next})


def show_page(
    page: Page[T], *, as_json: bool, shape: Callable[[T], Any], table: Callable[[list[T]], None]
) -> None:
    """A list command's answer: the page as JSON, or as a table followed by the way to more."""
    if as_json:
        emit_page(page, shape)
        return
    table(page.items)
    more(page)


def more(page: Page[Any]) -> None:
    """After a human table: how to see the next page, if there is one."""
    if page.next is not None:
        info(f"more: --after {page.next}")


def info(message: str) -> None:
    """A human note on stderr: never mixed into data on stdout."""
    typer.echo(message, err=True)


def confirm(question: str, *, yes: bool) -> None:
    """Go on only with the operator's consent: `--yes`, or "y" at a prompt on a terminal.

    Without a terminal to ask on (cron, a pipe, CI) a command is refused rather than run
    unasked (exit 2). Declining changes nothing and is not an error: exit 0.
    """
    if yes:
        return
    from orderpay.errors import ConfirmationRequired

    if not sys.stdin.isatty():
        raise ConfirmationRequired(
            f"{question.rstrip('?')}: this needs confirmation and there is no terminal to ask "
            "on; re-run with --yes"
        )
    if not typer.confirm(question, default=False, err=True):
        info("nothing changed")
        raise typer.Exit(0)


def progress(items: Sequence[T], description: str, *, enabled: bool = True) -> Iterable[T]:
    """`items`, with a progress bar on stderr when it is a terminal and the list is long."""
    if not enabled or len(items) < 2 or not sys.stderr.isatty():
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, console=Console(stderr=True))
