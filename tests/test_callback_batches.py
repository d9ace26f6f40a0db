"""Signed callbacks settled in batches (issue 12): one statement for many callbacks writes what
the ordinary transaction writes for each, decides each payment once, and never deadlocks
another batch; a listener worker's CallbackBatcher sends a lone callback at once and groups
the ones that arrive while its batches are in flight.

Everything runs against Postgres through the real asyncpg pool and database function.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from orderpay.errors import DatabaseUnavailable, OrderpayError
from orderpay.payments.callback_batches import CallbackBatcher, settle_batch
from orderpay.payments.callbacks import Callback, CallbackResult
from orderpay.store.async_db import create_pool
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from tests.test_callback_paths import (
    Sent,
    answer_of,
    body,
    ledger_rows,
    naming,
    ordinary,
    ours,
    pending,
    set_up,
)

LOG = NotifyTarget("log")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def settle_on(url: str, callbacks: Sequence[Callback]) -> list[CallbackResult | None]:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        return await settle_batch(pool, callbacks, LOG)
    finally:
        await pool.close()


def succeeded_timeline_rows(db: Database, payment: Payment) -> int:
    with db.transaction() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM order_events WHERE order_id = :o"
                    " AND event IN ('payment_succeeded', 'payment_failed')"
                ),
                {"o": payment.order_id},
            ).scalar_one()
        )


def status_of(db: Database, payment: Payment) -> str:
    with db.transaction() as conn:
        return str(
            conn.execute(
                text("SELECT status FROM payments WHERE id = :p"), {"p": payment.id}
            ).scalar_one()
        )


# --- One batch, the rows of the ordinary transaction ------------------------------------------


def answered(db: Database, callback: Callback) -> tuple[Any, ...]:
    """The ordinary transaction's answer, or the error it raises (an unknown order)."""
    try:
        return answer_of(ordinary(db, callback, LOG))
    except OrderpayError as error:
        return ("raised", error.code)


def mixed_batch(db: Database) -> list[Sent]:
    """Settled in the batch: a success and a failure by our reference, a success by the
    sender's own id, a copy of a recorded event; left to the ordinary path (last, as the
    route runs them once the batch is back): an amount mismatch and an unknown order."""
    success, failure, by_sender, copied, mismatched = (pending(db) for _ in range(5))
    recorded = Sent(ours(copied))
    ordinary(db, recorded.parsed(), LOG)
    return [
        Sent(ours(success)),
        Sent(ours(failure, "failed", reason="EXPIRED")),
        Sent(body("MP000000777.SENDER", by_sender.order_id)),
        recorded,
        Sent(ours(mismatched, amount="24.00")),
        Sent(body(str(uuid.uuid4()), uuid.uuid4())),
    ]


def test_a_batch_writes_the_rows_and_answers_of_the_ordinary_transaction_one_by_one(
    pg_url: str, second_pg_url: str
) -> None:
    sent = set_up(pg_url, mixed_batch, "mixed batch")
    assert set_up(second_pg_url, mixed_batch, "mixed batch") == sent
    url = pg_url
    batch_db, ordinary_db = Database(pg_url), Database(second_pg_url)
    try:
        callbacks = [one.parsed() for one in sent]
        decided = run(settle_on(url, callbacks))
        batch_answers = [
            answer_of(result) if result is not None else answered(batch_db, callback)
            for callback, result in zip(callbacks, decided, strict=True)
        ]
        ordinary_answers = [answered(ordinary_db, callback) for callback in callbacks]

        assert [result is not None for result in decided] == [True] * 4 + [False] * 2
        batch_named, ordinary_named = naming(batch_db), naming(ordinary_db)
        assert [tuple(map(batch_named, a)) for a in batch_answers] == [
            tuple(map(ordinary_named, a)) for a in ordinary_answers
        ]
        assert ledger_rows(batch_db) == ledger_rows(ordinary_db)
    finally:
        batch_db.dispose()
        ordinary_db.dispose()


def test_a_batch_that_falls_back_for_a_callback_writes_nothing_for_it(
    db: Database, pg_url: str
) -> None:
    settled, mismatched = pending(db), pending(db)
    callbacks = [Sent(ours(settled)).parsed(), Sent(ours(mismatched, amount="1")).parsed()]

    decided = run(settle_on(pg_url, callbacks))

    assert decided[0] is not None
    assert decided[1] is None
    assert status_of(db, mismatched) == "pending"
    with db.transaction() as conn:
        recorded = conn.execute(text("SELECT dedupe_key FROM webhook_events")).scalars().all()
        queued = conn.execute(text("SELECT payment_id FROM notifications")).scalars().all()
        events = conn.execute(
            text("SELECT count(*) FROM order_events WHERE order_id = :o"),
            {"o": mismatched.order_id},
        ).scalar_one()
    assert recorded == [callbacks[0].dedupe_key]
    assert queued == [settled.id]
    assert events == 3  # created, initiated, pending: as before the batch


# --- One payment, one decision per batch --------------------------------------------------------


def test_a_success_and_a_failure_for_one_payment_in_one_batch_settle_it_once(
    db: Database, pg_url: str
) -> None:
    payment = pending(db)
    success = Sent(ours(payment)).parsed()
    failure = Sent(ours(payment, "failed", reason="EXPIRED")).parsed()

    decided = run(settle_on(pg_url, [success, failure]))

    assert decided[0] is not None
    assert decided[0].answer.value == "processed"
    assert decided[1] is None  # left to the ordinary path, which sees the payment succeeded
    assert status_of(db, payment) == "succeeded"
    assert succeeded_timeline_rows(db, payment) == 1


def test_two_copies_of_one_event_in_one_batch_settle_it_once(db: Database, pg_url: str) -> None:
    payment = pending(db)
    copy = Sent(ours(payment)).parsed()

    decided = run(settle_on(pg_url, [copy, copy]))

    assert decided[0] is not None
    assert decided[0].answer.value == "processed"
    assert decided[1] is None
    assert succeeded_timeline_rows(db, payment) == 1


# --- Batches racing -----------------------------------------------------------------------------

RACED = 24
WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def _race_past_a_held_order(
    url: str, held: uuid.UUID, first: list[Callback], second: list[Callback]
) -> list[Any]:
    """Both batches at once while another transaction holds order `held`; released once
    both wait for a lock, so that each has locked what it locks before that order."""
    pool = await create_pool(url, min_size=3, max_size=3)
    try:
        async with pool.acquire() as holder:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", held)
            racing = asyncio.ensure_future(
                asyncio.gather(settle_batch(pool, first, LOG), settle_batch(pool, second, LOG))
            )
            while await holder.fetchval(WAITING_FOR_A_LOCK) < 2:
                await asyncio.sleep(0.01)
            await transaction.rollback()
        return list(await racing)
    finally:
        await pool.close()


def test_batches_naming_the_same_orders_in_opposite_orders_never_deadlock(
    db: Database, pg_url: str
) -> None:
    payments = sorted((pending(db) for _ in range(RACED)), key=lambda p: p.order_id)
    callbacks = [Sent(ours(payment)).parsed() for payment in payments]
    held = payments[RACED // 2].order_id

    forward, backward = run(_race_past_a_held_order(pg_url, held, callbacks, callbacks[::-1]))

    # A deadlock would roll one batch back: every callback of it would come back None.
    answers = [r.answer.value if r is not None else None for r in [*forward, *backward]]
    assert None not in answers
    assert sorted(answers) == ["duplicate"] * RACED + ["processed"] * RACED
    with db.transaction() as conn:
        assert conn.execute(text("SELECT count(*) FROM notifications")).scalar_one() == RACED


# --- The batcher --------------------------------------------------------------------------------


class Recorded:
    """settle_batch on a real pool, recording the callbacks of each batch it was given."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.batches: list[list[Callback]] = []

    async def __call__(self, callbacks: Sequence[Callback]) -> list[CallbackResult | None]:
        self.batches.append(list(callbacks))
        return await settle_batch(self.pool, callbacks, LOG)


async def _through_batcher(
    url: str, callbacks: list[Callback], max_in_flight: int
) -> tuple[list[Any], list[list[Callback]]]:
    pool = await create_pool(url, min_size=1, max_size=max_in_flight)
    try:
        settle = Recorded(pool)
        batcher = CallbackBatcher(settle, max_in_flight=max_in_flight)
        results = await asyncio.gather(
            *[batcher.settle(callback) for callback in callbacks], return_exceptions=True
        )
        return list(results), settle.batches
    finally:
        await pool.close()


def test_a_lone_callback_goes_at_once_as_a_batch_of_one(db: Database, pg_url: str) -> None:
    callback = Sent(ours(pending(db))).parsed()

    results, batches = run(_through_batcher(pg_url, [callback], max_in_flight=1))

    assert batches == [[callback]]
    assert results[0].answer.value == "processed"


def test_callbacks_arriving_while_a_batch_is_in_flight_go_together_in_the_next(
    db: Database, pg_url: str
) -> None:
    callbacks = [Sent(ours(pending(db))).parsed() for _ in range(10)]

    results, batches = run(_through_batcher(pg_url, callbacks, max_in_flight=1))

    assert batches == [callbacks[:1], callbacks[1:]]
    assert [r.answer.value for r in results] == ["processed"] * 10


def test_callbacks_about_one_order_never_share_a_batch(db: Database, pg_url: str) -> None:
    first, payment = pending(db), pending(db)
    success = Sent(ours(payment)).parsed()
    failure = Sent(ours(payment, "failed", reason="EXPIRED")).parsed()
    callbacks = [Sent(ours(first)).parsed(), success, failure]

    results, batches = run(_through_batcher(pg_url, callbacks, max_in_flight=1))

    assert batches == [[callbacks[0]], [success], [failure]]
    assert results[1].answer.value == "processed"
    assert results[2] is None  # the ordinary path's to decide: the payment succeeded


async def _on_a_closed_pool(url: str, callbacks: list[Callback]) -> list[Any]:
    pool = await create_pool(url, min_size=1, max_size=1)
    await pool.close()
    batcher = CallbackBatcher(lambda batch: settle_batch(pool, batch, LOG), max_in_flight=1)
    return list(
        await asyncio.gather(*[batcher.settle(c) for c in callbacks], return_exceptions=True)
    )


def test_a_batch_that_fails_fails_each_of_its_callbacks(db: Database, pg_url: str) -> None:
    payments = [pending(db) for _ in range(3)]

    results = run(_on_a_closed_pool(pg_url, [Sent(ours(p)).parsed() for p in payments]))

    assert [type(result) for result in results] == [DatabaseUnavailable] * 3
    assert {status_of(db, payment) for payment in payments} == {"pending"}


@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_the_batcher_settles_each_callback_once_whatever_arrives_together(
    max_in_flight: int, db: Database, pg_url: str
) -> None:
    payments = [pending(db) for _ in range(6)]
    callbacks = [Sent(ours(p)).parsed() for p in payments] * 2  # each sent twice

    results, _ = run(_through_batcher(pg_url, callbacks, max_in_flight=max_in_flight))

    answers = [r.answer.value if r is not None else "fallback" for r in results]
    for first, copy in zip(answers[:6], answers[6:], strict=True):  # either copy may win
        assert sorted([first, copy]) in (["duplicate", "processed"], ["fallback", "processed"])
    assert {status_of(db, payment) for payment in payments} == {"succeeded"}
    assert sum(succeeded_timeline_rows(db, p) for p in payments) == 6
