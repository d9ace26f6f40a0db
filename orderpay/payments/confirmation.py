"""Asking a payment's provider what became of it, and settling on its answer.

MTN signs nothing, so its callbacks are only hints: the listener records one, then asks
MTN's status call (here) before changing money state. The catch-up and `orderpay reconcile`
ask the same way (life_cycle.check): a definite answer settles the payment, an `initiated`
one the provider does not show settled is submitted again under its own reference, anything
else stays open.
"""

from __future__ import annotations

from datetime import timedelta

from orderpay.payments.charge_cycle import ChargeCycle
from orderpay.payments.life_cycle import Check, check
from orderpay.providers.base import Provider, StatusAnswer
from orderpay.store.db import Transactional
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment


def confirm_payment(
    db: Transactional,
    provider: Provider,
    payment: Payment,
    *,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
    dry_run: bool = False,
    hint: StatusAnswer | None = None,
) -> Check:
    """Ask the provider about one payment whose outcome is awaited and act on its answer.
    With `dry_run`, only the status call is made: the answer says what would be done.
    `hint`: what an unsigned callback said, whose receipt and amount are kept once the
    provider confirms its outcome."""
    return check(
        db,
        provider,
        ChargeCycle(payment, hint),
        notify=notify,
        source=source,
        lease=lease,
        dry_run=dry_run,
    )
