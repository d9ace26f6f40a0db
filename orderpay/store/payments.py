"""Payments as read from the database. Their writes live in store/ledger.py alone."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, select

from orderpay.domain.money import Money
from orderpay.domain.states import OPEN_PAYMENT_STATUSES, PaymentStatus
from orderpay.errors import PaymentNotFound
from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.schema import payments


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
    provider_transaction_id: str | None
    status: PaymentStatus
    failure_reason: str | None
    awaiting_confirmation: bool
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    next_check_at: datetime | None = None  # the catch-up's next question to its provider
    checks_made: int = 0
    our_reference: str | None = None  # what we sent the provider, when not the id
    sent_at: datetime | None = None  # a request may have reached the provider since then


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
    payments.c.provider_transaction_id,
    payments.c.status,
    payments.c.failure_reason,
    payments.c.awaiting_confirmation,
    payments.c.lease_expires_at,
    payments.c.created_at,
    payments.c.updated_at,
    payments.c.next_check_at,
    payments.c.checks_made,
    payments.c.our_reference,
    payments.c.sent_at,
)
# The columns a charge's claim gives a new payment (the rest take their defaults).
CLAIMED_COLUMNS = [
    "id",
    "order_id",
    "idempotency_key",
    "fingerprint",
    "amount",
    "currency",
    "payer_phone",
    "provider",
    "status",
    "lease_expires_at",
    "next_check_at",
    "created_at",
    "updated_at",
    "our_reference",
    "sent_at",
]


# The columns from_row reads, by key: a row may hold them in any order, among others.
_FIELDS = itemgetter(
    "id",
    "order_id",
    "idempotency_key",
    "fingerprint",
    "amount",
    "currency",
    "payer_phone",
    "provider",
    "provider_reference",
    "provider_transaction_id",
    "status",
    "failure_reason",
    "awaiting_confirmation",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "next_check_at",
    "checks_made",
    "our_reference",
    "sent_at",
)


def from_row(row: Row[*tuple[Any, ...]]) -> Payment:
    """The payment in a row that holds COLUMNS, read by column key, so that a column added to
    or moved in a statement cannot shift the values (store/locks.py adds its own after them)."""
    return payment_from(row._mapping)


def payment_from(values: Mapping[Any, Any]) -> Payment:
    """The payment in anything that maps COLUMNS' keys to their values (an asyncpg record)."""
    (
        pid,
        order_id,
        key,
        fingerprint,
        amount,
        currency,
        payer,
        provider,
        reference,
        transaction,
        status,
        reason,
        awaiting,
        lease,
        created_at,
        updated_at,
        next_check_at,
        checks_made,
        our_reference,
        sent_at,
    ) = _FIELDS(values)
    return Payment(
        pid,
        order_id,
        key,
        fingerprint,
        Money(amount, currency),
        payer,
        provider,
        reference,
        transaction,
        PaymentStatus(status),
        reason,
        bool(awaiting),
        lease,
        created_at,
        updated_at,
        next_check_at,
        int(checks_made),
        our_reference,
        sent_at,
    )


# Built once: these run on every charge, and building a statement costs more than running it.
_BY_ID = select(*COLUMNS).where(payments.c.id == bindparam("b_id"))
_BY_KEY = select(*COLUMNS).where(payments.c.idempotency_key == bindparam("b_key"))
_TO_CONFIRM_OF_ORDER = (
    select(*COLUMNS)
    .where(
        payments.c.order_id == bindparam("b_order"),
        payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES])
        | payments.c.awaiting_confirmation,
    )
    .order_by(payments.c.created_at.desc())
    .limit(1)
)


def get_payment(conn: Connection, payment_id: uuid.UUID) -> Payment:
    payment = find_payment(conn, payment_id)
    if payment is None:
        raise PaymentNotFound(f"payment {payment_id} does not exist", payment=str(payment_id))
    return payment


def find_payment(conn: Connection, payment_id: uuid.UUID) -> Payment | None:
    row = conn.execute(_BY_ID, {"b_id": payment_id}).first()
    return None if row is None else from_row(row)


def to_confirm(payment: Payment) -> bool:
    """Whether the provider's word on this payment is still awaited: it is open, or it was
    failed without asking the provider."""
    return payment.status in OPEN_PAYMENT_STATUSES or payment.awaiting_confirmation


def payment_to_confirm_of_order(conn: Connection, order_id: uuid.UUID) -> Payment | None:
    """The order's newest payment whose provider's word is awaited (see to_confirm)."""
    row = conn.execute(_TO_CONFIRM_OF_ORDER, {"b_order": order_id}).first()
    return None if row is None else from_row(row)


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
    window: Window,
    *,
    order_id: uuid.UUID | None = None,
    status: PaymentStatus | None = None,
) -> Page[Payment]:
    """A page of payments, newest first."""
    query = select(*COLUMNS)
    if order_id is not None:
        query = query.where(payments.c.order_id == order_id)
    if status is not None:
        query = query.where(payments.c.status == status.value)
    query = windowed(query, payments.c.created_at, payments.c.id, window, uuid.UUID)
    rows = [from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda p: (p.created_at, p.id))


# --- The catch-up's reads -------------------------------------------------------------------

_OPEN = payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES]) | (
    payments.c.awaiting_confirmation
)


def due_for_check(conn: Connection, now: datetime, limit: int) -> list[Payment]:
    """Payments whose provider is to be asked again now, the longest due first."""
    rows = conn.execute(
        select(*COLUMNS)
        .where(payments.c.next_check_at <= now)
        .order_by(payments.c.next_check_at)
        .limit(limit)
    )
    return [from_row(row) for row in rows]


def awaiting_answers(conn: Connection, limit: int) -> list[Payment]:
    """Payments whose provider's final word is awaited (open, or failed without it), whoever
    their provider, the longest unchanged first."""
    rows = conn.execute(select(*COLUMNS).where(_OPEN).order_by(payments.c.updated_at).limit(limit))
    return [from_row(row) for row in rows]


def oldest_awaiting(conn: Connection) -> datetime | None:
    """When the oldest payment still awaiting its provider's final word was made."""
    return conn.execute(select(func.min(payments.c.created_at)).where(_OPEN)).scalar_one()  # type: ignore[no-any-return]


def holding_transaction(conn: Connection, provider: str, transaction_id: str) -> uuid.UUID | None:
    """The payment of `provider` that holds this transaction id of its, if one does."""
    return conn.execute(
        select(payments.c.id).where(
            payments.c.provider == provider, payments.c.provider_transaction_id == transaction_id
        )
    ).scalar_one_or_none()


_RECENT_TO_PAYER = (
    select(*COLUMNS)
    .where(
        payments.c.payer_phone == bindparam("b_payer"),
        payments.c.provider == bindparam("b_provider"),
        payments.c.created_at > bindparam("b_since"),
    )
    .order_by(payments.c.created_at.desc())
    .limit(50)
)


def recent_to_payer(
    conn: Connection, provider: str, payer_phone: str, since: datetime
) -> list[Payment]:
    """The payments asked of one payer through one provider since `since`, newest first."""
    params = {"b_payer": payer_phone, "b_provider": provider, "b_since": since}
    return [from_row(row) for row in conn.execute(_RECENT_TO_PAYER, params)]


_BY_PROVIDER_REFERENCE = select(*COLUMNS).where(
    payments.c.provider == bindparam("b_provider"),
    payments.c.provider_reference == bindparam("b_reference"),
)
_BY_OUR_REFERENCE = select(*COLUMNS).where(
    payments.c.provider == bindparam("b_provider"),
    payments.c.our_reference == bindparam("b_reference"),
)
_BY_TRANSACTION = select(*COLUMNS).where(
    payments.c.provider == bindparam("b_provider"),
    payments.c.provider_transaction_id == bindparam("b_reference"),
)


def find_by_provider_reference(conn: Connection, provider: str, reference: str) -> Payment | None:
    """The payment a provider knows by `reference` (its own handle: M-Pesa's CheckoutRequestID)."""
    return _one(conn, _BY_PROVIDER_REFERENCE, provider, reference)


def find_by_our_reference(conn: Connection, provider: str, reference: str) -> Payment | None:
    """The payment we named `reference` to its provider (M-Pesa's AccountReference)."""
    return _one(conn, _BY_OUR_REFERENCE, provider, reference)


def find_by_transaction(conn: Connection, provider: str, transaction_id: str) -> Payment | None:
    """The payment holding the provider's money id `transaction_id` (M-Pesa's receipt)."""
    return _one(conn, _BY_TRANSACTION, provider, transaction_id)


def _one(conn: Connection, statement: Any, provider: str, reference: str) -> Payment | None:
    row = conn.execute(statement, {"b_provider": provider, "b_reference": reference}).first()
    return None if row is None else from_row(row)
