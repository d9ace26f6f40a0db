"""`orderpay charge` and `orderpay payment ...`."""

from __future__ import annotations

from typing import Annotated

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
from orderpay.commands.common import order_id as resolve_order
from orderpay.commands.common import payment_id as resolve_payment
from orderpay.domain.states import PaymentStatus  # --status's choices; pure, cheap at start-up

payment_app = typer.Typer(
    help="Inspect, export and cancel payments.\n\n\b\nExamples:\n"
    "  orderpay payment list --status pending --since 1d\n"
    "  orderpay payment show 9c41e0d2 --json\n"
    "  orderpay payment export --since 2026-11-01 --until 2026-12-01 -o nov.csv\n"
    '  orderpay payment cancel 9c41e0d2 --reason "customer paid cash"',
    rich_markup_mode=None,
)


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
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Collect through this provider (simulator, mtn, mpesa) whatever the payer's "
            "network; default: the payer's network through ORDERPAY_PROVIDER_ROUTES, else "
            "ORDERPAY_PROVIDER. A re-run key keeps its payment's provider.",
        ),
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
      orderpay charge 3f1c... --key order-3f1c-2 --provider mpesa
    """
    from orderpay.domain.idempotency import check_key
    from orderpay.payments.charge import charge_order

    check_key(key)
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        oid = resolve_order(conn, order_id)
    result = charge_order(
        rt.database,
        rt.charge_choice(provider),
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
        from orderpay.commands.render import payment_panel

        payment_panel(result.payment, replayed=result.replayed)


PaymentId = Annotated[
    str, typer.Argument(metavar="PAYMENT_ID", help="The payment's id, or its first characters.")
]


@payment_app.command("show")
def payment_show(ctx: typer.Context, payment_id: PaymentId, json_: JsonFlag = False) -> None:
    """Show one payment and its refunds.

    The provider's transaction id shows once the provider reported it.

    \b
    Examples:
      orderpay payment show 7d2a61f0
      orderpay payment show 7d2a61f0 --json
    """
    from orderpay.store.payments import get_payment
    from orderpay.store.refunds import refunds_of_payment

    with runtime(ctx).database.transaction() as conn:
        payment = get_payment(conn, resolve_payment(conn, payment_id))
        refunds = refunds_of_payment(conn, payment.id)
    if json_:
        from orderpay.shapes import payment_shape, refund_shape

        emit_json(payment_shape(payment) | {"refunds": [refund_shape(r) for r in refunds]})
    else:
        from orderpay.commands.render import payment_panel

        payment_panel(payment, refunds=refunds)


@payment_app.command("list")
def payment_list(
    ctx: typer.Context,
    order: Annotated[str | None, typer.Option("--order", help="Only this order's.")] = None,
    status: Annotated[
        PaymentStatus | None, typer.Option("--status", help="Only payments in this status.")
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List payments, newest first, a page at a time.

    \b
    Examples:
      orderpay payment list --status pending --since 2026-11-01
      orderpay payment list --order 3f1c2a9e --json
    """
    from orderpay.store.payments import list_payments

    with runtime(ctx).database.transaction() as conn:
        oid = resolve_order(conn, order) if order is not None else None
        page = list_payments(
            conn,
            window(since, until, limit, after),
            order_id=oid,
            status=status,
        )
    from orderpay.shapes import payment_shape

    if json_:
        emit_page(page, payment_shape)
        return
    from orderpay.commands.render import payments_table  # rich: for human eyes only

    payments_table(page.items)
    more(page)


@payment_app.command("cancel", short_help="Cancel a payment stuck initiated or pending.")
def payment_cancel(
    ctx: typer.Context,
    payment_id: PaymentId,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for the order events and the payment's record.")
    ] = "cancelled by the operator",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Fail it without its provider's word (unreachable, or no record of it yet); "
            "it is still asked, and a success reported later is kept for review (money to "
            "refund), never a paid order.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Cancel a payment stuck initiated or pending, after asking its provider.

    The payment's own provider decides: a definite failure fails it, and the order can be
    charged again with a new key; a success settles it as paid instead; still pending there is
    refused (exit 4), the payer may yet approve. No record of it there, or an ambiguous answer,
    is no answer (a provider may not show a request it took yet): exit 4, and a provider that
    cannot be asked exit 7, unless --force, which fails it awaiting the provider's
    confirmation; the worker keeps asking.

    \b
    Examples:
      orderpay payment cancel 7d2a... --reason "customer paid cash"
      orderpay payment cancel 7d2a... --force --yes --json
    """
    from orderpay.domain.validation import clean_name
    from orderpay.payments.cancel import cancel_payment
    from orderpay.store.payments import get_payment

    why = clean_name(reason, "reason")
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        pid = resolve_payment(conn, payment_id)
        payment = get_payment(conn, pid)
    confirm(
        f"Cancel payment {payment.id} ({payment.amount}, {payment.status.value}, via "
        f"{payment.provider})?",
        yes=yes,
    )
    result = cancel_payment(
        rt.database,
        rt.provider_for,
        pid,
        reason=why,
        force=force,
        notify=rt.notify_target(),
        operator=rt.settings.operator_name,
    )
    if result.payment.status.value == "succeeded":
        rt.nudger.notify_now()
    if json_:
        from orderpay.shapes import payment_shape

        emit_json(
            {
                "outcome": result.outcome.value,
                "provider_says": result.provider_says,
                "payment": payment_shape(result.payment),
            }
        )
    else:
        info(
            f"payment {result.payment.id}: {result.outcome.value} (provider says "
            f"{result.provider_says}); now {result.payment.status.value}"
        )
