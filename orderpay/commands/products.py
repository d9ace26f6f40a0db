"""`orderpay product create|show|update|list`."""

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
    emit_page,
    more,
    runtime,
    window,
)
from orderpay.commands.common import (
    product_id as resolve_product,
)

if TYPE_CHECKING:
    from orderpay.shop.products import Product

product_app = typer.Typer(
    help="Create, show, reprice and retire products.\n\n\b\nExamples:\n"
    "  orderpay product create --name Kenkey --price 12.50 --currency GHS\n"
    "  orderpay product show 3f1c2a9e\n"
    "  orderpay product update 3f1c2a9e --price 14.00\n"
    "  orderpay product update 3f1c2a9e --inactive\n"
    "  orderpay product list --search kenkey --json",
    rich_markup_mode=None,
)

ProductId = Annotated[
    str, typer.Argument(metavar="PRODUCT_ID", help="The product's id, or its first characters.")
]


@product_app.command("create")
def product_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The product's name.")],
    price: Annotated[
        str, typer.Option("--price", help="Price in major units, e.g. 12.50 (exact, above 0).")
    ],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code, e.g. GHS, UGX.")],
    description: Annotated[str, typer.Option("--description", help="Optional text.")] = "",
    json_: JsonFlag = False,
) -> None:
    """Create a product. Prices are exact: 12.50 GHS is stored as 1250 pesewas.

    \b
    Examples:
      orderpay product create --name Kenkey --price 12.50 --currency GHS
      orderpay product create --name Rolex --price 3000 --currency UGX --json
    """
    from orderpay.shop.products import create_product

    with runtime(ctx).database.transaction() as conn:
        product = create_product(
            conn, name=name, price=price, currency=currency, description=description
        )
    _show_one(product, json_, "Product created")


@product_app.command("show")
def product_show(ctx: typer.Context, product_id: ProductId, json_: JsonFlag = False) -> None:
    """Show one product.

    \b
    Example:
      orderpay product show 3f1c2a9e --json
    """
    from orderpay.shop.products import get_product

    with runtime(ctx).database.transaction() as conn:
        product = get_product(conn, resolve_product(conn, product_id))
    _show_one(product, json_, f"Product {product.id}")


@product_app.command("update")
def product_update(
    ctx: typer.Context,
    product_id: ProductId,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    price: Annotated[
        str | None,
        typer.Option("--price", help="A new price, for orders made from now on."),
    ] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--inactive", help="Sell it again, or stop selling it."),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Rename, reprice or retire a product. Existing orders keep the price they were made at.

    \b
    Examples:
      orderpay product update 3f1c2a9e --price 14.00
      orderpay product update 3f1c2a9e --inactive --json
    """
    from orderpay.shop.products import update_product

    with runtime(ctx).database.transaction() as conn:
        pid = resolve_product(conn, product_id)
        product = update_product(conn, pid, name=name, price=price, active=active)
    _show_one(product, json_, "Product updated")


@product_app.command("list")
def product_list(
    ctx: typer.Context,
    search: Annotated[
        str | None, typer.Option("--search", help="Name or description contains.")
    ] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--inactive", help="Only products sold, or only retired ones."),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List products, newest first, a page at a time.

    \b
    Examples:
      orderpay product list --search kenkey
      orderpay product list --inactive --json
    """
    from orderpay.shop.products import list_products

    with runtime(ctx).database.transaction() as conn:
        page = list_products(conn, window(since, until, limit, after), search=search, active=active)
    from orderpay.shapes import product_shape

    if json_:
        emit_page(page, product_shape)
        return
    from orderpay.commands.render import products_table  # rich: for human eyes only

    products_table(page.items)
    more(page)


def _show_one(product: Product, as_json: bool, title: str) -> None:
    if as_json:
        from orderpay.shapes import product_shape

        emit_json(product_shape(product))
        return
    from orderpay.commands.render import products_table

    products_table([product], title=title)
