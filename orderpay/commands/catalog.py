"""`orderpay customer ...` and `orderpay product ...`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import JsonFlag, Limit, emit_json, runtime

if TYPE_CHECKING:
    from orderpay.shop.customers import Customer
    from orderpay.shop.products import Product

customer_app = typer.Typer(
    help="Create and list customers.\n\n\b\nExamples:\n"
    '  orderpay customer create --name "Ama Mensah" --phone 0241234567\n'
    "  orderpay customer list --json",
    rich_markup_mode=None,
)
product_app = typer.Typer(
    help="Create and list products.\n\n\b\nExamples:\n"
    "  orderpay product create --name Kenkey --price 12.50 --currency GHS\n"
    "  orderpay product list --json",
    rich_markup_mode=None,
)


@customer_app.command("create")
def customer_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The customer's name.")],
    phone: Annotated[
        str,
        typer.Option(
            "--phone",
            help="Mobile number; local numbers are read in ORDERPAY_DEFAULT_REGION. "
            "Stored as E.164.",
        ),
    ],
    email: Annotated[str | None, typer.Option("--email", help="Optional email.")] = None,
    json_: JsonFlag = False,
) -> None:
    """Create a customer.

    \b
    Examples:
      orderpay customer create --name "Ama Mensah" --phone 0241234567
      orderpay customer create --name Test --phone +46733123450 --json
    """
    from orderpay.shop.customers import create_customer

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        customer = create_customer(
            conn, name=name, phone=phone, email=email, default_region=rt.settings.default_region
        )
    _show_customers([customer], json_, single=True)


@customer_app.command("list")
def customer_list(ctx: typer.Context, limit: Limit = 100, json_: JsonFlag = False) -> None:
    """List customers, newest first.

    \b
    Example:
      orderpay customer list --json
    """
    from orderpay.shop.customers import list_customers

    with runtime(ctx).database.transaction() as conn:
        rows = list_customers(conn, limit=limit)
    _show_customers(rows, json_)


def _show_customers(rows: Sequence[Customer], as_json: bool, single: bool = False) -> None:
    from orderpay.commands.render import customers_table
    from orderpay.http.shapes import customer_shape

    if as_json:
        emit_json(customer_shape(rows[0]) if single else [customer_shape(c) for c in rows])
    else:
        customers_table(rows, title="Customer created" if single else "Customers")


@product_app.command("create")
def product_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The product's name.")],
    price: Annotated[
        str, typer.Option("--price", help="Price in major units, e.g. 12.50 (exact decimal).")
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
    _show_products([product], json_, single=True)


@product_app.command("list")
def product_list(ctx: typer.Context, limit: Limit = 100, json_: JsonFlag = False) -> None:
    """List products, newest first.

    \b
    Example:
      orderpay product list --json
    """
    from orderpay.shop.products import list_products

    with runtime(ctx).database.transaction() as conn:
        rows = list_products(conn, limit=limit)
    _show_products(rows, json_)


def _show_products(rows: Sequence[Product], as_json: bool, single: bool = False) -> None:
    from orderpay.commands.render import products_table
    from orderpay.http.shapes import product_shape

    if as_json:
        emit_json(product_shape(rows[0]) if single else [product_shape(p) for p in rows])
    else:
        products_table(rows, title="Product created" if single else "Products")
