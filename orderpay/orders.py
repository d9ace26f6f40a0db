"""Orders: creation with a computed total, reads, the timeline and cancellation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from orderpay.clock import utcnow
from orderpay.customers import get_customer
from orderpay.errors import (
    ConcurrentUpdate,
    CurrencyMismatch,
    InvalidAmount,
    InvalidField,
    InvalidQuantity,
    OrderAlreadyPaid,
    OrderNotFound,
    PaymentInProgress,
    ProductInactive,
    ProductNotFound,
)
from orderpay.models import customers, order_items, orders, payments
from orderpay.money import MAX_MINOR_UNITS, Money
from orderpay.notifications import Notification, notifications_of
from orderpay.payments import Payment, payments_of
from orderpay.products import get_products
from orderpay.states import OPEN_PAYMENT_STATUSES, OrderStatus, order_can_move
from orderpay.timeline import OrderEvent, events_of, record_event

MAX_ITEMS = 100
MAX_QUANTITY = 1_000_000


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    customer_id: int
    status: OrderStatus
    total: Money
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: uuid.UUID
    quantity: int
    unit_price: Money


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: Order
    items: list[OrderItem]
    payments: list[Payment]
    notifications: list[Notification]
    events: list[OrderEvent]


_COLUMNS = (
    orders.c.id,
    orders.c.customer_id,
    orders.c.status,
    orders.c.total,
    orders.c.currency,
    orders.c.created_at,
    orders.c.updated_at,
)


def _from_row(row: Sequence[Any]) -> Order:
    oid, customer_id, status, total, currency, created_at, updated_at = row
    return Order(
        oid, customer_id, OrderStatus(status), Money(total, currency), created_at, updated_at
    )


def check_quantity(quantity: int) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidQuantity(f"quantity {quantity!r} is not a whole number")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidQuantity(f"quantity must be between 1 and {MAX_QUANTITY}, not {quantity}")
    return quantity


def create_order(
    conn: Connection, *, customer_id: int, items: Sequence[tuple[uuid.UUID, int]]
) -> Order:
    """Create a pending order; its total is computed from the products' current prices."""
    if not items:
        raise InvalidField("an order needs at least one item", field="items")
    if len(items) > MAX_ITEMS:
        raise InvalidField(f"an order holds at most {MAX_ITEMS} items", field="items")
    quantities: dict[uuid.UUID, int] = {}
    for product_id, quantity in items:
        quantities[product_id] = quantities.get(product_id, 0) + check_quantity(quantity)
        check_quantity(quantities[product_id])

    customer = get_customer(conn, customer_id)
    found = get_products(conn, list(quantities))
    for product_id in quantities:
        if product_id not in found:
            raise ProductNotFound(f"product {product_id} does not exist", product=str(product_id))
        if not found[product_id].active:
            raise ProductInactive(f"product {product_id} is no longer sold")
    currencies = {product.price.currency for product in found.values()}
    if len(currencies) > 1:
        raise CurrencyMismatch(
            f"an order's items must share one currency, not {', '.join(sorted(currencies))}"
        )
    currency = currencies.pop()
    total = sum(found[pid].price.minor_units * qty for pid, qty in quantities.items())
    if total > MAX_MINOR_UNITS:
        raise InvalidAmount("the order's total is larger than orderpay accepts")

    now = utcnow()
    order_id = uuid.uuid4()
    conn.execute(
        insert(orders).values(
            id=order_id,
            customer_id=customer.id,
            status=OrderStatus.PENDING.value,
            currency=currency,
            total=total,
            created_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        insert(order_items),
        [
            {
                "order_id": order_id,
                "product_id": pid,
                "quantity": qty,
                "unit_price": found[pid].price.minor_units,
            }
            for pid, qty in quantities.items()
        ],
    )
    money = Money(total, currency)
    count = sum(quantities.values())
    record_event(
        conn, order_id, "order_created", f"{count} item{'s' if count != 1 else ''}, total {money}",
        at=now,
    )  # fmt: skip
    return Order(order_id, customer.id, OrderStatus.PENDING, money, now, now)


def get_order(conn: Connection, order_id: uuid.UUID, *, lock: str | None = None) -> Order:
    """One order; `lock` is None, 'share' (FOR SHARE) or 'update' (FOR UPDATE)."""
    query = select(*_COLUMNS).where(orders.c.id == order_id)
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    row = conn.execute(query).first()
    if row is None:
        raise OrderNotFound(f"order {order_id} does not exist", order=str(order_id))
    return _from_row(row)


def get_order_detail(conn: Connection, order_id: uuid.UUID) -> OrderDetail:
    return details_of(conn, [get_order(conn, order_id)])[0]


def details_of(conn: Connection, batch: Sequence[Order]) -> list[OrderDetail]:
    """Orders with their items, payments, notifications and timeline, in four queries."""
    ids = [order.id for order in batch]
    items: dict[uuid.UUID, list[OrderItem]] = {oid: [] for oid in ids}
    rows = conn.execute(
        select(order_items.c.order_id, order_items.c.product_id, order_items.c.quantity,
               order_items.c.unit_price, orders.c.currency)
        .join(orders, orders.c.id == order_items.c.order_id)
        .where(order_items.c.order_id.in_(ids))
        .order_by(order_items.c.id)
    )  # fmt: skip
    for oid, pid, qty, price, currency in rows:
        items[oid].append(OrderItem(pid, qty, Money(price, currency)))
    payment_rows: dict[uuid.UUID, list[Payment]] = {oid: [] for oid in ids}
    for payment in payments_of(conn, ids):
        payment_rows[payment.order_id].append(payment)
    notification_rows: dict[uuid.UUID, list[Notification]] = {oid: [] for oid in ids}
    for notification in notifications_of(conn, ids):
        notification_rows[notification.order_id].append(notification)
    events = events_of(conn, ids)
    return [
        OrderDetail(
            order=order,
            items=items[order.id],
            payments=payment_rows[order.id],
            notifications=notification_rows[order.id],
            events=events.get(order.id, []),
        )
        for order in batch
    ]


def list_orders(
    conn: Connection,
    *,
    status: OrderStatus | None = None,
    customer_id: int | None = None,
    phone: str | None = None,
    limit: int = 50,
) -> list[Order]:
    """Newest first; `phone` (E.164) matches the customer's phone."""
    query = select(*_COLUMNS).order_by(orders.c.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(orders.c.status == status.value)
    if customer_id is not None:
        query = query.where(orders.c.customer_id == customer_id)
    if phone is not None:
        query = query.join(customers, customers.c.id == orders.c.customer_id).where(
            customers.c.phone == phone
        )
    return [_from_row(row) for row in conn.execute(query)]


def cancel_order(conn: Connection, order_id: uuid.UUID) -> Order:
    """Cancel a pending order with no payment in flight. Cancelling twice is harmless."""
    order = get_order(conn, order_id, lock="update")
    if order.status is OrderStatus.CANCELLED:
        return order
    if order.status is OrderStatus.PAID:
        raise OrderAlreadyPaid(f"order {order_id} is paid; it cannot be cancelled")
    in_flight = conn.execute(
        select(payments.c.id).where(
            payments.c.order_id == order_id,
            payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES]),
        )
    ).first()
    if in_flight is not None:
        raise PaymentInProgress(
            f"order {order_id} has payment {in_flight.id} in flight; wait for its outcome "
            "or run `orderpay reconcile` before cancelling",
            payment=str(in_flight.id),
        )
    return move_order(conn, order, OrderStatus.CANCELLED, "order_cancelled", "by the operator")


def move_order(
    conn: Connection, order: Order, target: OrderStatus, event: str, detail: str = ""
) -> Order:
    """Compare-and-set the order's status and write the timeline row."""
    if not order_can_move(order.status, target):
        raise ValueError(f"order transition {order.status} -> {target} is not allowed")
    now = utcnow()
    row = conn.execute(
        update(orders)
        .where(orders.c.id == order.id, orders.c.status == order.status.value)
        .values(status=target.value, updated_at=now)
        .returning(*_COLUMNS)
    ).first()
    if row is None:
        raise ConcurrentUpdate(f"order {order.id} changed while it was being updated; retry")
    record_event(conn, order.id, event, detail, at=now)
    return _from_row(row)
