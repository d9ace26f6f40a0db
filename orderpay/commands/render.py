"""Human output for the CLI: rich tables and panels on stdout. JSON lives in shapes.py."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from orderpay.shop.customers import Customer
from orderpay.shop.products import Product
from orderpay.store.notifications import Notification
from orderpay.store.orders import Order, OrderDetail
from orderpay.store.payments import Payment
from orderpay.store.timeline import OrderEvent

if TYPE_CHECKING:
    from orderpay.payments.confirmation import Confirmation

STATUS_STYLES = {
    "pending": "yellow",
    "initiated": "yellow",
    "paid": "green",
    "succeeded": "green",
    "sent": "green",
    "delivered": "green",
    "failed": "red",
    "undelivered": "red",
    "cancelled": "dim",
}


def console() -> Console:
    # Wide when piped, so ids are never cut; rich still fits a real terminal.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def status(value: str) -> str:
    style = STATUS_STYLES.get(value, "")
    return f"[{style}]{value}[/{style}]" if style else value


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in {"id", "order", "payment"})
    return table


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def customers_table(rows: Sequence[Customer], title: str = "Customers") -> None:
    table = _table(title, "id", "name", "phone", "email", "created")
    for c in rows:
        table.add_row(str(c.id), c.name, c.phone, c.email or "", _when(c.created_at))
    console().print(table)


def products_table(rows: Sequence[Product], title: str = "Products") -> None:
    table = _table(title, "id", "name", "price", "active", "created")
    for p in rows:
        table.add_row(
            str(p.id), p.name, str(p.price), "yes" if p.active else "no", _when(p.created_at)
        )
    console().print(table)


def orders_table(rows: Sequence[Order], title: str = "Orders") -> None:
    table = _table(title, "id", "status", "total", "customer", "created")
    for o in rows:
        table.add_row(
            str(o.id), status(o.status.value), str(o.total), str(o.customer_id), _when(o.created_at)
        )
    console().print(table)


def payments_table(rows: Sequence[Payment], title: str = "Payments") -> None:
    table = _table(title, "id", "order", "status", "amount", "payer", "key", "reason", "created")
    for p in rows:
        table.add_row(
            str(p.id), str(p.order_id), status(p.status.value), str(p.amount), p.payer_phone,
            p.idempotency_key, p.failure_reason or "", _when(p.created_at),
        )  # fmt: skip
    console().print(table)


def notifications_table(rows: Sequence[Notification], title: str = "Notifications") -> None:
    table = _table(
        title, "id", "order", "kind", "channel", "recipient", "status", "attempts", "last error"
    )
    for n in rows:
        table.add_row(
            str(n.id), str(n.order_id), n.kind, n.channel, n.recipient, status(n.status.value),
            str(n.attempts), n.last_error or "",
        )  # fmt: skip
    console().print(table)


def timeline_table(events: Iterable[OrderEvent]) -> Table:
    table = _table("Timeline", "at", "event", "detail")
    for e in events:
        table.add_row(_when(e.at), e.event, e.detail)
    return table


def order_panel(detail: OrderDetail) -> None:
    order = detail.order
    items = _table("Items", "product", "quantity", "unit price")
    for item in detail.items:
        items.add_row(str(item.product_id), str(item.quantity), str(item.unit_price))
    summary = (
        f"status [b]{status(order.status.value)}[/b]   total [b]{order.total}[/b]   "
        f"customer {order.customer_id}\ncreated {_when(order.created_at)}   "
        f"updated {_when(order.updated_at)}"
    )
    parts: list[Any] = [summary, items]
    if detail.payments:
        payments = _table("Payments", "id", "status", "amount", "payer", "key", "reason")
        for p in detail.payments:
            payments.add_row(
                str(p.id), status(p.status.value), str(p.amount), p.payer_phone,
                p.idempotency_key, p.failure_reason or "",
            )  # fmt: skip
        parts.append(payments)
    if detail.notifications:
        notes = _table("Notifications", "id", "channel", "recipient", "status", "attempts")
        for n in detail.notifications:
            notes.add_row(
                str(n.id), n.channel, n.recipient, status(n.status.value), str(n.attempts)
            )
        parts.append(notes)
    parts.append(timeline_table(detail.events))
    console().print(
        Panel(Group(*parts), title=f"Order {order.id}", title_align="left", expand=False)
    )


def payment_panel(payment: Payment, *, replayed: bool | None = None) -> None:
    lines = [
        f"status     {status(payment.status.value)}",
        f"order      {payment.order_id}",
        f"amount     {payment.amount}",
        f"payer      {payment.payer_phone}",
        f"key        {payment.idempotency_key}",
        f"provider   {payment.provider} {payment.provider_reference or ''}".rstrip(),
        f"provider transaction  {payment.provider_transaction_id or '-'}",
    ]
    if payment.failure_reason:
        lines.append(f"reason     {payment.failure_reason}")
    lines.append(f"created    {_when(payment.created_at)}")
    if replayed:
        lines.append("[dim]replayed: this key was used before; nothing new was charged[/dim]")
    console().print(
        Panel("\n".join(lines), title=f"Payment {payment.id}", title_align="left", expand=False)
    )


def key_values(title: str, values: dict[str, Any]) -> None:
    table = _table(title, "setting", "value")
    for name, value in values.items():
        table.add_row(name, "" if value is None else str(value))
    console().print(table)


def settings_table(view: dict[str, dict[str, str | None]]) -> None:
    table = _table("Configuration", "setting", "value", "source")
    for name, shown in view.items():
        table.add_row(name, shown["value"] or "", shown["source"] or "")
    console().print(table)


def reconcile_table(results: Sequence[Confirmation]) -> None:
    table = _table("Reconciled", "payment", "order", "before", "after", "provider says", "note")
    for r in results:
        table.add_row(
            str(r.payment_id), str(r.order_id), status(r.before.value), status(r.after.value),
            r.remote, r.note,
        )  # fmt: skip
    console().print(table)
