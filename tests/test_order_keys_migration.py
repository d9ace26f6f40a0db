"""Schema 0009 (orders keep the Idempotency-Key that made them), up and down, on Postgres and
SQLite: orders made before it keep no key, a key is stored once, and downgrading keeps every
order while dropping the keys.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import exc, insert, inspect, select

from orderpay.store.db import Database
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.schema import orders
from tests.builders import a_customer
from tests.conftest import count_rows

BEFORE = "0008_catch_up"
THIS = "0009_order_idempotency_keys"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def an_order_row(db: Database, customer_id: int, **values: Any) -> uuid.UUID:
    """An order row as any revision can hold it (the keys only where given)."""
    order_id = uuid.uuid4()
    with db.transaction() as conn:
        conn.execute(
            insert(orders).values(
                id=order_id,
                customer_id=customer_id,
                status="pending",
                currency="GHS",
                total=2500,
                created_at=NOW,
                updated_at=NOW,
                **values,
            )
        )
    return order_id


def order_columns(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {column["name"] for column in inspect(conn).get_columns("orders")}


def keys_of(db: Database) -> list[tuple[Any, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(select(orders.c.idempotency_key, orders.c.fingerprint)).all()
    return [tuple(row) for row in rows]


@pytest.fixture
def old_db(any_db: Database) -> Database:
    """A database at the revision before 0009."""
    downgrade(any_db, BEFORE)
    assert any_db.current_revision() == BEFORE
    return any_db


def test_upgrading_keeps_the_orders_made_before_it_without_a_key(old_db: Database) -> None:
    an_order_row(old_db, a_customer(old_db).id)
    rows = count_rows(old_db)

    before, after = upgrade(old_db, THIS)

    assert (before, after) == (BEFORE, THIS)
    assert count_rows(old_db) == rows
    assert keys_of(old_db) == [(None, None)]


def test_after_the_upgrade_the_schema_refuses_a_second_order_with_the_same_key(
    any_db: Database,
) -> None:
    customer = a_customer(any_db)
    an_order_row(any_db, customer.id, idempotency_key="order-1", fingerprint="a" * 64)
    rows = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        an_order_row(any_db, customer.id, idempotency_key="order-1", fingerprint="b" * 64)
    assert count_rows(any_db) == rows


def test_after_the_upgrade_the_schema_refuses_a_key_without_its_fingerprint(
    any_db: Database,
) -> None:
    customer = a_customer(any_db)
    rows = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        an_order_row(any_db, customer.id, idempotency_key="order-1")
    assert count_rows(any_db) == rows


def test_after_the_upgrade_many_orders_may_have_no_key(any_db: Database) -> None:
    customer = a_customer(any_db)

    an_order_row(any_db, customer.id)
    an_order_row(any_db, customer.id)

    assert keys_of(any_db) == [(None, None), (None, None)]


def test_downgrading_keeps_every_order_and_drops_the_keys(any_db: Database) -> None:
    customer = a_customer(any_db)
    an_order_row(any_db, customer.id, idempotency_key="order-1", fingerprint="a" * 64)
    an_order_row(any_db, customer.id)
    rows = count_rows(any_db)

    downgrade(any_db, BEFORE)

    assert count_rows(any_db) == rows
    assert {"idempotency_key", "fingerprint"} & order_columns(any_db) == set()


def test_downgrading_lets_the_schema_before_it_take_an_order(any_db: Database) -> None:
    customer = a_customer(any_db)
    downgrade(any_db, BEFORE)

    an_order_row(any_db, customer.id)

    assert count_rows(any_db)["orders"] == 1
