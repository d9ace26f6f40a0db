"""`orderpay reconcile` for refunds: settle those whose outcome never came, resume lost ones.

A refund left `initiated` (its process died, or the provider could not be reached) is asked
of its provider again under the same reference, holding the refund's lease like a resumed key;
a `pending` one gets one status call. Outcomes go through refund_settlement, so the order and
the customer's notification follow once. A dry run asks the status of pending refunds, decides
with classify_refund, and writes and submits nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from orderpay.clock import utcnow
from orderpay.domain.states import RefundStatus
from orderpay.errors import OrderpayError, ProviderUnavailable
from orderpay.payments.confirmation import Action
from orderpay.payments.refund import REMOTE_OUTCOMES, confirm_refund, refund_ref, submit
from orderpay.payments.refund_settlement import RefundSettled, classify_refund, settle_refund
from orderpay.providers.base import Provider
from orderpay.store import refunds
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, get_payment
from orderpay.store.refunds import Refund

_ACTIONS = {
    RefundSettled.APPLIED: ("", Action.SETTLED),
    RefundSettled.UNCHANGED: ("already settled", Action.NONE),
    RefundSettled.CONFLICT: ("provider disagrees with our records: kept for review", Action.REVIEW),
    RefundSettled.MISMATCH: ("provider reports another amount: kept for review", Action.REVIEW),
}


@dataclass(frozen=True, slots=True)
class RefundCheck:
    refund_id: uuid.UUID
    payment_id: uuid.UUID
    order_id: uuid.UUID
    before: RefundStatus
    after: RefundStatus  # in a dry run: what it would be
    remote: str  # what the provider said, or why it was not asked
    note: str = ""
    action: Action = Action.NONE
    dry_run: bool = False
    notification_queued: bool = False


def reconcile_refund(
    db: Transactional,
    provider_for: Callable[[str], Provider],
    refund: Refund,
    *,
    notify: NotifyTarget,
    lease: timedelta,
    dry_run: bool = False,
) -> RefundCheck:
    """Ask the refund's own provider and settle on its answer (see the module docstring)."""
    try:
        provider = provider_for(refund.provider)
        provider.check_refunds_configured()
    except OrderpayError as error:
        return _unchanged(
            refund, "not asked", f"cannot ask {refund.provider}: {error.message}", dry_run
        )
    with db.transaction() as conn:
        payment = get_payment(conn, refund.payment_id)
    if refund.status is RefundStatus.INITIATED:
        return _resume(db, provider, refund, payment, notify=notify, lease=lease, dry_run=dry_run)
    try:
        answer = provider.refund_status(refund_ref(refund, payment))
    except ProviderUnavailable as error:
        return _unchanged(refund, "unavailable", error.message, dry_run)
    target = REMOTE_OUTCOMES.get(answer.state)
    if target is None:
        said = f" (the provider says {answer.reason})" if answer.reason else ""
        return _unchanged(refund, answer.state.value, f"no outcome yet{said}", dry_run)
    if dry_run:  # the same decision, on the refund as read, writing nothing
        verdict = classify_refund(refund, target, answer.amount)
        after, queued = (target if verdict is RefundSettled.APPLIED else refund.status), False
    else:
        settled = retrying(
            db,
            lambda conn: settle_refund(
                conn,
                refund.id,
                target,
                reason=answer.reason,
                amount=answer.amount,
                source="reconcile",
                notify=notify,
                transaction_id=answer.transaction_id,
            ),
        )
        verdict, after, queued = settled.verdict, settled.refund.status, settled.notification_queued
    note, action = _ACTIONS[verdict]
    return RefundCheck(
        refund.id,
        refund.payment_id,
        refund.order_id,
        refund.status,
        after,
        answer.state.value,
        note,
        action,
        dry_run,
        queued,
    )


def _resume(
    db: Transactional,
    provider: Provider,
    refund: Refund,
    payment: Payment,
    *,
    notify: NotifyTarget,
    lease: timedelta,
    dry_run: bool,
) -> RefundCheck:
    """Ask the provider again for an `initiated` refund, under its own reference."""
    if dry_run:
        if refund.lease_expires_at is not None and refund.lease_expires_at >= utcnow():
            return _unchanged(refund, "not asked", "a refund of this key is in progress", True)
        return RefundCheck(
            refund.id,
            refund.payment_id,
            refund.order_id,
            refund.status,
            refund.status,
            "not asked",
            "would be submitted again under its own reference",
            Action.RESUBMITTED,
            True,
        )
    held = retrying(db, lambda conn: refunds.take_lease(conn, refund.id, lease, operator=None))
    if held is None:
        return _unchanged(refund, "not asked", "a refund of this key is in progress", False)
    try:
        after = submit(db, provider, held, payment, resumed=True)
    except ProviderUnavailable as error:
        return _unchanged(refund, "unavailable", error.message, False)
    queued = False
    if after.status is RefundStatus.PENDING:
        settled = confirm_refund(db, provider, after, payment, notify, "reconcile")
        if settled is not None:
            after, queued = settled.refund, settled.notification_queued
    note = "resubmitted" + (f": {after.failure_reason}" if after.failure_reason else "")
    return RefundCheck(
        refund.id,
        refund.payment_id,
        refund.order_id,
        refund.status,
        after.status,
        "declined" if after.status is RefundStatus.FAILED else after.status.value,
        note,
        Action.RESUBMITTED,
        notification_queued=queued,
    )


def _unchanged(refund: Refund, remote: str, note: str, dry_run: bool) -> RefundCheck:
    return RefundCheck(
        refund.id,
        refund.payment_id,
        refund.order_id,
        refund.status,
        refund.status,
        remote,
        note,
        Action.NONE,
        dry_run,
    )
