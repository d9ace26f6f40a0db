"""`orderpay reconcile`: settle payments whose outcome never arrived, resume lost requests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection, select

from orderpay.clock import utcnow
from orderpay.domain.states import OPEN_PAYMENT_STATUSES
from orderpay.errors import OrderpayError
from orderpay.payments.confirmation import Confirmation, confirm_payment
from orderpay.providers.base import Provider
from orderpay.store.db import Transactional
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import COLUMNS, Payment, from_row
from orderpay.store.schema import payments


def payments_to_reconcile(conn: Connection, older_than: timedelta, limit: int) -> list[Payment]:
    """Payments still `initiated` or `pending` (or failed by an operator without their
    provider's word), unchanged for `older_than`, whoever their provider: each is asked of its
    own provider, even after ORDERPAY_PROVIDER changed."""
    rows = conn.execute(
        select(*COLUMNS)
        .where(
            payments.c.status.in_([s.value for s in OPEN_PAYMENT_STATUSES])
            | payments.c.awaiting_confirmation,
            payments.c.updated_at <= utcnow() - older_than,
        )
        .order_by(payments.c.updated_at)
        .limit(limit)
    )
    return [from_row(row) for row in rows]


def reconcile_payment(
    db: Transactional,
    provider_for: Callable[[str], Provider],
    payment: Payment,
    *,
    notify: NotifyTarget,
    lease: timedelta,
    dry_run: bool = False,
) -> Confirmation:
    """Ask the payment's own provider and settle on its answer; says so when that provider
    cannot be asked from here (not configured in this process). With `dry_run`, only ask:
    the answer says what would change, and nothing is written or resubmitted."""
    try:
        provider = provider_for(payment.provider)
    except OrderpayError as error:
        return Confirmation(
            payment.id,
            payment.order_id,
            payment.status,
            payment.status,
            "not asked",
            f"cannot ask {payment.provider}: {error.message}",
            dry_run=dry_run,
        )
    return confirm_payment(
        db, provider, payment, notify=notify, source="reconcile", lease=lease, dry_run=dry_run
    )
