"""Products: what a merchant sells, priced in minor units of one currency."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from orderpay.clock import utcnow
from orderpay.domain.money import Money, parse_amount
from orderpay.domain.validation import clean_name, has_unstorable_characters
from orderpay.errors import InvalidField, ProductNotFound
from orderpay.store.schema import products

MAX_DESCRIPTION_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Product:
    id: uuid.UUID
    name: str
    description: str
    price: Money
    active: bool
    created_at: datetime


_COLUMNS = (
    products.c.id,
    products.c.name,
    products.c.description,
    products.c.price,
    products.c.currency,
    products.c.active,
    products.c.created_at,
)


def _from_row(row: Sequence[Any]) -> Product:
    pid, name, description, price, currency, active, created_at = row
    return Product(pid, name, description, Money(price, currency), active, created_at)


def create_product(
    conn: Connection, *, name: str, price: str, currency: str, description: str = ""
) -> Product:
    """Store a product; `price` is a major-unit decimal string parsed exactly."""
    money = parse_amount(price, currency)
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidField(f"description is longer than {MAX_DESCRIPTION_LENGTH} characters")
    if has_unstorable_characters(description.replace("\n", " ").replace("\t", " ")):
        raise InvalidField("description must not contain control characters", field="description")
    values = {
        "id": uuid.uuid4(),
        "name": clean_name(name),
        "description": description.strip(),
        "price": money.minor_units,
        "currency": money.currency,
        "active": True,
        "created_at": utcnow(),
    }
    row = conn.execute(insert(products).values(**values).returning(*_COLUMNS)).one()
    return _from_row(row)


def get_product(conn: Connection, product_id: uuid.UUID) -> Product:
    row = conn.execute(select(*_COLUMNS).where(products.c.id == product_id)).first()
    if row is None:
        raise ProductNotFound(f"product {product_id} does not exist", product=str(product_id))
    return _from_row(row)


def get_products(conn: Connection, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Product]:
    rows = conn.execute(select(*_COLUMNS).where(products.c.id.in_(product_ids)))
    return {product.id: product for product in map(_from_row, rows)}


def list_products(conn: Connection, *, limit: int = 100) -> list[Product]:
    rows = conn.execute(select(*_COLUMNS).order_by(products.c.created_at.desc()).limit(limit))
    return [_from_row(row) for row in rows]
