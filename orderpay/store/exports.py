"""Payments for an export (`orderpay payment export`): a stream, oldest first.

Read with a server-side cursor on Postgres (`yield_per`: BATCH rows in memory at a time,
whatever the window holds), so an export of millions of payments needs no more memory than
one of ten. The caller's transaction stays open while the stream is read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, select

from orderpay.domain.money import Money
from orderpay.store.schema import customers, orders, payments

BATCH = 1000


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One exported payment, with its order's customer."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    status: str
    amount: Money
    provider: str
    provider_reference: str | None
    provider_transaction_id: str | None
    order_id: uuid.UUID
    customer_id: int
    customer_name: str
    failure_reason: str | None
    idempotency_key: str


def _filtered(
    query: Select[Any], since: datetime | None, until: datetime | None, status: str | None
) -> Select[Any]:
    if since is not None:
        query = query.where(payments.c.created_at >= since)
    if until is not None:
        query = query.where(payments.c.created_at < until)
    if status is not None:
        query = query.where(payments.c.status == status)
    return query


def payment_records(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
) -> Iterator[PaymentRecord]:
    """The payments created at or after `since` and before `until`, oldest first."""
    query = _filtered(
        select(
            payments.c.id,
            payments.c.created_at,
            payments.c.updated_at,
            payments.c.status,
            payments.c.amount,
            payments.c.currency,
            payments.c.provider,
            payments.c.provider_reference,
            payments.c.provider_transaction_id,
            payments.c.order_id,
            orders.c.customer_id,
            customers.c.name,
            payments.c.failure_reason,
            payments.c.idempotency_key,
        )
        .join(orders, orders.c.id == payments.c.order_id)
        .join(customers, customers.c.id == orders.c.customer_id),
        since,
        until,
        status,
    ).order_by(payments.c.created_at, payments.c.id)
    for (
        pid,
        created_at,
        updated_at,
        state,
        amount,
        currency,
        provider,
        reference,
        transaction,
        order_id,
        customer_id,
        name,
        reason,
        key,
    ) in conn.execute(query.execution_options(yield_per=BATCH)):
        yield PaymentRecord(
            pid,
            created_at,
            updated_at,
            state,
            Money(amount, currency),
            provider,
            reference,
            transaction,
            order_id,
            customer_id,
            name,
            reason,
            key,
        )


def count_payment_records(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
) -> int:
    """How many payments `payment_records` would yield (for a progress bar)."""
    query = _filtered(select(func.count()).select_from(payments), since, until, status)
    return int(conn.execute(query).scalar_one())
