"""Customers: who orders and, by default, who pays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from orderpay.clock import utcnow
from orderpay.domain.phones import normalise_phone
from orderpay.domain.validation import clean_email, clean_name
from orderpay.errors import CustomerExists, CustomerNotFound, InvalidField, InvalidPhone
from orderpay.store.paging import Page, Window, page_of, windowed
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
    conn: Connection,
    *,
    name: str,
    phone: str,
    email: str | None,
    default_region: str,
    allow_duplicate: bool = False,
) -> Customer:
    """Validate and store a customer; the phone is kept in E.164. A phone that a customer
    already has is refused unless `allow_duplicate` (one person, one customer)."""
    e164 = normalise_phone(phone, default_region)
    values = {
        "name": clean_name(name),
        "phone": e164,
        "email": clean_email(email),
        "created_at": utcnow(),
    }
    if not allow_duplicate:
        _refuse_a_taken_phone(conn, e164, "to create another")
    row = conn.execute(insert(customers).values(**values).returning(*_COLUMNS)).one()
    return _from_row(row)


def _refuse_a_taken_phone(
    conn: Connection, phone: str, then: str, customer_id: int | None = None
) -> None:
    """CustomerExists when another customer (not `customer_id`) has `phone`."""
    query = select(customers.c.id).where(customers.c.phone == phone)
    if customer_id is not None:
        query = query.where(customers.c.id != customer_id)
    existing = conn.execute(query.limit(1)).first()
    if existing is not None:
        raise CustomerExists(
            f"customer {existing[0]} already has the phone {phone}; use it, or pass "
            f"--allow-duplicate {then}",
            customer=existing[0],
        )


def get_customer(conn: Connection, customer_id: int) -> Customer:
    if not 1 <= customer_id <= MAX_ID:
        raise CustomerNotFound(f"customer {customer_id} does not exist", customer=customer_id)
    row = conn.execute(select(*_COLUMNS).where(customers.c.id == customer_id)).first()
    if row is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist", customer=customer_id)
    return _from_row(row)


def list_customers(
    conn: Connection, window: Window, *, search: str | None = None, default_region: str = "GH"
) -> Page[Customer]:
    """A page of customers, newest first; `search` matches the name, the email, or the phone
    (written any way a phone is written: 024 123 4567, +233241234567, or its last digits)."""
    query = select(*_COLUMNS)
    if search is not None and search.strip():
        term = search.strip()
        matches = customers.c.name.icontains(term, autoescape=True) | customers.c.email.icontains(
            term, autoescape=True
        )
        digits = "".join(ch for ch in term if ch.isdigit())
        if len(digits) >= 3:
            matches = matches | customers.c.phone.contains(digits, autoescape=True)
            phone = _phone_or_none(term, default_region)
            if phone is not None:
                matches = matches | (customers.c.phone == phone)
        query = query.where(matches)
    query = windowed(query, customers.c.created_at, customers.c.id, window, int)
    rows = [_from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda c: (c.created_at, c.id))


def update_customer(
    conn: Connection,
    customer_id: int,
    *,
    name: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    default_region: str,
    allow_duplicate: bool = False,
) -> Customer:
    """Correct a customer's name, phone or email (an empty email removes it). A phone another
    customer has is refused, as on create, unless `allow_duplicate`."""
    get_customer(conn, customer_id)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = clean_name(name)
    if phone is not None:
        values["phone"] = normalise_phone(phone, default_region)
        if not allow_duplicate:
            _refuse_a_taken_phone(conn, values["phone"], "to give it this one too", customer_id)
    if email is not None:
        values["email"] = clean_email(email)
    if not values:
        raise InvalidField("nothing to change: give --name, --phone or --email")
    row = conn.execute(
        update(customers).where(customers.c.id == customer_id).values(**values).returning(*_COLUMNS)
    ).one()
    return _from_row(row)


def _phone_or_none(raw: str, default_region: str) -> str | None:
    try:
        return normalise_phone(raw, default_region)
    except InvalidPhone:
        return None
