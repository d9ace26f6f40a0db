"""Schema 0010 (payments and refunds keep our reference and when a request may have reached the
provider), up and down, on Postgres and SQLite: the MTN and simulator payments made before it
keep working (their reference is their id), and our reference is unique per provider.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import exc, insert, select

from orderpay.shapes import payment_shape
from orderpay.store.db import Database
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.payments import get_payment
from orderpay.store.schema import payments
from tests.builders import an_order
from tests.conftest import count_rows

BEFORE = "0009_order_idempotency_keys"
THIS = "0010_provider_references"
NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def a_payment_row(db: Database, order_id: uuid.UUID, **values: Any) -> uuid.UUID:
    """A payment row as any revision can hold it (the new columns only where given)."""
    payment_id = uuid.uuid4()
    with db.transaction() as conn:
        row = {
            "id": payment_id,
            "order_id": order_id,
            "idempotency_key": f"key-{payment_id}",
            "fingerprint": "f" * 64,
            "amount": 2500,
            "currency": "GHS",
            "payer_phone": "+233241234567",
            "provider": "mtn",
            "provider_reference": str(payment_id),
            "status": "succeeded",
            "created_at": NOW,
            "updated_at": NOW,
        }
        conn.execute(insert(payments).values({**row, **values}))
    return payment_id


@pytest.fixture
def old_db(any_db: Database) -> Database:
    downgrade(any_db, BEFORE)
    assert any_db.current_revision() == BEFORE
    return any_db


def test_upgrading_keeps_an_mtn_payment_whose_reference_is_its_id(old_db: Database) -> None:
    payment_id = a_payment_row(old_db, an_order(old_db).id)
    rows = count_rows(old_db)

    assert upgrade(old_db, THIS) == (BEFORE, THIS)

    assert count_rows(old_db) == rows
    with old_db.transaction() as conn:
        payment = get_payment(conn, payment_id)
    assert (payment.our_reference, payment.sent_at) == (None, None)
    assert payment_shape(payment)["our_reference"] == str(payment_id)


def test_our_reference_is_unique_per_provider(any_db: Database) -> None:
    a_payment_row(any_db, an_order(any_db).id, provider="mpesa", our_reference="OP12345678AB")
    rows = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        a_payment_row(any_db, an_order(any_db).id, provider="mpesa", our_reference="OP12345678AB")

    assert count_rows(any_db)["payments"] == rows["payments"]


def test_downgrading_keeps_every_payment_and_drops_the_new_columns(any_db: Database) -> None:
    a_payment_row(any_db, an_order(any_db).id, provider="mpesa", our_reference="OP12345678AB")

    downgrade(any_db, BEFORE)

    with any_db.transaction() as conn:
        assert len(conn.execute(select(payments.c.id)).all()) == 1
