"""The store's readers map a row by column key, not by position: a statement may list a
table's columns in another order and each value still lands in its own field. The payment's
and the order's readers also take rows with other columns besides (store/locks.py adds the
order's status and the customer's phone to a payment's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Row, literal, select

from orderpay.store import notifications, orders, payments, refunds
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from orderpay.store.schema import notifications as notifications_table
from orderpay.store.schema import orders as orders_table
from orderpay.store.schema import payments as payments_table
from orderpay.store.schema import refunds as refunds_table
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

    row = read(sqlite_db, refunds.COLUMNS, refunds_table.c.id == made.id)

    with sqlite_db.reading() as conn:
        assert refunds.from_row(row) == refunds.get_refund(conn, made.id)


def test_a_notification_is_read_by_column_key(sqlite_db: Database, paid: Payment) -> None:
    with sqlite_db.reading() as conn:
        (queued,) = notifications.notifications_of(conn, [paid.order_id])

    row = read(sqlite_db, notifications.COLUMNS, notifications_table.c.id == queued.id)

    assert notifications.from_row(row) == queued
