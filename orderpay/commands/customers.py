"""`orderpay customer create|show|update|list`."""

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

if TYPE_CHECKING:
    from orderpay.shop.customers import Customer

customer_app = typer.Typer(
    help="Create, show, correct and find customers.\n\n\b\nExamples:\n"
    '  orderpay customer create --name "Ama Mensah" --phone 0241234567\n'
    "  orderpay customer show 1\n"
    "  orderpay customer list --search mensah\n"
    "  orderpay customer update 1 --email ama@example.com",
    rich_markup_mode=None,
)

CustomerId = Annotated[int, typer.Argument(metavar="CUSTOMER_ID", help="The customer's id.")]


@customer_app.command("create", short_help="Create a customer.")
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
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate", help="Create it even if a customer has this phone already."
        ),
    ] = False,
    json_: JsonFlag = False,
) -> None:
    """Create a customer (a phone another customer has is refused without --allow-duplicate).

    \b
    Examples:
      orderpay customer create --name "Ama Mensah" --phone 0241234567
      orderpay customer create --name Test --phone +46733123450 --json
    """
    from orderpay.shop.customers import create_customer

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        customer = create_customer(
            conn,
            name=name,
            phone=phone,
            email=email,
            default_region=rt.settings.default_region,
            allow_duplicate=allow_duplicate,
        )
    _show_one(customer, json_, "Customer created")


@customer_app.command("show")
def customer_show(ctx: typer.Context, customer_id: CustomerId, json_: JsonFlag = False) -> None:
    """Show one customer.

    \b
    Example:
      orderpay customer show 1 --json
    """
    from orderpay.shop.customers import get_customer

    with runtime(ctx).database.transaction() as conn:
        customer = get_customer(conn, customer_id)
    _show_one(customer, json_, f"Customer {customer.id}")


@customer_app.command("update")
def customer_update(
    ctx: typer.Context,
    customer_id: CustomerId,
    name: Annotated[str | None, typer.Option("--name", help="The corrected name.")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="The corrected phone.")] = None,
    email: Annotated[
        str | None, typer.Option("--email", help='The corrected email ("" removes it).')
    ] = None,
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate", help="Give it the phone even if another customer has it."
        ),
    ] = False,
    json_: JsonFlag = False,
) -> None:
    """Correct a customer's name, phone or email. Orders and payments keep theirs. A phone
    another customer has is refused without --allow-duplicate.

    \b
    Examples:
      orderpay customer update 1 --phone 0201234567
      orderpay customer update 1 --email "" --json
    """
    from orderpay.shop.customers import update_customer

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        customer = update_customer(
            conn,
            customer_id,
            name=name,
            phone=phone,
            email=email,
            default_region=rt.settings.default_region,
            allow_duplicate=allow_duplicate,
        )
    _show_one(customer, json_, "Customer updated")


@customer_app.command("list")
def customer_list(
    ctx: typer.Context,
    search: Annotated[
        str | None,
        typer.Option("--search", help="Name, email or phone (any way it is written) contains."),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List customers, newest first, a page at a time.

    \b
    Examples:
      orderpay customer list --search mensah
      orderpay customer list --since 7d --json
    """
    from orderpay.shop.customers import list_customers

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        page = list_customers(
            conn,
            window(since, until, limit, after),
            search=search,
            default_region=rt.settings.default_region,
        )
    from orderpay.shapes import customer_shape

    if json_:
        emit_page(page, customer_shape)
        return
    from orderpay.commands.render import customers_table  # rich: for human eyes only

    customers_table(page.items)
    more(page)


def _show_one(customer: Customer, as_json: bool, title: str) -> None:
    from orderpay.shapes import customer_shape

    if as_json:
        emit_json(customer_shape(customer))
        return
    from orderpay.commands.render import customers_table

    customers_table([customer], title=title)
