"""Test data with memorable defaults, made through the service layer."""

from __future__ import annotations

import uuid

from orderpay.shop.customers import Customer, create_customer
from orderpay.shop.orders import create_order
from orderpay.shop.products import Product, create_product
from orderpay.store.db import Database
from orderpay.store.orders import Order

AMA = "+233241234567"
MTN_SANDBOX_PAYER = "+46733123499"  # an MTN sandbox number that simply succeeds


def a_customer(db: Database, *, name: str = "Ama Mensah", phone: str = AMA) -> Customer:
    with db.transaction() as conn:
        return create_customer(
            conn, name=name, phone=phone, email=None, default_region="GH", allow_duplicate=True
        )


def a_product(
    db: Database, *, name: str = "Kenkey", price: str = "12.50", currency: str = "GHS"
) -> Product:
    with db.transaction() as conn:
        return create_product(conn, name=name, price=price, currency=currency)


def an_order(
    db: Database,
    *,
    phone: str = AMA,
    price: str = "12.50",
    currency: str = "GHS",
    quantity: int = 2,
    product: str = "Kenkey",
) -> Order:
    """A pending order for one product; 2 x 12.50 GHS = 25.00 GHS by default."""
    customer = a_customer(db, phone=phone)
    made = a_product(db, name=product, price=price, currency=currency)
    with db.transaction() as conn:
        return create_order(conn, customer_id=customer.id, items=[(made.id, quantity)])


def a_key() -> str:
    return f"test-{uuid.uuid4()}"
