"""Schema 0008 (the catch-up's schedule, what a finding says of the money), on Postgres and SQLite.

An existing database upgrades with every payment and refund still awaiting its provider's word
due a question at once, and settled ones left alone; its open findings read as the refund
check now reads them; a database that holds findings of the new reasons is never downgraded
to a schema with no place for them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import exc, insert, select, update

from orderpay.store.db import SCHEMA_HEAD, Database
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.schema import payments, review_items
from tests.conftest import count_rows
from tests.refund_helpers import a_paid_payment

BEFORE = "0007_no_database_functions"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def an_item(payment: Any, reason: str, subject: str, **values: Any) -> dict[str, Any]:
    return {
        "reason": reason,
        "subject": subject,
        "order_id": payment.order_id,
        "payment_id": payment.id,
        "reported": "momo callback: failed",
        "suggested_action": "check with the provider",
        "opened_at": NOW,
        **values,
    }


def insert_item(db: Database, values: dict[str, Any]) -> None:
    with db.transaction() as conn:
        conn.execute(insert(review_items).values(**values))


def set_status(db: Database, payment_id: uuid.UUID, **values: Any) -> None:
    with db.transaction() as conn:
        conn.execute(update(payments).where(payments.c.id == payment_id).values(**values))


def next_checks(db: Database) -> dict[uuid.UUID, datetime | None]:
    with db.transaction() as conn:
        rows = conn.execute(select(payments.c.id, payments.c.next_check_at)).all()
    return {row.id: row.next_check_at for row in rows}


@pytest.mark.parametrize(
    ("status", "unconfirmed", "due"),
    [
        ("pending", False, True),
        ("initiated", False, True),
        ("failed", True, True),  # a forced cancel: awaiting the provider's confirmation
        ("failed", False, False),
        ("succeeded", False, False),
    ],
)
def test_upgrading_makes_every_payment_awaiting_its_providers_word_due_at_once(
    any_db: Database, status: str, unconfirmed: bool, due: bool
) -> None:
    payment = a_paid_payment(any_db)
    downgrade(any_db, BEFORE)
    set_status(any_db, payment.id, status=status, awaiting_confirmation=unconfirmed)

    assert upgrade(any_db) == (BEFORE, SCHEMA_HEAD)

    assert (next_checks(any_db)[payment.id] is not None) is due


def test_upgrading_reads_an_open_failure_reported_for_a_succeeded_payment_as_money_maybe_not_taken(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db)
    downgrade(any_db, BEFORE)
    # As 0007 kept it: no money column (an insert names only the columns it is given).
    insert_item(any_db, an_item(payment, "amount_mismatch", f"payment:{payment.id}:amount:failed"))

    upgrade(any_db)

    with any_db.transaction() as conn:
        money = conn.execute(select(review_items.c.money)).scalar_one()
    assert money == "maybe_not_taken"


def test_the_schema_refuses_a_finding_whose_money_it_does_not_know(any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    before = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        insert_item(any_db, an_item(payment, "outcome_conflict", "s", money="perhaps"))

    assert count_rows(any_db) == before


@pytest.mark.parametrize("reason", ["no_final_answer", "sender_id_conflict"])
def test_downgrading_a_database_holding_a_finding_of_a_new_reason_is_refused(
    any_db: Database, reason: str
) -> None:
    payment = a_paid_payment(any_db)
    insert_item(any_db, an_item(payment, reason, f"payment:{payment.id}:{reason}"))
    before = count_rows(any_db)

    with pytest.raises(RuntimeError, match="would lose them"):
        downgrade(any_db, BEFORE)

    assert count_rows(any_db) == before
    with any_db.transaction() as conn:
        assert conn.execute(select(review_items.c.reason)).scalar_one() == reason
