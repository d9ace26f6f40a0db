"""Customers: who orders and, by default, who pays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from orderpay.clock import utcnow
from orderpay.domain.phones import normalise_phone
from orderpay.domain.validation import clean_email, clean_name
from orderpay.errors import CustomerNotFound
from orderpay.store.schema import customers

MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str
    phone: str
    email: str | None
    created_at: datetime


def _from_row(row: Sequence[Any]) -> Customer:
    return Customer(*row)


_COLUMNS = (
    customers.c.id,
    customers.c.name,
    customers.c.phone,
    customers.c.email,
    customers.c.created_at,
)


def create_customer(
    conn: Connection, *, name: str, phone: str, email: str | None, default_region: str
) -> Customer:
    """Validate and store a customer; the phone is kept in E.164."""
    values = {
        "name": clean_name(name),
        "phone": normalise_phone(phone, default_region),
        "email": clean_email(email),
        "created_at": utcnow(),
    }
    row = conn.execute(insert(customers).values(**values).returning(*_COLUMNS)).one()
    return _from_row(row)


def get_customer(conn: Connection, customer_id: int) -> Customer:
    if not 1 <= customer_id <= MAX_ID:
        raise CustomerNotFound(f"customer {customer_id} does not exist", customer=customer_id)
    row = conn.execute(select(*_COLUMNS).where(customers.c.id == customer_id)).first()
    if row is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist", customer=customer_id)
    return _from_row(row)


def list_customers(conn: Connection, *, limit: int = 100) -> list[Customer]:
    rows = conn.execute(select(*_COLUMNS).order_by(customers.c.id.desc()).limit(limit))
    return [_from_row(row) for row in rows]
