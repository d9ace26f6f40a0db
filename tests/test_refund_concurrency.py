"""Refunds racing each other on Postgres (real threads and real processes), and a refund
whose process died between the provider's answer and our record of it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import pytest

from orderpay import clock
from orderpay.domain.states import OrderStatus, RefundStatus
from orderpay.errors import OrderpayError
from orderpay.payments.charge_cycle import reference_of
from orderpay.payments.refund import RefundResult, ask_for, claim_refund
from orderpay.providers.base import RefundRequest
from orderpay.providers.capabilities import SIMULATOR
from orderpay.store.db import Database
from orderpay.store.orders import get_order
from tests.conftest import Cli, count_rows
from tests.processes import run_cli_in_parallel
from tests.refund_helpers import (
    LEASE_SECONDS,
    RecordingProvider,
    a_paid_payment,
    refund,
    refunds_of,
    timeline_of,
)

CALLERS = 12
T = TypeVar("T")


def all_at_once(work: list[Callable[[], T]]) -> list[T | OrderpayError]:
    """Run each callable on its own thread, released together; each one's result or error."""
    barrier = threading.Barrier(len(work))
    outcomes: list[T | OrderpayError | None] = [None] * len(work)

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            outcomes[index] = work[index]()
        except OrderpayError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(outcome is not None for outcome in outcomes), "a caller did not finish"
    return outcomes  # type: ignore[return-value]


def codes(outcomes: Sequence[object]) -> Counter[str]:
    return Counter(o.code if isinstance(o, OrderpayError) else "ok" for o in outcomes)


def test_twelve_concurrent_refunds_of_one_payment_never_add_up_to_more_than_it(
    pg_url: str,
) -> None:
    db = Database(pg_url, pool_size=CALLERS, max_overflow=4)
    payment = a_paid_payment(db)  # 25.00 GHS: room for eight refunds of 3.00
    provider = RecordingProvider()

    def refund_with_key(n: int) -> Callable[[], RefundResult]:
        return lambda: refund(db, provider, payment.id, key=f"refund-{n}", amount="3.00")

    outcomes = all_at_once([refund_with_key(n) for n in range(CALLERS)])

    stored = refunds_of(db, payment.id)
    db.dispose()
    assert codes(outcomes) == Counter({"ok": 8, "refund_exceeds_payment": 4})
    not_failed = [r for r in stored if r.status is not RefundStatus.FAILED]
    assert sum(r.amount.minor_units for r in not_failed) <= payment.amount.minor_units
    assert len(stored) == 8
    # The provider was asked for each stored refund once, and for nothing else.
    assert sorted(provider.references()) == sorted(r.id for r in stored)


@pytest.mark.slow
def test_twelve_processes_refunding_one_payment_with_twelve_keys_never_exceed_it(
    pg_url: str, db: Database
) -> None:
    payment = a_paid_payment(db)
    argvs = [
        [
            "refund",
            str(payment.id),
            "--key",
            f"refund-{n}",
            "--amount",
            "3.00",
            "--reason",
            "race",
            "--yes",
        ]
        for n in range(CALLERS)
    ]

    exits = run_cli_in_parallel({"DATABASE_URL": pg_url}, argvs)

    stored = refunds_of(db, payment.id)
    assert Counter(exits) == Counter({0: 8, 4: 4}), exits
    assert sum(r.amount.minor_units for r in stored) == 2400
    assert {r.status for r in stored} == {RefundStatus.SUCCEEDED}
    with db.transaction() as conn:
        assert get_order(conn, payment.order_id).status is OrderStatus.PARTIALLY_REFUNDED


def test_twelve_concurrent_runs_of_one_refund_key_make_one_refund_and_one_provider_request(
    pg_url: str,
) -> None:
    db = Database(pg_url, pool_size=CALLERS, max_overflow=4)
    payment = a_paid_payment(db)
    provider = RecordingProvider()

    outcomes = all_at_once(
        [lambda: refund(db, provider, payment.id, key="refund-1", amount="5.00")] * CALLERS
    )

    stored = refunds_of(db, payment.id)
    db.dispose()
    assert len(stored) == 1
    assert provider.references() == [stored[0].id]
    # Each run either made it, replayed it, or was told the key is in flight.
    assert set(codes(outcomes)) <= {"ok", "idempotency_key_in_use"}
    assert codes(outcomes)["ok"] >= 1


def test_a_refund_whose_process_died_after_the_provider_answered_is_resumed_by_its_key(
    cli: Cli, db: Database
) -> None:
    payment = a_paid_payment(db)
    provider = RecordingProvider()
    ask = ask_for(
        payment.id,
        key="refund-1",
        amount="10.00",
        currency=None,
        reason="damaged",
        operator="tester",
    )
    with db.transaction() as conn:  # step 1 ran...
        claim = claim_refund(
            conn, ask, modes=SIMULATOR.refund_modes, lease=timedelta(seconds=LEASE_SECONDS)
        )
    claimed = claim.refund
    # ...and step 2: the provider took the request. The process died before recording it.
    provider.request_refund(
        RefundRequest(claimed.id, reference_of(claim.payment), claimed.amount, claimed.reason)
    )
    before = count_rows(db)

    while_leased = cli(
        "refund",
        str(payment.id),
        "--key",
        "refund-1",
        "--amount",
        "10.00",
        "--reason",
        "damaged",
        "--yes",
        "--json",
    )
    rows_while_leased = count_rows(db)
    clock.advance(timedelta(seconds=LEASE_SECONDS + 1))  # the dead process's lease runs out
    resumed = refund(db, provider, payment.id, key="refund-1", amount="10.00", reason="damaged")

    assert while_leased.exit_code == 4
    assert while_leased.error()["code"] == "idempotency_key_in_use"
    assert rows_while_leased == before
    assert (resumed.refund.id, resumed.replayed) == (claimed.id, True)
    assert resumed.refund.status is RefundStatus.SUCCEEDED
    # The provider was asked again under the same reference (it deduplicates it).
    assert provider.references() == [claimed.id, claimed.id]
    assert [r.id for r in refunds_of(db, payment.id)] == [claimed.id]
    assert "refund_resumed" in [e.event for e in timeline_of(db, payment.order_id)]
