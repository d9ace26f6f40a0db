"""Schema 0004 (refunds, review items, a refund's own notifications), on Postgres and SQLite.

An existing database upgrades with its notifications and their rule kept (one of a kind per
payment); the new rule (one of a kind per refund) comes from the schema, not the code; a
database that holds refunds is never downgraded to a schema with no place for them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import exc, func, insert, select

from orderpay.store.db import SCHEMA_HEAD, Database
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.schema import notifications, refunds
from tests.conftest import count_rows
from tests.refund_helpers import RecordingProvider, a_paid_payment, refund

BEFORE = "0003_price_positive"
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def a_notification(payment: Any, kind: str, refund_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {
        "order_id": payment.order_id,
        "payment_id": payment.id,
        "refund_id": refund_id,
        "kind": kind,
        "channel": "log",
        "recipient": "+233241234567",
        "body": "",
        "status": "pending",
        "attempts": 0,
        "due_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }


def insert_row(db: Database, table: Any, values: dict[str, Any]) -> None:
    with db.transaction() as conn:
        conn.execute(insert(table).values(**values))


def notification_count(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(notifications)).scalar_one())


@pytest.mark.slow
def test_upgrading_keeps_the_notifications_of_payments_already_settled(any_db: Database) -> None:
    a_paid_payment(any_db)
    downgrade(any_db, BEFORE)
    before = notification_count(any_db)

    assert upgrade(any_db) == (BEFORE, SCHEMA_HEAD)

    assert (before, notification_count(any_db)) == (1, 1)


def test_the_schema_still_refuses_a_second_payment_notification_of_a_kind(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db)  # its payment_received row is queued

    with pytest.raises(exc.IntegrityError):
        insert_row(any_db, notifications, a_notification(payment, "payment_received"))

    assert notification_count(any_db) == 1


def test_the_schema_refuses_a_second_notification_of_a_kind_for_one_refund(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db)
    given = refund(any_db, RecordingProvider(), payment.id, amount="5.00").refund
    assert notification_count(any_db) == 2  # payment_received, and the refund's refund_sent

    with pytest.raises(exc.IntegrityError):
        insert_row(any_db, notifications, a_notification(payment, "refund_sent", given.id))

    assert notification_count(any_db) == 2


def test_each_refund_of_one_payment_may_have_its_own_notification(any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    provider = RecordingProvider()

    refund(any_db, provider, payment.id, amount="5.00")
    refund(any_db, provider, payment.id, amount="6.00")

    assert notification_count(any_db) == 3


@pytest.mark.slow
def test_the_schema_refuses_a_second_refund_with_one_idempotency_key(any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    given = refund(any_db, RecordingProvider(), payment.id, key="refund-1").refund
    with any_db.transaction() as conn:
        row = dict(conn.execute(select(refunds).where(refunds.c.id == given.id)).one()._mapping)
    row["id"] = uuid.uuid4()

    with pytest.raises(exc.IntegrityError):
        insert_row(any_db, refunds, row)

    with any_db.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(refunds)).scalar_one() == 1


def test_downgrading_a_database_that_holds_refunds_is_refused_and_keeps_them(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db)
    refund(any_db, RecordingProvider(), payment.id)
    before = count_rows(any_db)

    with pytest.raises(RuntimeError, match="holds 1 refund"):
        downgrade(any_db, BEFORE)

    assert any_db.current_revision() == SCHEMA_HEAD
    assert count_rows(any_db) == before


def test_downgrading_a_database_without_refunds_restores_the_schema_before(
    any_db: Database,
) -> None:
    a_paid_payment(any_db)

    downgrade(any_db, BEFORE)

    assert any_db.current_revision() == BEFORE
    assert notification_count(any_db) == 1
