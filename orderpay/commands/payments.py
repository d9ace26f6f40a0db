"""`orderpay charge` and `orderpay payment ...`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from orderpay.commands.common import JsonFlag, Limit, emit_json, runtime

payment_app = typer.Typer(
    help="Inspect payments.\n\n\b\nExamples:\n"
    "  orderpay payment list --status pending\n  orderpay payment show PAYMENT_ID --json",
    rich_markup_mode=None,
)


class PaymentStatusChoice(StrEnum):
    # Mirrors orderpay.states.PaymentStatus without importing it at start-up.
    initiated = "initiated"
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


def charge(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(metavar="ORDER_ID", help="The order to charge.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Idempotency key (1-255 visible ASCII characters). Re-running with the same "
            "key never charges twice: it returns the stored payment or resumes it.",
        ),
    ] = None,
    phone: Annotated[
        str | None,
        typer.Option("--phone", help="Payer's mobile number; defaults to the customer's."),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Ask the payment provider to collect an order's total from the payer.

    Exit 0: accepted (pending) or replayed; 4: another charge holds the order, or it is paid or
    cancelled; 5: the key was used for another charge; 6: declined; 7: provider or database
    unavailable (re-run the same key).

    \b
    Examples:
      orderpay charge 3f1c... --key order-3f1c-1
      orderpay charge 3f1c... --key order-3f1c-1 --phone +233241234567 --json
    """
    from orderpay.charges import charge_order
    from orderpay.fields import parse_uuid
    from orderpay.idempotency import check_key

    check_key(key)
    oid = parse_uuid(order_id, "order id")
    rt = runtime(ctx)
    result = charge_order(
        rt.database,
        rt.provider,
        order_id=oid,
        key=key,
        payer_phone=phone,
        default_region=rt.settings.default_region,
        lease_seconds=rt.settings.charge_lease_seconds,
    )
    if json_:
        from orderpay.shapes import payment_shape

        emit_json(payment_shape(result.payment, replayed=result.replayed))
    else:
        from orderpay.render import payment_panel

        payment_panel(result.payment, replayed=result.replayed)


@payment_app.command("show")
def payment_show(
    ctx: typer.Context,
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT_ID", help="The payment's id.")],
    json_: JsonFlag = False,
) -> None:
    """Show one payment.

    \b
    Example:
      orderpay payment show 7d2a... --json
    """
    from orderpay.fields import parse_uuid
    from orderpay.payments import get_payment

    pid = parse_uuid(payment_id, "payment id")
    with runtime(ctx).database.transaction() as conn:
        payment = get_payment(conn, pid)
    if json_:
        from orderpay.shapes import payment_shape

        emit_json(payment_shape(payment))
    else:
        from orderpay.render import payment_panel

        payment_panel(payment)


@payment_app.command("list")
def payment_list(
    ctx: typer.Context,
    order: Annotated[str | None, typer.Option("--order", help="Only this order's.")] = None,
    status: Annotated[
        PaymentStatusChoice | None, typer.Option("--status", help="Only payments in this status.")
    ] = None,
    limit: Limit = 50,
    json_: JsonFlag = False,
) -> None:
    """List payments, newest first.

    \b
    Examples:
      orderpay payment list --status pending
      orderpay payment list --order 3f1c... --json
    """
    from orderpay.fields import parse_uuid
    from orderpay.payments import list_payments
    from orderpay.states import PaymentStatus

    oid = parse_uuid(order, "order id") if order is not None else None
    with runtime(ctx).database.transaction() as conn:
        rows = list_payments(
            conn,
            order_id=oid,
            status=PaymentStatus(status.value) if status is not None else None,
            limit=limit,
        )
    if json_:
        from orderpay.shapes import payment_shape

        emit_json([payment_shape(p) for p in rows])
    else:
        from orderpay.render import payments_table

        payments_table(rows)
