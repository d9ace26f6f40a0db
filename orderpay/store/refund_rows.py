"""Refunds as rows: the type every layer reads, and how a row becomes one. Their writes live
in store/refunds.py alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Row

from orderpay.domain.money import Money
from orderpay.domain.states import OPEN_REFUND_STATUSES, RefundStatus
from orderpay.store.schema import refunds

_r = refunds.c


@dataclass(frozen=True, slots=True)
class Refund:
    id: uuid.UUID
    payment_id: uuid.UUID
    order_id: uuid.UUID
    idempotency_key: str
    fingerprint: str
    amount: Money
    provider: str
    provider_reference: str | None
    provider_transaction_id: str | None
    status: RefundStatus
    reason: str  # the operator's: why the money goes back
    failure_reason: str | None  # the provider's, when it refused or the refund failed
    operator: str  # who asked for it
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    next_check_at: datetime | None = None  # the catch-up's next question to its provider
    checks_made: int = 0
    our_reference: str | None = None  # what we sent the provider, when not the id
    sent_at: datetime | None = None  # a request may have reached the provider since then

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_REFUND_STATUSES


COLUMNS = (
    _r.id,
    _r.payment_id,
    _r.order_id,
    _r.idempotency_key,
    _r.fingerprint,
    _r.amount,
    _r.currency,
    _r.provider,
    _r.provider_reference,
    _r.provider_transaction_id,
    _r.status,
    _r.reason,
    _r.failure_reason,
    _r.operator,
    _r.lease_expires_at,
    _r.created_at,
    _r.updated_at,
    _r.next_check_at,
    _r.checks_made,
    _r.our_reference,
    _r.sent_at,
)


# The columns from_row reads, by key: a row may hold them in any order, among others.
_FIELDS = itemgetter(
    "id",
    "payment_id",
    "order_id",
    "idempotency_key",
    "fingerprint",
    "amount",
    "currency",
    "provider",
    "provider_reference",
    "provider_transaction_id",
    "status",
    "reason",
    "failure_reason",
    "operator",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "next_check_at",
    "checks_made",
    "our_reference",
    "sent_at",
)


def from_row(row: Row[*tuple[Any, ...]]) -> Refund:
    """The refund in a row that holds COLUMNS, read by column key, so that a column added to
    or moved in a statement cannot shift the values."""
    (
        rid,
        payment_id,
        order_id,
        key,
        fingerprint,
        amount,
        currency,
        provider,
        reference,
        transaction,
        status,
        reason,
        failure,
        operator,
        lease,
        created,
        updated,
        next_check,
        checks,
        our_reference,
        sent_at,
    ) = _FIELDS(row._mapping)
    return Refund(
        rid,
        payment_id,
        order_id,
        key,
        fingerprint,
        Money(amount, currency),
        provider,
        reference,
        transaction,
        RefundStatus(status),
        reason,
        failure,
        operator,
        lease,
        created,
        updated,
        next_check,
        int(checks),
        our_reference,
        sent_at,
    )
