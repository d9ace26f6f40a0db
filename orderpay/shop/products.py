"""Products: what a merchant sells, priced in minor units of one currency."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from orderpay.clock import utcnow
from orderpay.domain.money import Money, parse_amount
from orderpay.domain.validation import clean_name, has_unstorable_characters
from orderpay.errors import InvalidAmount, InvalidField, ProductNotFound
from orderpay.store.paging import Page, Window, page_of, windowed
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
    money = _price(price, currency)
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


def list_products(
    conn: Connection, window: Window, *, search: str | None = None, active: bool | None = None
) -> Page[Product]:
    """A page of products, newest first; `search` matches the name or description."""
    query = select(*_COLUMNS)
    if search is not None and search.strip():
        term = search.strip()
        query = query.where(
            products.c.name.icontains(term, autoescape=True)
            | products.c.description.icontains(term, autoescape=True)
        )
    if active is not None:
        query = query.where(products.c.active == active)
    query = windowed(query, products.c.created_at, products.c.id, window, uuid.UUID)
    rows = [_from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda p: (p.created_at, p.id))


def update_product(
    conn: Connection,
    product_id: uuid.UUID,
    *,
    name: str | None = None,
    price: str | None = None,
    active: bool | None = None,
) -> Product:
    """Rename, reprice (for orders made from now on: an order keeps its price) or
    (de)activate a product; an inactive product cannot be ordered."""
    current = get_product(conn, product_id)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = clean_name(name)
    if price is not None:
        values["price"] = _price(price, current.price.currency).minor_units
    if active is not None:
        values["active"] = active
    if not values:
        raise InvalidField("nothing to change: give --name, --price, --active or --inactive")
    row = conn.execute(
        update(products).where(products.c.id == product_id).values(**values).returning(*_COLUMNS)
    ).one()
    return _from_row(row)


def _price(raw: str, currency: str) -> Money:
    money = parse_amount(raw, currency)
    if money.minor_units <= 0:
        raise InvalidAmount(f"a price must be more than zero, not {money}", field="price")
    return money
