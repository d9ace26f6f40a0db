"""Signed callbacks settled in batches on Postgres, on the listener's event loop.

Each listener worker hands its callbacks to a CallbackBatcher, which sends whatever callbacks
are waiting as one batch as soon as the previous batch is back: a lone callback goes at once,
and under load a batch settles many, which costs the database far less per callback than one
transaction each. A batch is two statements in autocommit:
1. read, without locks, what each callback names (store/locks.py peek_named_batch): the
   webhook event already recorded under its key, and the payment the ordinary path would lock;
2. decide each with the ordinary path's rules (callbacks.py, settlement.py), then write the
   common case (an open payment of a signing provider moving to the reported outcome) in one
   statement (store/ledger.py settling_statement), which locks the payments with their orders,
   writes only those still as read, and records each callback with its move.
A copy of a recorded event is answered `duplicate`. Anything else comes back as None, nothing
written for it, and the route runs the ordinary transaction (callbacks.apply_callback), which
decides it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from orderpay.clock import utcnow
from orderpay.domain.states import OrderStatus
from orderpay.domain.validation import as_uuid
from orderpay.errors import InvalidAmount
from orderpay.payments.callbacks import (
    SIGNING_PROVIDERS,
    Answer,
    Callback,
    CallbackResult,
    names_its_order,
    report_of,
)
from orderpay.payments.settlement import Settled, classify, move_for
from orderpay.store import async_db, ledger, locks, moves, webhook_events
from orderpay.store.locks import LockedPayment
from orderpay.store.moves import PaymentMove, RecordedCallback
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import payment_from

if TYPE_CHECKING:
    import asyncpg

# SQLSTATEs after which the settling statement wrote nothing and the ordinary path decides: a
# deadlock or serialization failure (which that path runs again), and an integrity violation
# (a sender's transaction id another payment holds, say: that path says what it means).
_FALL_BACK_ON = ("40P01", "40001")
_FALL_BACK_ON_CLASS = "23"


@cache
def _statements() -> tuple[async_db.Statement, async_db.Statement, async_db.Statement]:
    """The batch's statements, compiled for asyncpg once per process."""
    return (
        async_db.Statement(locks.peek_named_batch()),
        async_db.Statement(ledger.settling_statement(record_callbacks=True)),
        async_db.Statement(webhook_events.stored_under_keys()),
    )


@dataclass(frozen=True, slots=True)
class _Decided:
    place: int
    move: PaymentMove
    callback: RecordedCallback


async def settle_batch(
    pool: asyncpg.Pool,
    callbacks: Sequence[Callback],
    notify: NotifyTarget,
    *,
    label: str = "Postgres",
) -> list[CallbackResult | None]:
    """Settle the callbacks' common case: per callback its result, or None (nothing written
    for it: run callbacks.apply_callback in a transaction instead).

    Raises what the ordinary path raises for the same failure of the database (store/db.py's
    translation): DatabaseUnavailable when it cannot be reached or a lock or statement timed
    out, DatabaseInaccessible when it refuses the login or the write. `label`: the database as
    the operator's messages name it (Database.label).
    """
    results: list[CallbackResult | None] = [None] * len(callbacks)
    if not callbacks:
        return results
    read, write, _ = _statements()
    rows = await _run(pool, read, _read_values(callbacks), label)
    if rows is None:
        return results
    decided: list[_Decided] = []
    # The statement decides each payment once: a later callback about an order, payment or
    # event key an earlier one of the batch is about goes to the ordinary path.
    taken: set[object] = set()
    for row in rows:
        place = int(row["k"]) - 1
        callback = callbacks[place]
        seen, seen_payment = row["seen_outcome"], row["seen_payment_id"]
        if seen is not None:
            if webhook_events.is_copy(seen):
                results[place] = CallbackResult(Answer.DUPLICATE, seen_payment)
            continue
        located = _located(row)
        about = {callback.order_id, (callback.source, callback.dedupe_key)}
        if located is not None:
            about.add(located.payment.id)
        if about & taken:
            continue
        taken |= about
        move = _common_case(callback, located)
        if move is not None:
            recorded = RecordedCallback(callback.source, callback.dedupe_key, callback.payload)
            decided.append(_Decided(place, move, recorded))
    if not decided:
        return results
    values = moves.move_arrays(
        [d.move for d in decided], notify, utcnow(), [d.callback for d in decided]
    )
    written = await _run(pool, write, values, label)
    if written is None:
        return results
    settled = {int(row[0]) - 1 for row in written}
    for position, one in enumerate(decided):
        if position in settled:
            queued = one.move.succeeds
            results[one.place] = CallbackResult(Answer.PROCESSED, one.move.payment_id, queued)
    missed = [d for n, d in enumerate(decided) if n not in settled]
    if missed:
        await _second_look(pool, callbacks, [d.place for d in missed], results, label)
    return results


def _read_values(callbacks: Sequence[Callback]) -> dict[str, Any]:
    return {
        "b_source": [c.source for c in callbacks],
        "b_key": [c.dedupe_key for c in callbacks],
        "b_order": [c.order_id for c in callbacks],
        "b_payment": [as_uuid(c.provider_reference) for c in callbacks],
        "b_reference": [c.provider_reference for c in callbacks],
    }


def _located(row: Mapping[str, Any]) -> LockedPayment | None:
    """The payment read for a callback (a row of locks.peek_named_batch), or None."""
    if row["id"] is None:
        return None
    return LockedPayment(payment_from(row), OrderStatus(row["order_status"]), row["customer_phone"])


def _common_case(callback: Callback, located: LockedPayment | None) -> PaymentMove | None:
    """The move the ordinary path would write for this callback, when that is all it would
    do: a signing provider's payment of the callback's order, open, moving to the outcome."""
    if located is None or not names_its_order(callback, located):
        return None
    if located.payment.provider not in SIGNING_PROVIDERS:
        return None  # a hint: the provider is asked
    try:
        report = report_of(callback, located.payment)
    except InvalidAmount:
        return None  # the ordinary path says why
    if classify(located, report) is not Settled.APPLIED:
        return None
    return move_for(located, report)


async def _second_look(
    pool: asyncpg.Pool,
    callbacks: Sequence[Callback],
    places: list[int],
    results: list[CallbackResult | None],
    label: str,
) -> None:
    """Callbacks decided but not written: their payment changed since it was read, or a copy
    was recorded meanwhile. A copy that committed makes them a duplicate (as the ordinary
    path's insert would find it); the rest go to the ordinary path."""
    _, _, stored = _statements()
    keys = {(callbacks[p].source, callbacks[p].dedupe_key): p for p in places}
    values = {"b_source": [s for s, _ in keys], "b_key": [k for _, k in keys]}
    for source, key, outcome, payment_id in await _run(pool, stored, values, label) or []:
        if webhook_events.is_copy(outcome):
            results[keys[(source, key)]] = CallbackResult(Answer.DUPLICATE, payment_id)


async def _run(
    pool: asyncpg.Pool, statement: async_db.Statement, values: dict[str, Any], label: str
) -> list[Any] | None:
    """The statement's rows; None when it failed in a way the ordinary path decides."""
    try:
        return list(await pool.fetch(statement.sql, *statement.arguments(values)))
    except Exception as error:
        state = async_db.sqlstate(error)
        if state in _FALL_BACK_ON or (state or "").startswith(_FALL_BACK_ON_CLASS):
            return None
        translated = async_db.translate(error, label)
        if translated is None:
            raise
        raise translated from error


Settle = Callable[[Sequence[Callback]], Awaitable[list[CallbackResult | None]]]


class CallbackBatcher:
    """One listener worker's callbacks, settled in batches (settle_batch) on its event loop.

    A callback waits only while a batch is in flight; when it comes back, everything waiting
    by then (up to MAX_BATCH) goes as the next batch. Callbacks for the same order, or copies
    of the same event, never share a batch (each payment is decided once per batch): the later
    one waits for the next. A batch that fails fails each of its callbacks with the error.
    """

    # One batch in flight per worker: more made batches smaller and cost the database more per
    # callback (bench/webhooks.py). The price: a batch waiting for a lock holds up that
    # worker's other callbacks; the other workers go on.
    MAX_IN_FLIGHT = 1
    # A batch holds its orders' locks until it commits: a bound keeps that short.
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
        except Exception as error:  # each callback's request answers it
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
