"""Payments: reads and the one compare-and-set that moves a payment between states."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from orderpay.clock import utcnow
from orderpay.errors import PaymentNotFound
from orderpay.models import payments
from orderpay.money import Money
from orderpay.states import PaymentStatus, payment_can_move


@dataclass(frozen=True, slots=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    idempotency_key: str
    fingerprint: str
    amount: Money
    payer_phone: str
    provider: str
    provider_reference: str | None
    status: PaymentStatus
    failure_reason: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


COLUMNS = (
    payments.c.id,
    payments.c.order_id,
    payments.c.idempotency_key,
    payments.c.fingerprint,
    payments.c.amount,
    payments.c.currency,
    payments.c.payer_phone,
    payments.c.provider,
    payments.c.provider_reference,
    payments.c.status,
    payments.c.failure_reason,
    payments.c.lease_expires_at,
    payments.c.created_at,
    payments.c.updated_at,
)


def from_row(row: Sequence[Any]) -> Payment:
    (pid, order_id, key, fingerprint, amount, currency, payer, provider, reference, status,
     reason, lease, created_at, updated_at) = row  # fmt: skip
    return Payment(
        pid, order_id, key, fingerprint, Money(amount, currency), payer, provider, reference,
        PaymentStatus(status), reason, lease, created_at, updated_at,
    )  # fmt: skip


# Built once: these run on every charge, and building a statement costs more than running it.
_BY_ID = select(*COLUMNS).where(payments.c.id == bindparam("b_id"))
_BY_KEY = select(*COLUMNS).where(payments.c.idempotency_key == bindparam("b_key"))
_MOVE = (
    update(payments)
    .where(
        payments.c.id == bindparam("b_id"),
        payments.c.status.in_(bindparam("b_from", expanding=True)),
    )
    .returning(*COLUMNS)
)


def get_payment(conn: Connection, payment_id: uuid.UUID) -> Payment:
    row = conn.execute(_BY_ID, {"b_id": payment_id}).first()
    if row is None:
        raise PaymentNotFound(f"payment {payment_id} does not exist", payment=str(payment_id))
    return from_row(row)


def find_by_key(conn: Connection, key: str) -> Payment | None:
    row = conn.execute(_BY_KEY, {"b_key": key}).first()
    return None if row is None else from_row(row)


def payments_of(conn: Connection, order_ids: list[uuid.UUID]) -> list[Payment]:
    rows = conn.execute(
        select(*COLUMNS)
        .where(payments.c.order_id.in_(order_ids))
        .order_by(payments.c.created_at, payments.c.id)
    )
    return [from_row(row) for row in rows]


def list_payments(
    conn: Connection,
    *,
    order_id: uuid.UUID | None = None,
    status: PaymentStatus | None = None,
    limit: int = 50,
) -> list[Payment]:
    query = select(*COLUMNS).order_by(payments.c.created_at.desc()).limit(limit)
    if order_id is not None:
        query = query.where(payments.c.order_id == order_id)
    if status is not None:
        query = query.where(payments.c.status == status.value)
    return [from_row(row) for row in conn.execute(query)]


def move_payment(
    conn: Connection,
    payment_id: uuid.UUID,
    expected: Iterable[PaymentStatus],
    target: PaymentStatus,
    **values: Any,
) -> Payment | None:
    """Compare-and-set: move the payment to `target` only if its status is one of `expected`.

    Returns the updated payment, or None when another writer got there first.
    """
    froms = list(expected)
    for current in froms:
        if not payment_can_move(current, target):
            raise ValueError(f"payment transition {current} -> {target} is not allowed")
    params = {
        "b_id": payment_id,
        "b_from": [s.value for s in froms],
        "status": target.value,
        "updated_at": utcnow(),
        **values,
    }
    row = conn.execute(_MOVE, params).first()
    return None if row is None else from_row(row)
