"""A signed callback's common case in one round trip, on the event loop (issue 12).

The callback route on Postgres calls `apply_callback_fast` first. One statement in autocommit
(store/ledger.py SETTLE_CALLBACK: migration 0005's database function) settles the common case
exactly as callbacks.apply_callback would, writing the same rows: a success or a failure for
an open payment of a signing provider, found by our reference, by the sender's transaction id
or as the order's pending payment, with the payment's amount and currency or none. A copy of
a recorded event is answered `duplicate` there too. Anything else comes back as None, having
written nothing, and the caller runs today's transaction (apply_callback via
store.db.retrying), which decides it: so every rule still has one home, callbacks.py and
settlement.py, and the function only takes the path they would take.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orderpay.clock import utcnow
from orderpay.domain.money import CURRENCY_EXPONENTS, parse_amount
from orderpay.domain.states import PaymentStatus
from orderpay.domain.validation import as_uuid
from orderpay.errors import InvalidAmount
from orderpay.payments.callbacks import SIGNING_PROVIDERS, Answer, Callback, CallbackResult
from orderpay.store import async_db, ledger
from orderpay.store.notifications import NotifyTarget

if TYPE_CHECKING:
    import asyncpg

PROCESSED = "processed"
DUPLICATE = "duplicate"
FALLBACK = "fallback"  # nothing written: the ordinary transaction decides

# Passed with every call, so that the rules stay in Python: the function only reads them.
_SIGNING = sorted(SIGNING_PROVIDERS)
_CURRENCIES = list(CURRENCY_EXPONENTS)
_EXPONENTS = list(CURRENCY_EXPONENTS.values())
# A callback's amount without a currency is parsed as the payment's currency, which only the
# database knows: it is read here with the most decimals any currency has (so every amount
# that some currency accepts parses) and compared there with the payment's, in its exponent.
_WIDEST = max(CURRENCY_EXPONENTS, key=lambda code: CURRENCY_EXPONENTS[code])
# SQLSTATEs after which the statement wrote nothing and the ordinary path decides: a deadlock
# or serialization failure (which that path runs again), an integrity violation (a sender's
# transaction id another payment has: that path says what it means), the function missing
# (a database not yet at schema 0005, e.g. during a rolling upgrade).
_FALL_BACK_ON = ("40P01", "40001", "42883")
_FALL_BACK_ON_CLASS = "23"


async def apply_callback_fast(
    pool: asyncpg.Pool,
    callback: Callback,
    notify: NotifyTarget,
    *,
    label: str = "Postgres",
) -> CallbackResult | None:
    """Settle the callback's common case in one statement; None: not the common case, nothing
    written, run callbacks.apply_callback in a transaction instead.

    Raises what the ordinary path raises for the same failure of the database (store/db.py's
    translation): DatabaseUnavailable when it cannot be reached or a lock or statement timed
    out, DatabaseInaccessible when it refuses the login or the write. `label`: the database as
    the operator's messages name it (Database.label).
    """
    arguments = settle_arguments(callback, notify)
    if arguments is None:
        return None
    try:
        row = await pool.fetchrow(ledger.SETTLE_CALLBACK, *arguments)  # type: ignore[no-untyped-call]
    except Exception as error:
        state = async_db.sqlstate(error)
        if state in _FALL_BACK_ON or (state or "").startswith(_FALL_BACK_ON_CLASS):
            return None
        translated = async_db.translate(error, label)
        if translated is None:
            raise
        raise translated from error
    if row is None:  # a function returns one row; be explicit rather than assume
        return None
    outcome, payment, _notification, _event = row
    payment_id = None if payment is None else uuid.UUID(bytes=payment.bytes)
    if outcome == PROCESSED:
        queued = callback.status is PaymentStatus.SUCCEEDED  # as apply_callback answers
        return CallbackResult(Answer.PROCESSED, payment_id, notification_queued=queued)
    if outcome == DUPLICATE:
        return CallbackResult(Answer.DUPLICATE, payment_id)
    return None


def settle_arguments(callback: Callback, notify: NotifyTarget) -> tuple[Any, ...] | None:
    """SETTLE_CALLBACK's parameters, in the function's order; None when the callback cannot be
    the common case (an amount no currency accepts: the ordinary path says why)."""
    amount: Decimal | None = None
    if callback.amount is not None:
        try:
            amount = parse_amount(str(callback.amount), callback.currency or _WIDEST).as_decimal()
        except InvalidAmount:
            return None
    return (
        callback.source,
        callback.dedupe_key,
        callback.payload,
        callback.order_id,
        as_uuid(callback.provider_reference),  # our payment id, as callbacks._locate tries it
        callback.provider_reference,
        callback.status.value,
        amount,
        callback.currency,
        callback.reason,
        notify.channel,
        # NULL: the customer's phone, which the function reads with the order. Anything else
        # recipient_for gives (the merchant's URL) does not depend on the customer.
        notify.recipient_for("") or None,
        utcnow(),
        _SIGNING,
        _CURRENCIES,
        _EXPONENTS,
    )
