"""Signed callbacks' common case in one round trip per batch, on the event loop (issue 12).

The callback route on Postgres hands each callback to its worker's CallbackBatcher, which
sends whatever callbacks are waiting as one statement (store/ledger.py SETTLE_CALLBACKS:
migration 0006's database function) as soon as fewer than MAX_IN_FLIGHT batches are in
flight: a lone callback goes at once as a batch of one, and under load each statement
settles the callbacks that arrived while the previous ones ran. The function settles the
common case exactly as callbacks.apply_callback would, writing the same rows: a success or a
failure for an open payment of a signing provider, found by our reference, by the sender's
transaction id or as the order's pending payment, with the payment's amount and currency or
none. A copy of a recorded event is answered `duplicate` there too. Anything else comes back
as None, having written nothing for that callback, and the caller runs today's transaction
(apply_callback via store.db.retrying), which decides it: so every rule still has one home,
callbacks.py and settlement.py, and the function only takes the path they would take.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
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
# (a database not yet at schema 0006, e.g. during a rolling upgrade).
_FALL_BACK_ON = ("40P01", "40001", "42883")
_FALL_BACK_ON_CLASS = "23"


async def settle_batch(
    pool: asyncpg.Pool,
    callbacks: Sequence[Callback],
    notify: NotifyTarget,
    *,
    label: str = "Postgres",
) -> list[CallbackResult | None]:
    """Settle the callbacks' common case in one statement: per callback its result, or None
    (not the common case, nothing written for it: run callbacks.apply_callback in a
    transaction instead). A failure of the statement that leaves nothing written and that the
    ordinary path decides (see _FALL_BACK_ON) is None for every callback.

    Raises what the ordinary path raises for the same failure of the database (store/db.py's
    translation): DatabaseUnavailable when it cannot be reached or a lock or statement timed
    out, DatabaseInaccessible when it refuses the login or the write. `label`: the database as
    the operator's messages name it (Database.label).
    """
    results: list[CallbackResult | None] = [None] * len(callbacks)
    sent, columns = _columns(callbacks)
    if not sent:
        return results
    try:
        rows = await pool.fetch(ledger.SETTLE_CALLBACKS, *columns, *batch_arguments(notify))
    except Exception as error:
        state = async_db.sqlstate(error)
        if state in _FALL_BACK_ON or (state or "").startswith(_FALL_BACK_ON_CLASS):
            return results
        translated = async_db.translate(error, label)
        if translated is None:
            raise
        raise translated from error
    for position, outcome, payment in rows:
        place = sent[position - 1]
        payment_id = None if payment is None else uuid.UUID(bytes=payment.bytes)
        if outcome == PROCESSED:
            queued = callbacks[place].status is PaymentStatus.SUCCEEDED  # as apply_callback
            results[place] = CallbackResult(Answer.PROCESSED, payment_id, queued)
        elif outcome == DUPLICATE:
            results[place] = CallbackResult(Answer.DUPLICATE, payment_id)
    return results


# The per-callback parameters of SETTLE_CALLBACKS, in the function's order (each an array).
_PER_CALLBACK = 10


def callback_arguments(callback: Callback) -> tuple[Any, ...] | None:
    """One callback's elements of SETTLE_CALLBACKS's arrays, in the function's order; None
    when it cannot be the common case (an amount no currency accepts: the ordinary path says
    why)."""
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
    )


def batch_arguments(notify: NotifyTarget) -> tuple[Any, ...]:
    """SETTLE_CALLBACKS's parameters that hold for the whole batch, in the function's order."""
    return (
        notify.channel,
        # NULL: the customer's phone, which the function reads with the order. Anything else
        # recipient_for gives (the merchant's URL) does not depend on the customer.
        notify.recipient_for("") or None,
        utcnow(),
        _SIGNING,
        _CURRENCIES,
        _EXPONENTS,
    )


def settle_arguments(callbacks: Sequence[Callback], notify: NotifyTarget) -> tuple[Any, ...] | None:
    """All of SETTLE_CALLBACKS's parameters for these callbacks (bench/webhooks.py's pgbench
    script is made from them); None when none of them can be the common case."""
    sent, columns = _columns(callbacks)
    return (*columns, *batch_arguments(notify)) if sent else None


def _columns(callbacks: Sequence[Callback]) -> tuple[list[int], list[list[Any]]]:
    """The places of the callbacks that can be the common case, and their elements of
    SETTLE_CALLBACKS's arrays, one list per array."""
    sent: list[int] = []
    columns: list[list[Any]] = [[] for _ in range(_PER_CALLBACK)]
    for place, callback in enumerate(callbacks):
        arguments = callback_arguments(callback)
        if arguments is None:
            continue
        sent.append(place)
        for column, value in zip(columns, arguments, strict=True):
            column.append(value)
    return sent, columns


Settle = Callable[[Sequence[Callback]], Awaitable[list[CallbackResult | None]]]


class CallbackBatcher:
    """One listener worker's callbacks, settled in batches (settle_batch) on its event loop.

    A callback waits only while MAX_IN_FLIGHT batches are already in flight; when one comes
    back, everything waiting by then (up to MAX_BATCH) goes as the next batch. So a lone
    callback is sent at once, and under load a statement settles many: Postgres's server time
    per callback fell from 1,430-1,625 µs to 760-930 µs with batches of 8 to 16 (pgbench),
    and the worker's Python time by the round trip it no longer makes per callback. Callbacks for
    the same order, or copies of the same event, never share a batch (the function decides
    each payment once per statement): the later one waits for the next batch. A batch that
    fails fails each of its callbacks with the same error.
    """

    # One batch in flight per worker process: bench/webhooks.py (64 connections, 2 workers,
    # 2 cores, alternating runs) settled 2,292-2,391 callbacks/s with p99 42-54 ms, against
    # 1,864-2,017/s and 55-56 ms with two (three: fewer still); larger batches cost Postgres
    # less per callback. The price: a batch that waits for a lock (lock_timeout 5 s) holds up
    # that worker's other callbacks; the other workers go on.
    MAX_IN_FLIGHT = 1
    # A batch's statement holds its orders' locks until it commits: a bound keeps that short.
    MAX_BATCH = 64

    def __init__(
        self, settle: Settle, *, max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH
    ) -> None:
        self._settle = settle
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: deque[tuple[Callback, asyncio.Future[CallbackResult | None]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def settle(self, callback: Callback) -> CallbackResult | None:
        future: asyncio.Future[CallbackResult | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((callback, future))
        self._send()
        return await future

    def _send(self) -> None:
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            batch = self._next_batch()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _next_batch(self) -> list[tuple[Callback, asyncio.Future[CallbackResult | None]]]:
        batch: list[tuple[Callback, asyncio.Future[CallbackResult | None]]] = []
        later: list[tuple[Callback, asyncio.Future[CallbackResult | None]]] = []
        orders: set[uuid.UUID] = set()
        keys: set[tuple[str, str]] = set()
        while self._waiting and len(batch) < self._max_batch:
            entry = self._waiting.popleft()
            callback, future = entry
            if future.done():  # its request went away (cancelled)
                continue
            key = (callback.source, callback.dedupe_key)
            if callback.order_id in orders or key in keys:
                later.append(entry)
                continue
            orders.add(callback.order_id)
            keys.add(key)
            batch.append(entry)
        self._waiting.extendleft(reversed(later))
        return batch

    async def _run(
        self, batch: list[tuple[Callback, asyncio.Future[CallbackResult | None]]]
    ) -> None:
        try:
            results = await self._settle([callback for callback, _ in batch])
        except Exception as error:  # each callback's request answers it (momo_route.apply)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._send()
