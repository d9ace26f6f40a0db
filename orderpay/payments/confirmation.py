"""Asking the provider what became of a payment, and settling on its answer.

MTN signs nothing, so its callbacks are only hints: the listener records one and then asks
MTN's status call before changing money state. `orderpay reconcile` does the same for payments
whose callback never came, and resumes `initiated` payments whose request may never have
reached the provider. Outcomes go through settlement.settle, so notifications follow.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from orderpay.domain.states import PaymentStatus
from orderpay.errors import ProviderUnavailable
from orderpay.payments.charge import submit
from orderpay.payments.settlement import Settled, settle
from orderpay.providers.base import (
    PaymentRef,
    Provider,
    RemoteState,
    StatusAnswer,
)
from orderpay.store import ledger, locks
from orderpay.store.db import Transactional, retrying
from orderpay.store.outbox import NotifyTarget
from orderpay.store.payments import Payment, to_confirm

REMOTE_OUTCOMES = {
    RemoteState.SUCCEEDED: PaymentStatus.SUCCEEDED,
    RemoteState.FAILED: PaymentStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class Confirmation:
    payment_id: uuid.UUID
    order_id: uuid.UUID
    before: PaymentStatus
    after: PaymentStatus
    remote: str  # what the provider said, or why it was not asked
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.before is not self.after

    @property
    def notification_queued(self) -> bool:
        return self.changed and self.after is PaymentStatus.SUCCEEDED


def reference_of(payment: Payment) -> PaymentRef:
    return PaymentRef(
        payment.id, payment.provider_reference, payment.order_id, payment.amount,
        payment.payer_phone, payment.created_at,
    )  # fmt: skip


def confirm_payment(
    db: Transactional,
    provider: Provider,
    payment: Payment,
    *,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
) -> Confirmation:
    """Ask the provider about one open payment and apply a terminal answer.

    An `initiated` payment the provider does not know is submitted again under its own
    reference (the provider deduplicates it), holding the charge lease like a resumed key.
    """
    before = payment.status
    if not to_confirm(payment):
        return _unchanged(payment, "not asked", "already settled")
    if payment.provider != provider.name:
        # Asking MTN about a simulator payment (or the reverse) could resubmit it for real.
        return _unchanged(payment, "not asked", f"made through {payment.provider}")
    try:
        answer = provider.payment_status(reference_of(payment))
    except ProviderUnavailable as error:
        return _unchanged(payment, "unavailable", error.message)
    target = REMOTE_OUTCOMES.get(answer.state)
    if target is not None:
        return _settle(db, payment, answer, target, notify=notify, source=source)
    if before is PaymentStatus.INITIATED:
        # No outcome, and we never recorded the provider's receipt: the request may never
        # have arrived (MTN: 404). Asking again under the same reference is safe either way.
        return _resubmit(db, provider, payment, answer.state.value, lease)
    return _unchanged(payment, answer.state.value, "no outcome yet")


def _settle(
    db: Transactional,
    payment: Payment,
    answer: StatusAnswer,
    target: PaymentStatus,
    *,
    notify: NotifyTarget,
    source: str,
) -> Confirmation:

    def apply(conn: Connection) -> tuple[Settled, PaymentStatus]:
        locked = locks.lock_payment(conn, payment.id)
        assert locked is not None, "payments are never deleted"
        verdict = settle(
            conn, locked, target, reason=answer.reason, amount=answer.amount,
            source=source, notify=notify, transaction_id=answer.transaction_id,
        )  # fmt: skip
        return verdict, target if verdict is Settled.APPLIED else locked.payment.status

    verdict, after = retrying(db, apply)
    note = {
        Settled.APPLIED: "",
        Settled.UNCHANGED: "already settled",
        Settled.CONFLICT: "provider disagrees with our records: kept for review",
        Settled.MISMATCH: "provider reports another amount: kept for review",
    }[verdict]
    return Confirmation(
        payment.id, payment.order_id, payment.status, after, answer.state.value, note
    )


def _resubmit(
    db: Transactional, provider: Provider, payment: Payment, remote: str, lease: timedelta
) -> Confirmation:
    """Submit an `initiated` payment again, holding the charge lease like a resumed key."""
    held = retrying(db, lambda conn: ledger.take_lease(conn, payment.id, lease))
    if held is None:
        return _unchanged(payment, remote, "a charge of this payment is in progress")
    try:
        after = submit(db, provider, held)
    except ProviderUnavailable as error:
        return _unchanged(payment, "unavailable", error.message)
    return Confirmation(
        payment.id, payment.order_id, payment.status, after.status, remote, "resubmitted"
    )


def _unchanged(payment: Payment, remote: str, note: str) -> Confirmation:
    return Confirmation(payment.id, payment.order_id, payment.status, payment.status, remote, note)
