"""Orders: the one module that writes orders and order_items (DESIGN.md section 1), and
orders as read back with their items, payments, notifications and events.

Each status change is a compare-and-set that writes its order event; a payment's success
marks its order paid in the settling statement of store/ledger.py (`paid_from`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Row, Update, bindparam, insert, select, update

from orderpay.clock import utcnow
from orderpay.domain.money import Money
from orderpay.domain.states import OrderStatus, order_can_move
from orderpay.errors import ConcurrentUpdate, OrderNotFound
from orderpay.store import order_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.notifications import Notification, notifications_of
from orderpay.store.order_events import OrderEvent, events_of
from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.payments import Payment, payments_of
from orderpay.store.refund_rows import Refund
from orderpay.store.refunds import refunds_of
from orderpay.store.schema import customers, order_items, orders, products


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
    name: str  # the product's name now (a product keeps its id when renamed)
    quantity: int
    unit_price: Money  # the price when the order was made

    @property
    def line_total(self) -> Money:
        return Money(self.unit_price.minor_units * self.quantity, self.unit_price.currency)


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: Order
    customer_name: str
    customer_phone: str
    items: list[OrderItem]
    payments: list[Payment]
    notifications: list[Notification]
    events: list[OrderEvent]
    refunds: list[Refund] = field(default_factory=list)


COLUMNS = (
    orders.c.id,
    orders.c.customer_id,
    orders.c.status,
    orders.c.total,
    orders.c.currency,
    orders.c.created_at,
    orders.c.updated_at,
)


# The columns order_from_row reads, by key: a row may hold them in any order, among others.
_FIELDS = itemgetter("id", "customer_id", "status", "total", "currency", "created_at", "updated_at")


def order_from_row(row: Row[*tuple[Any, ...]]) -> Order:
    """The order in a row that holds COLUMNS, read by column key, so that a column added to
    or moved in a statement cannot shift the values."""
    oid, customer_id, status, total, currency, created_at, updated_at = _FIELDS(row._mapping)
    return Order(
        oid, customer_id, OrderStatus(status), Money(total, currency), created_at, updated_at
    )


def get_order(conn: Connection, order_id: uuid.UUID, *, lock: str | None = None) -> Order:
    """One order; `lock` is None, 'share' (FOR SHARE) or 'update' (FOR UPDATE)."""
    query = select(*COLUMNS).where(orders.c.id == order_id)
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    row = conn.execute(query).first()
    if row is None:
        raise OrderNotFound(f"order {order_id} does not exist", order=str(order_id))
    return order_from_row(row)


def get_order_detail(conn: Connection, order_id: uuid.UUID) -> OrderDetail:
    return details_of(conn, [get_order(conn, order_id)])[0]


def details_of(conn: Connection, batch: Sequence[Order]) -> list[OrderDetail]:
    """Orders with their customer, items, payments, refunds, notifications and events, in
    six queries."""
    ids = [order.id for order in batch]
    items: dict[uuid.UUID, list[OrderItem]] = {oid: [] for oid in ids}
    rows = conn.execute(
        select(
            order_items.c.order_id,
            order_items.c.product_id,
            products.c.name,
            order_items.c.quantity,
            order_items.c.unit_price,
            orders.c.currency,
        )
        .join(orders, orders.c.id == order_items.c.order_id)
        .join(products, products.c.id == order_items.c.product_id)
        .where(order_items.c.order_id.in_(ids))
        .order_by(order_items.c.id)
    )
    for item in rows.mappings():
        items[item["order_id"]].append(
            OrderItem(
                product_id=item["product_id"],
                name=item["name"],
                quantity=item["quantity"],
                unit_price=Money(item["unit_price"], item["currency"]),
            )
        )
    customer_ids = {order.customer_id for order in batch}
    who = {
        customer["id"]: (customer["name"], customer["phone"])
        for customer in conn.execute(
            select(customers.c.id, customers.c.name, customers.c.phone).where(
                customers.c.id.in_(customer_ids)
            )
        ).mappings()
    }
    payment_rows: dict[uuid.UUID, list[Payment]] = {oid: [] for oid in ids}
    for payment in payments_of(conn, ids):
        payment_rows[payment.order_id].append(payment)
    notification_rows: dict[uuid.UUID, list[Notification]] = {oid: [] for oid in ids}
    for notification in notifications_of(conn, ids):
        notification_rows[notification.order_id].append(notification)
    events = events_of(conn, ids)
    refund_rows: dict[uuid.UUID, list[Refund]] = {oid: [] for oid in ids}
    for refund in refunds_of(conn, ids):
        refund_rows[refund.order_id].append(refund)
    return [
        OrderDetail(
            order=order,
            customer_name=who[order.customer_id][0],
            customer_phone=who[order.customer_id][1],
            items=items[order.id],
            payments=payment_rows[order.id],
            notifications=notification_rows[order.id],
            events=events.get(order.id, []),
            refunds=refund_rows[order.id],
        )
        for order in batch
    ]


def list_orders(
    conn: Connection,
    window: Window,
    *,
    status: OrderStatus | None = None,
    customer_id: int | None = None,
    phone: str | None = None,
) -> Page[Order]:
    """A page of orders, newest first; `phone` (E.164) matches the customer's phone."""
    query = select(*COLUMNS)
    if status is not None:
        query = query.where(orders.c.status == status.value)
    if customer_id is not None:
        query = query.where(orders.c.customer_id == customer_id)
    if phone is not None:
        query = query.join(customers, customers.c.id == orders.c.customer_id).where(
            customers.c.phone == phone
        )
    query = windowed(query, orders.c.created_at, orders.c.id, window, uuid.UUID)
    rows = [order_from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda o: (o.created_at, o.id))


# --- Writes -----------------------------------------------------------------------------------


_BY_KEY = select(*COLUMNS, orders.c.fingerprint).where(
    orders.c.idempotency_key == bindparam("b_key")
)
# A concurrent insert of the same key waits for the first to end, then inserts nothing: the
# loser reads the winner's order instead of failing on the unique constraint.
_INSERT = InsertIgnoring(orders, ["idempotency_key"], orders.c.id)


def order_of_key(conn: Connection, key: str) -> tuple[Order, str] | None:
    """The order made with this idempotency key, and the fingerprint of what it asked for."""
    row = conn.execute(_BY_KEY, {"b_key": key}).first()
    return None if row is None else (order_from_row(row), row.fingerprint)


def insert_order(
    conn: Connection,
    *,
    customer_id: int,
    total: Money,
    lines: Sequence[tuple[uuid.UUID, int, int]],
    detail: str,
    key: tuple[str, str] | None = None,
) -> Order | None:
    """A new pending order with its lines (product, quantity, unit price) and order event.
    `key`: the idempotency key and fingerprint to store with it; None when another order
    holds that key already (and nothing was written)."""
    now = utcnow()
    order_id = uuid.uuid4()
    idempotency_key, fingerprint = key if key is not None else (None, None)
    inserted = conn.execute(
        _INSERT(conn),
        {
            "id": order_id,
            "customer_id": customer_id,
            "status": OrderStatus.PENDING.value,
            "currency": total.currency,
            "total": total.minor_units,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint,
            "created_at": now,
            "updated_at": now,
        },
    ).first()
    if inserted is None:
        return None
    conn.execute(
        insert(order_items),
        [
            {"order_id": order_id, "product_id": pid, "quantity": qty, "unit_price": price}
            for pid, qty, price in lines
        ],
    )
    order_events.record_event(conn, order_id, "order_created", detail, at=now)
    return Order(order_id, customer_id, OrderStatus.PENDING, total, now, now)


def move_order(
    conn: Connection,
    order: Order,
    target: OrderStatus,
    event: str,
    detail: str = "",
    *,
    operator: str | None = None,
) -> Order:
    """Compare-and-set the order's status and write the order event (`operator`: who)."""
    if not order_can_move(order.status, target):
        raise ValueError(f"order transition {order.status} -> {target} is not allowed")
    now = utcnow()
    row = conn.execute(
        update(orders)
        .where(orders.c.id == order.id, orders.c.status == order.status.value)
        .values(status=target.value, updated_at=now)
        .returning(*COLUMNS)
    ).first()
    if row is None:
        raise ConcurrentUpdate(f"order {order.id} changed while it was being updated; retry")
    order_events.record_event(conn, order.id, event, detail, at=now, operator=operator)
    return order_from_row(row)


_MARK_PAID = (
    update(orders)
    .where(orders.c.id == bindparam("b_id"), orders.c.status == OrderStatus.PENDING.value)
    .values(status=OrderStatus.PAID.value, updated_at=bindparam("v_now"))
)


def paid_from(order_id: Any, *conditions: Any, now: Any) -> Update:
    """Mark orders paid as part of a larger Postgres statement: each pending order `order_id`
    names (a column of a CTE the statement joins) where `conditions` hold."""
    return (
        update(orders)
        .where(orders.c.id == order_id, orders.c.status == OrderStatus.PENDING.value, *conditions)
        .values(status=OrderStatus.PAID.value, updated_at=now)
    )


def mark_paid(conn: Connection, order_id: uuid.UUID, now: datetime) -> None:
    """A pending order paid (its payment succeeded: the caller writes the order event)."""
    conn.execute(_MARK_PAID, {"b_id": order_id, "v_now": now})
