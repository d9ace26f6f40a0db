"""One lock order everywhere: order, then payment (DESIGN.md section 1).

A charge resuming its key locks the order (FOR SHARE), then takes its payment's lease; a
callback settling that payment locks the order, then the payment. Taken in one order, the two
wait for each other. Taken in opposite orders they deadlock, and Postgres kills one of them.
The race is made to happen: the charge holds its order lock, the callback is started and seen
waiting on a lock (pg_stat_activity), then the charge goes on to the payment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.callbacks import CallbackResult, apply_callback, parse_callback
from orderpay.payments.charge import Claim, claim_payment
from orderpay.store.db import Database, retrying
from orderpay.store.locks import lock_order_for_charge, lock_payment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import count_events, record_event
from orderpay.store.orders import get_order
from orderpay.store.payments import Payment, get_payment
from tests.builders import AMA, a_key, an_order
from tests.live_server import callback_body
from tests.redis_helpers import wait_until


@pytest.fixture
def other(db: Database) -> Iterator[Database]:
    """A second engine on the same database: the callback's own connection."""
    second = Database(db.url)
    yield second
    second.dispose()


def an_interrupted_charge(db: Database, key: str) -> Payment:
    """A charge that died after claiming its key: `initiated`, its lease already run out."""
    order = an_order(db)
    with db.transaction() as conn:
        claim = claim_payment(
            conn,
            order_id=order.id,
            key=key,
            payer_phone=AMA,
            provider="simulator",
            lease=timedelta(0),
        )
    return claim.payment


def sessions_waiting_on_a_lock(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_charge_resuming_its_key_and_a_callback_settling_it_do_not_deadlock(
    db: Database, other: Database
) -> None:
    key = a_key()
    payment = an_interrupted_charge(db, key)
    callback = parse_callback(callback_body(payment, "success"))
    settled: list[CallbackResult | BaseException] = []

    def settle_through_the_listener() -> None:
        try:
            with other.transaction() as conn:
                settled.append(apply_callback(conn, callback, NotifyTarget()))
        except BaseException as error:  # the deadlock's victim, if there is one
            settled.append(error)

    with db.transaction() as charging:
        # The resumed charge's first step: its order, FOR SHARE.
        assert lock_order_for_charge(charging, payment.order_id) is not None
        callback_thread = threading.Thread(target=settle_through_the_listener)
        callback_thread.start()
        wait_until(lambda: sessions_waiting_on_a_lock(db) == 1, what="the callback to wait")
        # Then the payment: take its lease (the old callback held the payment by now).
        resumed: Claim = claim_payment(
            charging,
            order_id=payment.order_id,
            key=key,
            payer_phone=AMA,
            provider="simulator",
            lease=timedelta(seconds=90),
        )
    callback_thread.join(30)

    assert resumed.must_submit is True
    assert len(settled) == 1
    assert isinstance(settled[0], CallbackResult), settled[0]
    assert settled[0].answer.value == "processed"
    with db.transaction() as conn:
        assert get_payment(conn, payment.id).status is PaymentStatus.SUCCEEDED
        assert get_order(conn, payment.order_id).status is OrderStatus.PAID


@pytest.mark.slow
def test_a_deadlock_is_run_again_inside_the_service_never_shown_as_unavailable(
    db: Database, other: Database
) -> None:
    # Two transactions that lock two orders in opposite orders: Postgres aborts one with a
    # deadlock; `retrying` runs that one again, and both complete.
    first, second = an_order(db), an_order(db)
    attempts: list[int] = []
    errors: list[BaseException] = []
    both_hold_one = threading.Barrier(2, timeout=30)

    def lock_both(database: Database, a: object, b: object) -> None:
        def work(conn: object) -> None:
            attempts.append(1)
            conn.execute(  # type: ignore[attr-defined]
                text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": a}
            )
            if len(attempts) <= 2:
                both_hold_one.wait()
            conn.execute(  # type: ignore[attr-defined]
                text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": b}
            )

        try:
            retrying(database, work)  # type: ignore[arg-type]
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=lock_both, args=(db, first.id, second.id)),
        threading.Thread(target=lock_both, args=(other, second.id, first.id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(attempts) == 3  # one of the two was run again after Postgres chose it


# A settling transaction locks its order FOR NO KEY UPDATE: it changes the order's status,
# never its key, so an order event written meanwhile (its foreign key takes FOR KEY SHARE on
# the order, as a charge recording its answer does while it holds its payment's row) goes on.
# Under FOR UPDATE that insert would wait, and with the charge holding the payment the callback
# wants next, the two would deadlock.


def test_an_order_event_can_be_written_while_a_callback_holds_its_order(
    db: Database, other: Database
) -> None:
    payment = an_interrupted_charge(db, a_key())
    with db.transaction() as settling:
        locked = lock_payment(settling, payment.id)  # the order, then the payment
        assert locked is not None

        with other.transaction() as recording:
            recording.execute(text("SET LOCAL lock_timeout = '5s'"))  # a bound, not a wait
            record_event(recording, payment.order_id, "payment_pending", "the provider took it")

    with db.transaction() as conn:
        assert count_events(conn, payment.order_id, "payment_pending") == 1
