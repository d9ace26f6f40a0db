"""Human output for the CLI: tables and panels on stdout, fitted to the terminal (tables.py).

Lists show short ids (the first 8 characters; every command takes a unique prefix), times with
their zone, and amounts with their currency, never cut. JSON lives in orderpay/shapes.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from orderpay.commands.tables import Column, console, fit, styled, when
from orderpay.domain.phones import mask_phone
from orderpay.domain.states import RefundStatus
from orderpay.shop.customers import Customer
from orderpay.shop.products import Product
from orderpay.store.ids import short
from orderpay.store.notifications import Notification
from orderpay.store.order_events import OrderEvent
from orderpay.store.orders import Order, OrderDetail
from orderpay.store.payments import Payment
from orderpay.store.refund_rows import Refund

if TYPE_CHECKING:
    from orderpay.payments.catch_up import Skipped
    from orderpay.payments.life_cycle import Check

E = Column  # for the tables below: E(header, essential=..., ...)


def show(renderable: RenderableType) -> None:
    console().print(renderable)


def width() -> int:
    return console().width


def customers_table(rows: Sequence[Customer], title: str = "Customers") -> None:
    columns = [
        E("id", True),
        E("name", True),
        E("phone", True),
        E("email", rank=2),
        E("created", rank=1),
    ]
    cells = [[str(c.id), c.name, c.phone, c.email or "", when(c.created_at)] for c in rows]
    show(fit(title, columns, cells, width=width(), empty="no customers"))


def products_table(rows: Sequence[Product], title: str = "Products") -> None:
    columns = [
        E("id", True),
        E("name", True),
        E("price", True, justify="right"),
        E("active", rank=1),
        E("created", rank=2),
    ]
    cells = [
        [short(p.id), p.name, str(p.price), "yes" if p.active else "no", when(p.created_at)]
        for p in rows
    ]
    show(fit(title, columns, cells, width=width(), empty="no products"))


def orders_table(rows: Sequence[Order], title: str = "Orders") -> None:
    columns = [
        E("id", True),
        E("status", True),
        E("total", True, justify="right"),
        E("customer", rank=1),
        E("created", rank=2),
    ]
    cells = [
        [short(o.id), o.status.value, str(o.total), str(o.customer_id), when(o.created_at)]
        for o in rows
    ]
    show(fit(title, columns, cells, width=width(), empty="no orders"))


def payments_table(rows: Sequence[Payment], title: str = "Payments") -> None:
    columns = [
        E("id", True),
        E("order", True),
        E("status", True),
        E("amount", True, justify="right"),
        E("payer", rank=2),
        E("provider", rank=3),
        E("key", rank=1),
        E("reason", rank=4, text=True),
        E("created", rank=5),
    ]
    cells = [
        [
            short(p.id),
            short(p.order_id),
            p.status.value,
            str(p.amount),
            mask_phone(p.payer_phone),
            p.provider,
            p.idempotency_key,
            p.failure_reason or "",
            when(p.created_at),
        ]
        for p in rows
    ]
    show(fit(title, columns, cells, width=width(), empty="no payments"))


def notifications_table(rows: Sequence[Notification], title: str = "Notifications") -> None:
    columns = [
        E("id", True),
        E("order", True),
        E("status", True),
        E("channel", rank=1),
        E("recipient", rank=3),
        E("attempts", rank=2, justify="right"),
        E("last error", rank=4, text=True),
    ]
    cells = [
        [
            str(n.id),
            short(n.order_id),
            n.status.value,
            n.channel,
            _recipient(n.recipient),
            str(n.attempts),
            n.last_error or "",
        ]
        for n in rows
    ]
    show(fit(title, columns, cells, width=width(), empty="no notifications"))


def _recipient(value: str) -> str:
    return mask_phone(value) if value.startswith("+") else value


def events_table(events: Iterable[OrderEvent], inner: int) -> RenderableType:
    columns = [E("at", True), E("event", True), E("detail", rank=1, text=True)]
    # Who acted goes with the detail, which wraps: a column of its own would not fit 80.
    cells = [
        [when(e.at), e.event, f"{e.detail} (by {e.operator})" if e.operator else e.detail]
        for e in events
    ]
    return fit("Events", columns, cells, width=inner, empty="nothing yet")


def order_panel(detail: OrderDetail) -> None:
    """The order's story: who, what, how it was paid, who was told, and every step."""
    order = detail.order
    inner = width() - 4  # the panel's border and padding
    count = len(detail.items)
    summary = Text.assemble(
        ("status ", ""),
        styled("status", order.status.value),
        ("   total ", ""),
        (str(order.total), "bold"),
        (f"   {count} product{'s' if count != 1 else ''}", ""),
        f"\ncustomer {order.customer_id}: {detail.customer_name} "
        f"({mask_phone(detail.customer_phone)})",
        f"\ncreated {when(order.created_at)}   updated {when(order.updated_at)}",
    )
    items = fit(
        "Items",
        [
            E("product", rank=1),
            E("name", True),
            E("qty", True, justify="right"),
            E("unit price", True, justify="right"),
            E("line total", True, justify="right"),
        ],
        [
            [short(i.product_id), i.name, str(i.quantity), str(i.unit_price), str(i.line_total)]
            for i in detail.items
        ],
        width=inner,
    )
    parts: list[Any] = [summary, items]
    if detail.payments:
        parts.append(
            fit(
                "Payments",
                [
                    E("id", True),
                    E("status", True),
                    E("amount", True, justify="right"),
                    E("key", True),
                    E("provider", rank=1),
                    E("transaction", rank=2),
                    E("payer", rank=3),
                    E("reason", rank=4, text=True),
                ],
                [
                    [
                        short(p.id),
                        p.status.value,
                        str(p.amount),
                        p.idempotency_key,
                        p.provider,
                        p.provider_transaction_id or "",
                        mask_phone(p.payer_phone),
                        p.failure_reason or "",
                    ]
                    for p in detail.payments
                ],
                width=inner,
            )
        )
    if detail.refunds:
        parts.append(refunds_table(detail.refunds, inner))
    if detail.notifications:
        parts.append(
            fit(
                "Notifications",
                [
                    E("id", True),
                    E("channel", True),
                    E("status", True),
                    E("recipient", rank=2),
                    E("attempts", rank=1, justify="right"),
                ],
                [
                    [str(n.id), n.channel, n.status.value, _recipient(n.recipient), str(n.attempts)]
                    for n in detail.notifications
                ],
                width=inner,
            )
        )
    parts.append(events_table(detail.events, inner))
    show(Panel(Group(*parts), title=f"Order {order.id}", title_align="left", expand=False))


def refunds_table(refunds: Sequence[Refund], inner: int) -> RenderableType:
    return fit(
        "Refunds",
        [
            E("id", True),
            E("status", True),
            E("amount", True, justify="right"),
            E("key", True),
            E("payment", rank=1),
            E("operator", rank=2),
            E("reason", rank=3, text=True),
            E("failure", rank=4, text=True),
        ],
        [
            [
                short(r.id),
                r.status.value,
                str(r.amount),
                r.idempotency_key,
                short(r.payment_id),
                r.operator,
                r.reason,
                r.failure_reason or "",
            ]
            for r in refunds
        ],
        width=inner,
    )


def field_lines(rows: Sequence[tuple[str, str]]) -> Text:
    """`name  value` lines of a panel, leaving out empty values."""
    return Text("\n").join(
        Text.assemble((f"{name:<12}", "bold"), styled(name, value)) for name, value in rows if value
    )


def refund_panel(refund: Refund, *, replayed: bool | None = None) -> None:
    rows = [
        ("status", refund.status.value),
        ("payment", str(refund.payment_id)),
        ("order", str(refund.order_id)),
        ("amount", str(refund.amount)),
        ("key", refund.idempotency_key),
        ("reason", refund.reason),
        ("operator", refund.operator),
        ("provider", refund.provider),
        *([("our reference", refund.our_reference)] if refund.our_reference else []),
        ("reference", refund.provider_reference or ""),
        ("transaction", refund.provider_transaction_id or ""),
        ("failure", refund.failure_reason or ""),
        ("created", when(refund.created_at)),
        ("updated", when(refund.updated_at)),
    ]
    body = field_lines(rows)
    if refund.status is RefundStatus.PENDING:
        body.append("\nnot settled by the provider yet: the worker asks again", style="dim")
    if replayed:
        body.append("\nreplayed: this key was used before; nothing new was refunded", style="dim")
    show(Panel(body, title=f"Refund {refund.id}", title_align="left", expand=False))


def payment_panel(
    payment: Payment, *, replayed: bool | None = None, refunds: Sequence[Refund] = ()
) -> None:
    rows = [
        ("status", payment.status.value),
        ("order", str(payment.order_id)),
        ("amount", str(payment.amount)),
        ("payer", payment.payer_phone),
        ("key", payment.idempotency_key),
        ("provider", payment.provider),
        *([("our reference", payment.our_reference)] if payment.our_reference else []),
        ("reference", payment.provider_reference or ""),
        ("transaction", payment.provider_transaction_id or ""),
        ("reason", payment.failure_reason or ""),
        ("created", when(payment.created_at)),
        ("updated", when(payment.updated_at)),
    ]
    if payment.awaiting_confirmation:
        rows.append(("note", f"failed without {payment.provider}'s word; it is still asked"))
    body = field_lines(rows)
    if replayed:
        body.append("\nreplayed: this key was used before; nothing new was charged", style="dim")
    content: RenderableType = body
    if refunds:
        content = Group(body, refunds_table(refunds, width() - 4))
    show(Panel(content, title=f"Payment {payment.id}", title_align="left", expand=False))


def key_values(title: str, values: dict[str, Any]) -> None:
    cells = [[name, "" if value is None else str(value)] for name, value in values.items()]
    show(fit(title, [E("setting", True), E("value", True, text=True)], cells, width=width()))


def settings_table(view: dict[str, dict[str, str | None]]) -> None:
    cells = [[name, shown["value"] or "", shown["source"] or ""] for name, shown in view.items()]
    columns = [E("setting", True), E("value", True, text=True), E("source", True)]
    show(fit("Configuration", columns, cells, width=width()))


def reconcile_table(
    results: Sequence[Check], title: str = "Reconciled", empty: str = "nothing to reconcile"
) -> None:
    columns = [
        E("payment", True),
        E("before", True),
        E("after", True),
        E("provider says", rank=1),
        E("order", rank=3),
        E("note", rank=2, text=True),
    ]
    cells = [
        [short(r.payment_id), r.before, r.after, r.remote, short(r.order_id), r.note]
        for r in results
    ]
    show(fit(title, columns, cells, width=width(), empty=empty))


def refund_reconcile_table(results: Sequence[Check], title: str = "Refunds") -> None:
    columns = [
        E("refund", True),
        E("before", True),
        E("after", True),
        E("provider says", rank=1),
        E("payment", rank=3),
        E("note", rank=2, text=True),
    ]
    cells = [
        [short(r.item_id), r.before, r.after, r.remote, short(r.payment_id), r.note]
        for r in results
    ]
    show(fit(title, columns, cells, width=width(), empty="no refunds to reconcile"))


def skipped_table(skipped: Sequence[Skipped]) -> None:
    columns = [E("kind", True), E("id", True), E("status", True), E("why", True, text=True)]
    cells = [[s.kind, short(s.item_id), s.status, s.why] for s in skipped]
    show(fit("Not asked", columns, cells, width=width(), empty="nothing skipped"))
