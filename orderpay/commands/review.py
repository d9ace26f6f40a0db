"""`orderpay review list|show|resolve`: the outcomes kept for an operator's decision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import (
    After,
    JsonFlag,
    Limit,
    Since,
    Until,
    emit_json,
    info,
    runtime,
    show_page,
    window,
)

if TYPE_CHECKING:
    from orderpay.store.reviews import ReviewItem

review_app = typer.Typer(
    help="Outcomes kept for review: what the provider said, what to do, who decided.\n\n"
    "\b\nExamples:\n"
    "  orderpay review list\n"
    "  orderpay review list --all --order 3f1c2a9e --json\n"
    "  orderpay review show 7\n"
    '  orderpay review resolve 7 --note "refunded 25.00 GHS by MoMo, ref 4411"',
    rich_markup_mode=None,
)

ItemId = Annotated[
    int, typer.Argument(metavar="ID", min=1, help="The review item's number (see list).")
]


@review_app.command("list", short_help="List review items, newest first.")
def review_list(
    ctx: typer.Context,
    open_only: Annotated[
        bool,
        typer.Option(
            "--open/--all", help="Only the items still open (the default), or every item."
        ),
    ] = True,
    order: Annotated[
        str | None, typer.Option("--order", help="Only this order's (id or unique prefix).")
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List review items, newest opened first, a page at a time.

    An item is an outcome orderpay refused to act on: a success after a failure or the
    reverse, another amount or currency, a second payment, a success after a forced cancel.
    Each names its reason, order, payment, what the provider said and a suggested action.
    --all adds the resolved ones, with who resolved them, when and why.

    \b
    Examples:
      orderpay review list
      orderpay review list --all --since 30d
      orderpay review list --order 3f1c2a9e --json
    """
    from orderpay.commands.common import order_id
    from orderpay.shapes import review_item_shape
    from orderpay.store.reviews import list_items

    with runtime(ctx).database.transaction() as conn:
        oid = order_id(conn, order) if order is not None else None
        page = list_items(
            conn, window(since, until, limit, after), open_only=open_only, order_id=oid
        )
    show_page(
        page,
        as_json=json_,
        shape=review_item_shape,
        table=lambda items: _items_table(items, with_state=not open_only),
    )


@review_app.command("show", short_help="Show one review item.")
def review_show(ctx: typer.Context, item_id: ItemId, json_: JsonFlag = False) -> None:
    """Show one review item: what the provider said, the suggested action, its resolution.

    \b
    Examples:
      orderpay review show 7
      orderpay review show 7 --json
    """
    from orderpay.store.reviews import get_item

    with runtime(ctx).database.transaction() as conn:
        item = get_item(conn, item_id)
    _show_item(item, json_)
    if not json_ and item.is_open:
        info(f'decide, then: orderpay review resolve {item.id} --note "what was done"')


@review_app.command("resolve", short_help="Resolve a review item with a note.")
def review_resolve(
    ctx: typer.Context,
    item_id: ItemId,
    note: Annotated[
        str | None,
        typer.Option("--note", help="What was decided or done (required): kept with the item."),
    ] = None,
    refund: Annotated[
        str | None,
        typer.Option(
            "--refund",
            metavar="REFUND_ID",
            help="The refund that settled it (of the item's payment; a unique id prefix).",
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Resolve an open review item, with a note saying what was decided or done.

    Who resolved it (ORDERPAY_OPERATOR, else the OS user) and when are kept with the item and
    on its order's events; the item stays in `review list --all`. --refund names the refund
    that gave the money back (`orderpay refund`), kept with the item. Exit 2 without a note,
    3 for an unknown item or refund, 4 when it was resolved already (nothing changes).

    \b
    Examples:
      orderpay review resolve 7 --note "refunded 25.00 GHS by MoMo, ref 4411"
      orderpay review resolve 7 --note "taken twice: given back" --refund 5e1f0a2c
      ORDERPAY_OPERATOR=akosua orderpay review resolve 7 --note "duplicate report" --json
    """
    from orderpay.payments.review import clean_note, resolve

    why = clean_note(note or "")  # refused before the database is asked anything
    rt = runtime(ctx)
    refund_id = None
    if refund is not None:
        from orderpay.commands.common import refund_id as resolve_refund

        with rt.database.transaction() as conn:
            refund_id = resolve_refund(conn, refund)
    item = resolve(
        rt.database, item_id, note=why, operator=rt.settings.operator_name, refund_id=refund_id
    )
    if json_:
        from orderpay.shapes import review_item_shape

        emit_json(review_item_shape(item))
    else:
        info(f"review item {item.id} resolved by {item.resolved_by}")


def _show_item(item: ReviewItem, as_json: bool) -> None:
    if as_json:
        from orderpay.shapes import review_item_shape

        emit_json(review_item_shape(item))
        return
    from rich.panel import Panel
    from rich.text import Text

    from orderpay.commands.render import show
    from orderpay.commands.tables import when

    values = {
        "state": _state(item),
        "reason": item.reason,
        "order": str(item.order_id),
        "payment": str(item.payment_id) if item.payment_id else None,
        "refund": str(item.refund_id) if item.refund_id else None,
        "callback": f"webhook event {item.event_id}" if item.event_id is not None else None,
        "reported": item.reported,
        "suggested action": item.suggested_action,
        "opened": when(item.opened_at),
        "resolved": when(item.resolved_at) if item.resolved_at else None,
        "resolved by": item.resolved_by,
        "note": item.note,
    }
    body = Text()
    for name, value in values.items():
        if value is not None:
            body.append(f"{name:<18}", style="bold")
            body.append(f"{value}\n")
    show(Panel(body, title=f"Review item {item.id}", title_align="left", expand=False))


def _items_table(items: list[ReviewItem], *, with_state: bool) -> None:
    from orderpay.commands.render import show, width
    from orderpay.commands.tables import Column, fit, when
    from orderpay.store.ids import short

    columns = [
        Column("id", True, justify="right"),
        Column("state", with_state, rank=4),
        Column("reason", True),
        Column("order", True),
        Column("payment", rank=2),
        Column("action", rank=1, text=True),
        Column("opened", rank=3),
        Column("resolved by", rank=5),
    ]
    cells = [
        [
            str(i.id),
            _state(i) if with_state else "",
            i.reason,
            short(i.order_id),
            short(i.payment_id) if i.payment_id else "",
            i.suggested_action,
            when(i.opened_at),
            i.resolved_by or "",
        ]
        for i in items
    ]
    empty = "nothing waits for a decision" if not with_state else "no review items"
    show(fit("Review queue", columns, cells, width=width(), empty=empty))


def _state(item: ReviewItem) -> str:
    return "open" if item.is_open else "resolved"
