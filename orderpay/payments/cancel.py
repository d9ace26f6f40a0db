"""An operator's cancel of a payment stuck `initiated` or `pending` (DESIGN.md section 5).

The payment's own provider is asked first, and its word wins: a definite failure fails it with
the operator's reason; a success settles it (the order is paid after all); a payment still
pending there is refused, since the payer may yet approve it. "Not found" or an ambiguous
answer is no definite answer (a provider may not show a request it took yet), and neither is
an unreachable provider: the cancel is refused unless forced. A forced cancel fails the
payment without the provider's word, says so in the order events, and leaves it on the
catch-up's list: a success reported later is kept for review (money to refund), never a paid
order. Either way the order can then be charged again with a new key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.answers import is_definite
from orderpay.domain.states import OPEN_PAYMENT_STATUSES, PaymentStatus
from orderpay.errors import (
    IdempotencyKeyInUse,
    OrderpayError,
    PaymentAlreadySettled,
    PaymentPendingAtProvider,
    ProviderUnavailable,
)
from orderpay.payments.charge_cycle import reference_of
from orderpay.payments.settlement import Report, settle
from orderpay.providers.base import Provider, RemoteState
from orderpay.store import ledger, locks
from orderpay.store.db import Transactional, retrying
from orderpay.store.moves import PaymentMove
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, get_payment

MAX_REASON_LENGTH = 255


class Cancelled(StrEnum):
    CANCELLED = "cancelled"  # the provider has no such payment, or says it failed: failed
    FORCED = "cancelled_unconfirmed"  # failed without the provider's word (--force)
    SUCCEEDED = "succeeded"  # the provider says it succeeded: settled as paid instead


@dataclass(frozen=True, slots=True)
class CancelResult:
    payment: Payment
    outcome: Cancelled
    provider_says: str  # what the provider answered, or why it was not asked


def cancel_payment(
    db: Transactional,
    provider_for: Callable[[str], Provider],
    payment_id: uuid.UUID,
    *,
    reason: str,
    force: bool,
    notify: NotifyTarget,
    operator: str,
) -> CancelResult:
    """Cancel an open payment after asking its provider; see the module docstring.

    `operator`: who cancels (Settings.operator_name), recorded on the order event of the
    failure it writes. A success the provider reports instead is the provider's word, not
    the operator's: its rows name the cancel in their detail only.
    """
    with db.transaction() as conn:
        payment = _cancellable(get_payment(conn, payment_id))
    try:
        answer = provider_for(payment.provider).payment_status(reference_of(payment))
    except OrderpayError as error:  # unreachable, or not configured in this process
        if not force:
            raise ProviderUnavailable(
                f"cannot ask {payment.provider} about payment {payment.id}: {error.message}; "
                "retry later, or pass --force to fail it without the provider's word (it is "
                "still asked, and a success reported later is kept for review)",
                payment=str(payment.id),
            ) from None
        return _forced(db, payment, reason, f"not asked: {error.message}", operator)
    said = answer.state.value
    if answer.state is RemoteState.PENDING:
        raise PaymentPendingAtProvider(
            f"{payment.provider} still has payment {payment.id} pending: the payer may yet "
            "approve it, so it cannot be cancelled now; wait for its outcome (the worker asks "
            f"{payment.provider} again on its own)",
            payment=str(payment.id),
        )
    if not is_definite(answer.state):
        # "Not found" may be a provider that has not caught up with a request it took.
        if not force:
            raise PaymentPendingAtProvider(
                f"{payment.provider} says {said} for payment {payment.id}: it may have the "
                "request and not show it yet, and may still take the money. Wait and retry, "
                "or pass --force to fail it without the provider's word (it is still asked, "
                "and a success reported later is kept for review)",
                payment=str(payment.id),
            )
        return _forced(db, payment, reason, f"{payment.provider} says {said}", operator)
    target = (
        PaymentStatus.SUCCEEDED if answer.state is RemoteState.SUCCEEDED else PaymentStatus.FAILED
    )

    def apply(conn: Connection) -> Payment:
        locked = locks.lock_payment(conn, payment.id)
        assert locked is not None, "payments are never deleted"
        report = Report(
            target,
            f"{payment.provider} status, asked to cancel by {operator}",
            reason=answer.reason or reason,
            amount=answer.amount,
            transaction_id=answer.transaction_id,
        )
        settle(conn, locked, report, notify, operator=operator)
        return get_payment(conn, payment.id)

    after = retrying(db, apply)
    outcome = Cancelled.SUCCEEDED if target is PaymentStatus.SUCCEEDED else Cancelled.CANCELLED
    return CancelResult(after, outcome, said)


def _forced(
    db: Transactional, payment: Payment, reason: str, said: str, operator: str
) -> CancelResult:
    """Failed without the provider's word: awaiting its confirmation, and still asked."""
    detail = (
        f"payment {payment.id} failed by the operator without {payment.provider}'s word "
        f"({said}): {reason}; it is still asked, and a success reported later is kept for review"
    )
    after = _fail(
        db,
        payment.id,
        reason,
        detail,
        "payment_cancelled_unconfirmed",
        forced=True,
        operator=operator,
    )
    return CancelResult(after, Cancelled.FORCED, said)


def _cancellable(payment: Payment) -> Payment:
    if payment.status not in OPEN_PAYMENT_STATUSES:
        raise PaymentAlreadySettled(
            f"payment {payment.id} is {payment.status}; only initiated or pending payments "
            "are cancelled",
            payment=str(payment.id),
        )
    lease = payment.lease_expires_at
    if payment.status is PaymentStatus.INITIATED and lease is not None and lease > utcnow():
        raise IdempotencyKeyInUse(
            f"a charge of payment {payment.id} is talking to {payment.provider} right now; "
            f"retry after {lease:%H:%M:%S} UTC",
            payment=str(payment.id),
        )
    return payment


def _fail(
    db: Transactional,
    payment_id: uuid.UUID,
    reason: str,
    detail: str,
    event: str,
    *,
    forced: bool,
    operator: str,
) -> Payment:
    """Fail the payment with the operator's reason, unless it moved on meanwhile."""

    def apply(conn: Connection) -> Payment:
        locked = locks.lock_payment(conn, payment_id)
        assert locked is not None, "payments are never deleted"
        _cancellable(locked.payment)
        cancel = PaymentMove(
            locked,
            PaymentStatus.FAILED,
            "the operator",
            reason=reason,
            unconfirmed=forced,
            event=event,
            detail=detail,
            operator=operator,
        )
        ledger.settle(conn, [cancel], None)
        return get_payment(conn, payment_id)

    return retrying(db, apply)
