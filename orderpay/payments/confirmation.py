"""Asking the provider what became of a payment, and settling on its answer.

MTN signs nothing, so its callbacks are only hints: the listener records one and then asks
MTN's status call before changing money state. `orderpay reconcile` does the same for payments
whose callback never came, and resumes `initiated` payments whose request may never have
reached the provider. Outcomes go through settlement.settle, so notifications follow.

A dry run (`orderpay reconcile --dry-run`) takes the same path and asks the provider the same
question, but decides with settlement.classify instead of settling, and never resubmits: it
writes nothing and sends nothing to the provider but status calls.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.states import PaymentStatus
from orderpay.errors import ProviderUnavailable
from orderpay.payments.charge import submit
from orderpay.payments.settlement import Report, Settled, classify, settle
from orderpay.providers.base import (
    PaymentRef,
    Provider,
    RemoteState,
    StatusAnswer,
)
from orderpay.store import ledger, locks
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, to_confirm

REMOTE_OUTCOMES = {
    RemoteState.SUCCEEDED: PaymentStatus.SUCCEEDED,
    RemoteState.FAILED: PaymentStatus.FAILED,
}


class Action(StrEnum):
    """What confirming a payment did (or, in a dry run, would do)."""

    SETTLED = "settled"  # the payment took the provider's outcome (and the order, on success)
    RESUBMITTED = "resubmitted"  # an `initiated` payment was asked of the provider again
    REVIEW = "review"  # the provider disagrees with our records: kept for review, nothing moved
    NONE = "none"  # nothing to do: no outcome yet, not asked, already settled


@dataclass(frozen=True, slots=True)
class Confirmation:
    payment_id: uuid.UUID
    order_id: uuid.UUID
    before: PaymentStatus
    after: PaymentStatus  # in a dry run: what it would be (a resubmission's is not known yet)
    remote: str  # what the provider said, or why it was not asked
    note: str = ""
    action: Action = Action.NONE
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return self.before is not self.after

    @property
    def notification_queued(self) -> bool:
        return not self.dry_run and self.changed and self.after is PaymentStatus.SUCCEEDED


def reference_of(payment: Payment) -> PaymentRef:
    return PaymentRef(
        payment.id,
        payment.provider_reference,
        payment.order_id,
        payment.amount,
        payment.payer_phone,
        payment.created_at,
    )


def confirm_payment(
    db: Transactional,
    provider: Provider,
    payment: Payment,
    *,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
    dry_run: bool = False,
) -> Confirmation:
    """Ask the provider about one open payment and apply a terminal answer.

    An `initiated` payment the provider does not know is submitted again under its own
    reference (the provider deduplicates it), holding the charge lease like a resumed key.
    With `dry_run`, only the status call is made: the answer says what would be done.
    """
    before = payment.status
    if not to_confirm(payment):
        return _unchanged(payment, "not asked", "already settled", dry_run)
    if payment.provider != provider.name:
        # Asking MTN about a simulator payment (or the reverse) could resubmit it for real.
        return _unchanged(payment, "not asked", f"made through {payment.provider}", dry_run)
    try:
        answer = provider.payment_status(reference_of(payment))
    except ProviderUnavailable as error:
        return _unchanged(payment, "unavailable", error.message, dry_run)
    target = REMOTE_OUTCOMES.get(answer.state)
    if target is not None:
        return _settle(db, payment, answer, target, notify=notify, source=source, dry_run=dry_run)
    if before is PaymentStatus.INITIATED:
        # No outcome, and we never recorded the provider's receipt: the request may never
        # have arrived (MTN: 404). Asking again under the same reference is safe either way.
        return _resubmit(db, provider, payment, answer.state.value, lease, dry_run)
    return _unchanged(payment, answer.state.value, "no outcome yet", dry_run)


def _settle(
    db: Transactional,
    payment: Payment,
    answer: StatusAnswer,
    target: PaymentStatus,
    *,
    notify: NotifyTarget,
    source: str,
    dry_run: bool,
) -> Confirmation:

    report = Report(
        target,
        source,
        reason=answer.reason,
        amount=answer.amount,
        transaction_id=answer.transaction_id,
    )

    def apply(conn: Connection) -> tuple[Settled, PaymentStatus]:
        if dry_run:  # the same decision, on the rows as they are, locking and writing nothing
            locked = locks.peek_payment(conn, payment.id)
            assert locked is not None, "payments are never deleted"
            verdict = classify(locked, report)
        else:
            locked = locks.lock_payment(conn, payment.id)
            assert locked is not None, "payments are never deleted"
            verdict = settle(conn, locked, report, notify)
        return verdict, target if verdict is Settled.APPLIED else locked.payment.status

    verdict, after = retrying(db, apply)
    note, action = {
        Settled.APPLIED: ("", Action.SETTLED),
        Settled.UNCHANGED: ("already settled", Action.NONE),
        Settled.CONFLICT: ("provider disagrees with our records: kept for review", Action.REVIEW),
        Settled.MISMATCH: ("provider reports another amount: kept for review", Action.REVIEW),
    }[verdict]
    return Confirmation(
        payment.id,
        payment.order_id,
        payment.status,
        after,
        answer.state.value,
        note,
        action,
        dry_run,
    )


def _resubmit(
    db: Transactional,
    provider: Provider,
    payment: Payment,
    remote: str,
    lease: timedelta,
    dry_run: bool,
) -> Confirmation:
    """Submit an `initiated` payment again, holding the charge lease like a resumed key.

    A dry run takes no lease and submits nothing: it says whether it would (its outcome is
    the provider's to give, so `after` stays `initiated`)."""
    if dry_run:
        leased = payment.lease_expires_at is not None and payment.lease_expires_at >= utcnow()
        if leased:
            return _unchanged(payment, remote, "a charge of this payment is in progress", True)
        return Confirmation(
            payment.id,
            payment.order_id,
            payment.status,
            payment.status,
            remote,
            "would be submitted again under its own reference",
            Action.RESUBMITTED,
            True,
        )
    held = retrying(db, lambda conn: ledger.take_lease(conn, payment.id, lease))
    if held is None:
        return _unchanged(payment, remote, "a charge of this payment is in progress", False)
    try:
        after = submit(db, provider, held)
    except ProviderUnavailable as error:
        return _unchanged(payment, "unavailable", error.message, False)
    return Confirmation(
        payment.id,
        payment.order_id,
        payment.status,
        after.status,
        remote,
        "resubmitted",
        Action.RESUBMITTED,
    )


def _unchanged(payment: Payment, remote: str, note: str, dry_run: bool) -> Confirmation:
    return Confirmation(
        payment.id,
        payment.order_id,
        payment.status,
        payment.status,
        remote,
        note,
        Action.NONE,
        dry_run,
    )
