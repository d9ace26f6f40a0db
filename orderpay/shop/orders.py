"""Orders: creation with a computed total (once per idempotency key, when one is given), and
cancellation by the operator."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from orderpay.domain.idempotency import check_key, order_fingerprint
from orderpay.domain.money import MAX_MINOR_UNITS, Money
from orderpay.domain.states import OPEN_PAYMENT_STATUSES, PAID_ORDER_STATUSES, OrderStatus
from orderpay.errors import (
    ConcurrentUpdate,
    CurrencyMismatch,
    IdempotencyKeyReused,
    InvalidAmount,
    InvalidField,
    InvalidQuantity,
    OrderAlreadyPaid,
    OrderNotFound,
    PaymentInProgress,
    ProductInactive,
    ProductNotFound,
)
from orderpay.shop.customers import get_customer
from orderpay.shop.products import get_products
from orderpay.store import locks
from orderpay.store.orders import Order, insert_order, move_order, order_of_key
from orderpay.store.schema import payments

MAX_ITEMS = 100
MAX_QUANTITY = 1_000_000


def check_quantity(quantity: int) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidQuantity(f"quantity {quantity!r} is not a whole number")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidQuantity(f"quantity must be between 1 and {MAX_QUANTITY}, not {quantity}")
    return quantity


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order: Order
    replayed: bool  # the key's earlier request made it; nothing was written this time


def create_order(
    conn: Connection, *, customer_id: int, items: Sequence[tuple[uuid.UUID, int]]
) -> Order:
    """Create a pending order; its total is computed from the products' current prices."""
    return place_order(conn, customer_id=customer_id, items=items, key=None).order


def place_order(
    conn: Connection,
    *,
    customer_id: int,
    items: Sequence[tuple[uuid.UUID, int]],
    key: str | None,
) -> PlacedOrder:
    """Create a pending order, at most once per idempotency key `key` (None: no key).

    The same key asking for the same thing (customer, products and quantities) gets the order
    it made, as it is now; asking for anything else, idempotency_key_reused. The key is looked
    up before the products are, so a replay succeeds even once a product is no longer sold.
    """
    if key is not None:
        check_key(key)
    quantities = _quantities(items)
    if key is None:
        made = _insert(conn, customer_id, quantities, key=None)
        assert made is not None, "an order without a key conflicts with none"
        return PlacedOrder(made, replayed=False)
    fingerprint = order_fingerprint(customer_id, quantities)
    earlier = order_of_key(conn, key)
    if earlier is None:
        made = _insert(conn, customer_id, quantities, key=(key, fingerprint))
        if made is not None:
            return PlacedOrder(made, replayed=False)
        # A concurrent request with this key committed its order first: the insert waited
        # for it, so it is there to read now, unless it was deleted in between.
        earlier = order_of_key(conn, key)
        if earlier is None:
            raise ConcurrentUpdate("the order of this idempotency key changed meanwhile; retry")
    order, stored = earlier
    if stored != fingerprint:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different order "
            "(another customer, products or quantities); use a new key",
            order=str(order.id),
        )
    return PlacedOrder(order, replayed=True)


def _quantities(items: Sequence[tuple[uuid.UUID, int]]) -> dict[uuid.UUID, int]:
    """Each product's quantity, lines of one product added up; refuse what no order holds."""
    if not items:
        raise InvalidField("an order needs at least one item", field="items")
    if len(items) > MAX_ITEMS:
        raise InvalidField(f"an order holds at most {MAX_ITEMS} items", field="items")
    quantities: dict[uuid.UUID, int] = {}
    for product_id, quantity in items:
        quantities[product_id] = quantities.get(product_id, 0) + check_quantity(quantity)
        check_quantity(quantities[product_id])
    return quantities


def _insert(
    conn: Connection,
    customer_id: int,
    quantities: dict[uuid.UUID, int],
    *,
    key: tuple[str, str] | None,
) -> Order | None:
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

    money = Money(total, currency)
    lines, units = len(quantities), sum(quantities.values())
    return insert_order(
        conn,
        customer_id=customer.id,
        total=money,
        lines=[(pid, qty, found[pid].price.minor_units) for pid, qty in quantities.items()],
        detail=f"{_count(lines, 'product')} ({_count(units, 'unit')}), total {money}",
        key=key,
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def cancel_order(conn: Connection, order_id: uuid.UUID, *, operator: str | None = None) -> Order:
    """Cancel a pending order with no payment in flight. Cancelling twice is harmless.
    `operator`: who cancels (Settings.operator_name), recorded in the order events."""
    order = locks.lock_order(conn, order_id)
    if order is None:
        raise OrderNotFound(f"order {order_id} does not exist", order=str(order_id))
    if order.status is OrderStatus.CANCELLED:
        return order
    if order.status in PAID_ORDER_STATUSES:
        raise OrderAlreadyPaid(f"order {order_id} is {order.status}; it cannot be cancelled")
    in_flight = conn.execute(
        select(payments.c.id).where(
            payments.c.order_id == order_id,
            payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES]),
        )
    ).first()
    if in_flight is not None:
        raise PaymentInProgress(
            f"order {order_id} has payment {in_flight.id} in flight; wait for its outcome, "
            f"or cancel the payment (`orderpay payment cancel {in_flight.id}`)",
            payment=str(in_flight.id),
        )
    return move_order(
        conn,
        order,
        OrderStatus.CANCELLED,
        "order_cancelled",
        "by the operator",
        operator=operator,
    )
