"""`orderpay order ...`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import (
    After,
    JsonFlag,
    Limit,
    Since,
    Until,
    confirm,
    emit_json,
    emit_page,
    info,
    more,
    runtime,
    window,
)
from orderpay.commands.common import (
    order_id as resolve_order,
)
from orderpay.commands.common import (
    product_id as resolve_product,
)
from orderpay.domain.states import OrderStatus  # --status's choices; pure, cheap at start-up

if TYPE_CHECKING:
    from orderpay.store.orders import OrderDetail

order_app = typer.Typer(
    help="Create, inspect, list and cancel orders.\n\n\b\nExamples:\n"
    "  orderpay order create --customer 1 --item PRODUCT_ID:2\n"
    "  orderpay order show 3f1c2a9e\n"
    "  orderpay order list --status pending --since 7d --json",
    rich_markup_mode=None,
)


def parse_item(raw: str) -> tuple[str, int]:
    """PRODUCT_ID[:QTY] -> (the product id as given, quantity); quantity defaults to 1."""
    from orderpay.errors import InvalidQuantity

    product, sep, quantity = raw.strip().partition(":")
    if not sep:
        return product, 1
    # ASCII digits only (int() would also read other scripts' digits); the sign is the
    # service's business, so "-1" reaches it and is refused there as out of range.
    if not quantity.removeprefix("-").isascii() or not quantity.removeprefix("-").isdigit():
        raise InvalidQuantity(f"quantity {quantity!r} in {raw!r} is not a whole number")
    return product, int(quantity)


OrderId = Annotated[
    str, typer.Argument(metavar="ORDER_ID", help="The order's id, or its first characters.")
]


@order_app.command("create")
def order_create(
    ctx: typer.Context,
    customer: Annotated[int, typer.Option("--customer", help="The customer's id.")],
    item: Annotated[
        list[str] | None,
        typer.Option(
            "--item",
            help="PRODUCT_ID[:QTY] (the id or its first characters); repeat for more items. "
            "QTY defaults to 1.",
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Create a pending order. The total is computed from the products' prices.

    \b
    Examples:
      orderpay order create --customer 1 --item 0b9e41c2:2 --item 5c1f
      orderpay order create --customer 1 --item 0b9e41c2 --json
    """
    from orderpay.shop.customers import get_customer
    from orderpay.shop.orders import check_quantity, create_order
    from orderpay.store.orders import details_of

    given = [parse_item(raw) for raw in item or []]
    for _, quantity in given:
        check_quantity(quantity)  # bad input is refused before anything is looked up
    with runtime(ctx).database.transaction() as conn:
        get_customer(conn, customer)
        items = [(resolve_product(conn, product), quantity) for product, quantity in given]
        order = create_order(conn, customer_id=customer, items=items)
        (detail,) = details_of(conn, [order])
    _show_detail(detail, json_)


@order_app.command("show", short_help="Show an order's story: items, payments, events.")
def order_show(ctx: typer.Context, order_id: OrderId, json_: JsonFlag = False) -> None:
    """Show an order's story: its customer, items, payments, notifications and events.

    \b
    Examples:
      orderpay order show 3f1c2a9e
      orderpay order show 3f1c2a9e-0c4d-4a53-9d1e-5b8f0a6c7e21 --json
    """
    from orderpay.store.orders import get_order_detail

    with runtime(ctx).database.transaction() as conn:
        detail = get_order_detail(conn, resolve_order(conn, order_id))
    _show_detail(detail, json_)


@order_app.command("list")
def order_list(
    ctx: typer.Context,
    status: Annotated[
        OrderStatus | None, typer.Option("--status", help="Only orders in this status.")
    ] = None,
    customer: Annotated[
        int | None, typer.Option("--customer", help="Only this customer's.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option("--phone", help="Only orders of the customer with this phone.")
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List orders, newest first, a page at a time, optionally filtered.

    \b
    Examples:
      orderpay order list --status pending --since 7d
      orderpay order list --phone 0241234567 --json
    """
    from orderpay.store.orders import details_of, list_orders

    rt = runtime(ctx)
    e164 = None
    if phone is not None:
        from orderpay.domain.phones import normalise_phone

        e164 = normalise_phone(phone, rt.settings.default_region)
    with rt.database.transaction() as conn:
        if customer is not None:
            from orderpay.shop.customers import get_customer

            get_customer(conn, customer)  # a filter naming no customer is an error, not empty
        page = list_orders(
            conn,
            window(since, until, limit, after),
            status=status,
            customer_id=customer,
            phone=e164,
        )
        details = {d.order.id: d for d in details_of(conn, page.items)} if json_ else {}
    from orderpay.shapes import order_shape

    if json_:
        emit_page(page, lambda order: order_shape(details[order.id]))
        return
    from orderpay.commands.render import orders_table  # rich: for human eyes only

    orders_table(page.items)
    more(page)


@order_app.command("cancel", short_help="Cancel a pending order with no payment in flight.")
def order_cancel(
    ctx: typer.Context,
    order_id: OrderId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Cancel a pending order that has no payment in flight (asks first, unless --yes). An
    order cancelled already is shown as it is, saying so.

    \b
    Examples:
      orderpay order cancel 3f1c2a9e
      orderpay order cancel 3f1c2a9e --yes --json
    """
    from orderpay.shop.orders import cancel_order
    from orderpay.store.orders import details_of, get_order

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        oid = resolve_order(conn, order_id)
        order = get_order(conn, oid)
    if order.status is OrderStatus.CANCELLED:
        info(f"order {oid} is cancelled already; nothing changed")
    else:
        confirm(f"Cancel order {oid} ({order.total}, {order.status.value})?", yes=yes)
    with rt.database.transaction() as conn:
        cancelled = cancel_order(conn, oid, operator=rt.settings.operator_name)
        (detail,) = details_of(conn, [cancelled])
    _show_detail(detail, json_)


def _show_detail(detail: OrderDetail, as_json: bool) -> None:
    if as_json:
        from orderpay.shapes import order_shape

        emit_json(order_shape(detail))
    else:
        from orderpay.commands.render import order_panel

        order_panel(detail)
