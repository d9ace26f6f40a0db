"""The store's readers map a row by column key, not by position: a statement may list a
table's columns in another order and each value still lands in its own field. The payment's
and the order's readers also take rows with other columns besides (store/locks.py adds the
order's status and the customer's phone to a payment's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Connection, Row, literal, select

from orderpay.domain.reviews import ReviewReason
from orderpay.store import notifications, orders, payments, refund_rows, refunds, reviews
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from orderpay.store.schema import notifications as notifications_table
from orderpay.store.schema import orders as orders_table
from orderpay.store.schema import payments as payments_table
from orderpay.store.schema import refunds as refunds_table
from orderpay.store.schema import review_items
from tests.refund_helpers import RecordingProvider, a_paid_payment, refund


@pytest.fixture
def paid(sqlite_db: Database) -> Payment:
    return a_paid_payment(sqlite_db)


def read(
    db: Database,
    columns: Sequence[ColumnElement[Any]],
    where: ColumnElement[bool],
    *,
    extra: bool = False,
) -> Row[*tuple[Any, ...]]:
    """The one row `where` finds, its columns in reverse order, after an unrelated one."""
    listed: list[ColumnElement[Any]] = list(reversed(columns))
    if extra:
        listed.insert(0, literal("unrelated").label("extra"))
    with db.reading() as conn:
        return conn.execute(select(*listed).where(where)).one()


def test_a_payment_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    row = read(sqlite_db, payments.COLUMNS, payments_table.c.id == paid.id)

    assert payments.from_row(row) == paid


def test_a_payment_row_may_carry_other_columns(sqlite_db: Database, paid: Payment) -> None:
    row = read(sqlite_db, payments.COLUMNS, payments_table.c.id == paid.id, extra=True)

    assert payments.from_row(row) == paid


def test_an_order_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    row = read(sqlite_db, orders.COLUMNS, orders_table.c.id == paid.order_id, extra=True)

    with sqlite_db.reading() as conn:
        assert orders.order_from_row(row) == orders.get_order(conn, paid.order_id)


def test_a_refund_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    made = refund(sqlite_db, RecordingProvider(), paid.id).refund

    row = read(sqlite_db, refund_rows.COLUMNS, refunds_table.c.id == made.id)

    with sqlite_db.reading() as conn:
        assert refund_rows.from_row(row) == refunds.get_refund(conn, made.id)


def test_a_notification_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    with sqlite_db.reading() as conn:
        (queued,) = notifications.notifications_of(conn, [paid.order_id])

    row = read(sqlite_db, notifications.COLUMNS, notifications_table.c.id == queued.id)

    assert notifications.from_row(row) == queued


def test_a_review_item_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    with sqlite_db.transaction() as conn:
        item_id = _an_open_item(conn, paid)

    row = read(sqlite_db, reviews.COLUMNS, review_items.c.id == item_id)

    with sqlite_db.reading() as conn:
        assert reviews.from_row(row) == reviews.get_item(conn, item_id)


def _an_open_item(conn: Connection, paid: Payment) -> int:
    item_id = reviews.open_item(
        conn,
        reason=ReviewReason.AMOUNT_MISMATCH.value,
        subject=f"payment:{paid.id}",
        order_id=paid.order_id,
        payment_id=paid.id,
        reported="SUCCESSFUL 25.00 GHS",
        suggested_action="check the statement",
    )
    assert item_id is not None
    return item_id
