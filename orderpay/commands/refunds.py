"""`orderpay refund PAYMENT_ID --key KEY [--amount 12.50] --reason TEXT [--yes]`."""

from __future__ import annotations

from typing import Annotated

import typer

from orderpay.commands.common import JsonFlag, confirm, emit_json, runtime
from orderpay.commands.common import payment_id as resolve_payment


def refund(
    ctx: typer.Context,
    payment_id: Annotated[
        str,
        typer.Argument(metavar="PAYMENT_ID", help="The payment to refund, or its id prefix."),
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Idempotency key (1-255 visible ASCII characters). Re-running with the same "
            "key never refunds twice: it returns the stored refund or resumes it.",
        ),
    ] = None,
    amount: Annotated[
        str | None,
        typer.Option(
            "--amount",
            help="How much to give back, in the payment's currency (12.50); default: all that "
            "remains refundable.",
        ),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option("--currency", help="Refused unless it is the payment's currency."),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why the money goes back (required; in the order events)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Give (part of) a succeeded payment back to its payer, through the payment's provider.

    The refund is recorded first, then the provider is asked; its status is asked once right
    away, and the worker asks again about a refund still pending. When it succeeds the order
    becomes partially_refunded or refunded and the customer is told. Money leaves the
    merchant: without --yes it asks on a terminal and refuses (exit 2) off one.

    A payment the review queue says was taken after a cancel, or twice, can be refunded too.

    Exit 0: refunded, pending at the provider, or replayed; 3: no such payment; 4: the provider
    did not report the money taken (or an open review item disputes it), the amount exceeds
    what remains refundable, or the key is in progress;
    5: the key was used for another refund; 6: the provider declined or the refund failed
    (its amount is refundable again); 7: provider or database unavailable (re-run the same
    key).

    \b
    Examples:
      orderpay refund 7d2a61f0 --key refund-7d2a-1 --reason "item out of stock" --yes
      orderpay refund 7d2a61f0 --key refund-7d2a-2 --amount 12.50 --reason "one item" --json
    """
    from orderpay.errors import InvalidField
    from orderpay.payments.refund import ask_for, preview, refund_payment

    if reason is None:
        raise InvalidField("a refund needs --reason TEXT: why the money goes back", field="reason")
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        pid = resolve_payment(conn, payment_id)
        ask = ask_for(
            pid,
            key=key,
            amount=amount,
            currency=currency,
            reason=reason,
            operator=rt.settings.operator_name,
        )
        shown = preview(conn, ask)
    payment = shown.payment
    if shown.earlier is not None:
        question = (
            f"Key {ask.key} already made refund {shown.earlier.id} of {shown.amount} "
            f"({shown.earlier.status}) of payment {payment.id}; run it again?"
        )
    else:
        question = (
            f"Refund {shown.amount} of payment {payment.id} ({payment.amount}, via "
            f"{payment.provider}) to its payer?"
        )
    confirm(question, yes=yes)
    result = refund_payment(
        rt.database,
        rt.provider_for,
        ask,
        lease_seconds=rt.settings.charge_lease_seconds,
        notify=rt.notify_target(),
    )
    if result.notification_queued:
        rt.nudger.notify_now()
    if json_:
        from orderpay.shapes import refund_shape

        emit_json(refund_shape(result.refund, replayed=result.replayed))
    else:
        from orderpay.commands.render import refund_panel

        refund_panel(result.refund, replayed=result.replayed)
