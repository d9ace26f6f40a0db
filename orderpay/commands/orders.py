"""`orderpay order ...`."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import JsonFlag, Limit, emit_json, runtime

if TYPE_CHECKING:
    import uuid

order_app = typer.Typer(
    help="Create, inspect, list and cancel orders.\n\n\b\nExamples:\n"
    "  orderpay order create --customer 1 --item PRODUCT_ID:2\n"
    "  orderpay order show ORDER_ID\n"
    "  orderpay order list --status pending --json",
    rich_markup_mode=None,
)


class OrderStatusChoice(StrEnum):
    # Mirrors orderpay.domain.states.OrderStatus without importing it at start-up.
    pending = "pending"
    paid = "paid"
    cancelled = "cancelled"


def parse_item(raw: str) -> tuple[uuid.UUID, int]:
    """PRODUCT_ID[:QTY] -> (uuid, quantity); quantity defaults to 1."""
    from orderpay.domain.validation import parse_uuid
    from orderpay.errors import InvalidQuantity

    product, sep, quantity = raw.strip().partition(":")
    if not sep:
        return parse_uuid(product, "product id"), 1
    # ASCII digits only (int() would also read other scripts' digits); the sign is the
    # service's business, so "-1" reaches it and is refused there as out of range.
    if not quantity.removeprefix("-").isascii() or not quantity.removeprefix("-").isdigit():
        raise InvalidQuantity(f"quantity {quantity!r} in {raw!r} is not a whole number")
    return parse_uuid(product, "product id"), int(quantity)


@order_app.command("create")
def order_create(
    ctx: typer.Context,
    customer: Annotated[int, typer.Option("--customer", help="The customer's id.")],
    item: Annotated[
        list[str] | None,
        typer.Option("--item", help="PRODUCT_ID[:QTY]; repeat for more items. QTY defaults to 1."),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Create a pending order. The total is computed from the products' prices.

    \b
    Examples:
      orderpay order create --customer 1 --item 0b9e...:2 --item 5c1f...
      orderpay order create --customer 1 --item 0b9e... --json
    """
    from orderpay.shop.orders import create_order
    from orderpay.store.orders import details_of

    items = [parse_item(raw) for raw in item or []]
    with runtime(ctx).database.transaction() as conn:
        order = create_order(conn, customer_id=customer, items=items)
        (detail,) = details_of(conn, [order])
    _show_detail(detail, json_)


@order_app.command("show", short_help="Show an order's items, payments and timeline.")
def order_show(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(metavar="ORDER_ID", help="The order's id.")],
    json_: JsonFlag = False,
) -> None:
    """Show an order: items, payments, notifications and its timeline.

    \b
    Example:
      orderpay order show 3f1c... --json
    """
    from orderpay.domain.validation import parse_uuid
    from orderpay.store.orders import get_order_detail

    oid = parse_uuid(order_id, "order id")
    with runtime(ctx).database.transaction() as conn:
        detail = get_order_detail(conn, oid)
    _show_detail(detail, json_)


@order_app.command("list")
def order_list(
    ctx: typer.Context,
    status: Annotated[
        OrderStatusChoice | None, typer.Option("--status", help="Only orders in this status.")
    ] = None,
    customer: Annotated[
        int | None, typer.Option("--customer", help="Only this customer's.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option("--phone", help="Only orders of the customer with this phone.")
    ] = None,
    limit: Limit = 50,
    json_: JsonFlag = False,
) -> None:
    """List orders, newest first, optionally filtered.

    \b
    Examples:
      orderpay order list --status pending
      orderpay order list --phone 0241234567 --json
    """
    from orderpay.domain.phones import normalise_phone
    from orderpay.domain.states import OrderStatus
    from orderpay.store.orders import details_of, list_orders

    rt = runtime(ctx)
    e164 = normalise_phone(phone, rt.settings.default_region) if phone is not None else None
    with rt.database.transaction() as conn:
        rows = list_orders(
            conn,
            status=OrderStatus(status.value) if status is not None else None,
            customer_id=customer,
            phone=e164,
            limit=limit,
        )
        details = details_of(conn, rows) if json_ else []
    if json_:
        from orderpay.http.shapes import order_shape

        emit_json([order_shape(detail) for detail in details])
    else:
        from orderpay.commands.render import orders_table

        orders_table(rows)


@order_app.command("cancel")
def order_cancel(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(metavar="ORDER_ID", help="The order's id.")],
    json_: JsonFlag = False,
) -> None:
    """Cancel a pending order that has no payment in flight.

    \b
    Example:
      orderpay order cancel 3f1c...
    """
    from orderpay.domain.validation import parse_uuid
    from orderpay.shop.orders import cancel_order
    from orderpay.store.orders import details_of

    oid = parse_uuid(order_id, "order id")
    with runtime(ctx).database.transaction() as conn:
        (detail,) = details_of(conn, [cancel_order(conn, oid)])
    _show_detail(detail, json_)


def _show_detail(detail: object, as_json: bool) -> None:
    from orderpay.store.orders import OrderDetail

    assert isinstance(detail, OrderDetail)
    if as_json:
        from orderpay.http.shapes import order_shape

        emit_json(order_shape(detail))
    else:
        from orderpay.commands.render import order_panel

        order_panel(detail)
