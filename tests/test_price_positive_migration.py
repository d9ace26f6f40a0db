"""Migration 0003_price_positive: a product's price is more than zero (DESIGN.md section 3).

A database made before it may hold products priced 0 (orders of which total 0 and can never
be charged). The upgrade keeps them, deactivated, at the smallest unit, with a note in their
description asking for a real price; orders already made keep their own unit prices. Run on
both databases, with rows that refer to the products (SQLite rebuilds the table to change a
constraint).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import exc, insert, select

from orderpay.store.db import Database
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.schema import order_items, orders, products
from tests.builders import a_customer
from tests.conftest import Cli, count_rows

BEFORE = "0002_ledger_integrity"
THIS = "0003_price_positive"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def a_product_row(db: Database, price: int, description: str = "") -> uuid.UUID:
    """A product written as the code before 0003 could write it (the services now refuse 0)."""
    product_id = uuid.uuid4()
    with db.transaction() as conn:
        conn.execute(
            insert(products).values(
                id=product_id,
                name="Kɔkɔɔ",
                description=description,
                price=price,
                currency="GHS",
                active=True,
                created_at=NOW,
            )
        )
    return product_id


def an_order_row(db: Database, customer_id: int, product_id: uuid.UUID, quantity: int) -> uuid.UUID:
    """A pending order of a product priced 0, written as the code before 0003 could write it
    (today's services would also write columns later revisions added)."""
    order_id = uuid.uuid4()
    with db.transaction() as conn:
        conn.execute(
            insert(orders).values(
                id=order_id,
                customer_id=customer_id,
                status="pending",
                currency="GHS",
                total=0,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(order_items).values(
                order_id=order_id, product_id=product_id, quantity=quantity, unit_price=0
            )
        )
    return order_id


def product(db: Database, product_id: uuid.UUID) -> Any:
    with db.transaction() as conn:
        return conn.execute(
            select(products.c.price, products.c.active, products.c.description).where(
                products.c.id == product_id
            )
        ).one()


@pytest.fixture
def old_db(any_db: Database) -> Database:
    """A database at the revision before 0003."""
    downgrade(any_db, BEFORE)
    assert any_db.current_revision() == BEFORE
    return any_db


def test_upgrading_deactivates_a_product_priced_zero_and_says_why_in_its_description(
    old_db: Database,
) -> None:
    free = a_product_row(old_db, price=0, description="Cocoa balls")

    upgrade(old_db)

    price, active, description = product(old_db, free)
    assert (price, active) == (1, False)
    assert description.startswith("Cocoa balls\n\n")
    assert "was priced 0" in description
    assert "orderpay product update" in description


def test_upgrading_leaves_products_priced_above_zero_as_they_were(old_db: Database) -> None:
    priced = a_product_row(old_db, price=1250, description="Kenkey and fish")

    upgrade(old_db)

    assert tuple(product(old_db, priced)) == (1250, True, "Kenkey and fish")


@pytest.mark.slow
def test_upgrading_keeps_the_orders_already_made_of_a_zero_priced_product(
    old_db: Database,
) -> None:
    free = a_product_row(old_db, price=0)
    customer = a_customer(old_db)
    order = an_order_row(old_db, customer.id, free, 2)
    rows = count_rows(old_db)

    before, after = upgrade(old_db, THIS)

    assert (before, after) == (BEFORE, THIS)
    assert count_rows(old_db) == rows
    with old_db.transaction() as conn:
        items = conn.execute(
            select(
                order_items.c.product_id, order_items.c.quantity, order_items.c.unit_price
            ).where(order_items.c.order_id == order)
        ).all()
    assert [tuple(item) for item in items] == [(free, 2, 0)]


@pytest.mark.slow
def test_an_order_made_before_the_upgrade_that_totals_zero_still_cannot_be_charged(
    old_db: Database, any_cli: Cli
) -> None:
    free = a_product_row(old_db, price=0)
    customer = a_customer(old_db)
    order = an_order_row(old_db, customer.id, free, 2)
    upgrade(old_db)
    before = count_rows(old_db)

    outcome = any_cli("charge", str(order), "--key", "order-1", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_amount"
    assert count_rows(old_db) == before


def test_after_the_upgrade_the_schema_refuses_a_zero_price(old_db: Database) -> None:
    upgrade(old_db)

    with pytest.raises(exc.IntegrityError):
        a_product_row(old_db, price=0)


def test_after_the_upgrade_a_formerly_free_product_cannot_be_ordered_until_repriced(
    old_db: Database,
) -> None:
    free = a_product_row(old_db, price=0)
    upgrade(old_db)
    customer = a_customer(old_db)
    cli = Cli({"DATABASE_URL": old_db.url})
    rows = count_rows(old_db)

    refused = cli("order", "create", "--customer", str(customer.id), "--item", str(free), "--json")

    assert refused.exit_code == 4, refused.stderr
    assert refused.error()["code"] == "product_inactive"
    assert count_rows(old_db) == rows


def test_downgrading_restores_the_rule_before_it(any_db: Database) -> None:
    downgrade(any_db, BEFORE)

    free = a_product_row(any_db, price=0)

    assert tuple(product(any_db, free))[:2] == (0, True)
