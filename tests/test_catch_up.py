"""The catch-up (DESIGN.md sections 4 and 5): the worker asks a provider again, on a schedule,
about every payment and refund without its final word, once per step however many workers
run; a definite answer settles it, anything else keeps it open; past the deadline an operator
is asked (one `no_final_answer` review item) and the questions go on.

MTN is the local fake; time passes on orderpay's clock (orderpay.clock), never by sleeping.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from orderpay import clock
from orderpay.domain.schedule import CatchUpSchedule
from orderpay.domain.states import OrderStatus, PaymentStatus, RefundStatus
from orderpay.errors import InvalidInput
from orderpay.payments.cancel import Cancelled, cancel_payment
from orderpay.payments.catch_up import CLAIM, CatchUp
from orderpay.payments.charge import charge_order
from orderpay.providers.base import PaymentRef, Provider, StatusAnswer
from orderpay.providers.mtn import MtnProvider
from orderpay.providers.mtn_config import DEFAULT_BUDGET_SECONDS
from orderpay.store import ledger, reviews
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from orderpay.store.reviews import ReviewItem
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import ONGOING, FakeMtn
from tests.ledger_views import current, notification_count, order_status
from tests.live_server import a_pending_payment, listener_client, listener_settings
from tests.refund_helpers import refund, refunds_of
from tests.test_health_and_metrics import metric

LEASE = timedelta(seconds=90)  # charge_order(lease_seconds=90): the first check comes then
SECOND = timedelta(seconds=1)
FIRST_STEP = timedelta(minutes=1)  # the default schedule's first wait, after the first check
SECOND_STEP = timedelta(minutes=5)  # and its second
STILL_PENDING = "+" + ONGOING  # MTN answers PENDING (its clock is not moved in these tests)
REASON = "customer paid cash"
NOTIFY = NotifyTarget()


@pytest.fixture
def provider(mtn: FakeMtn) -> Iterator[MtnProvider]:
    with mtn.provider() as made:
        yield made


def catch_up(db: Database, provider: Provider) -> CatchUp:
    """What `orderpay worker` builds (commands/worker.py _catch_up), with the default schedule."""
    return CatchUp(db, lambda _name: provider, NOTIFY, CatchUpSchedule.parse(), LEASE)


def mtn_payment(db: Database, provider: MtnProvider, payer: str = MTN_SANDBOX_PAYER) -> Payment:
    """A 25.00 EUR order charged through MTN: accepted, so pending; MTN never calls back."""
    order = an_order(db, phone=payer, currency="EUR")
    charged = charge_order(
        db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
    )
    assert charged.payment.status is PaymentStatus.PENDING
    return charged.payment


def asked(mtn: FakeMtn, item: uuid.UUID) -> int:
    """How many status queries MTN answered about this payment."""
    return sum(1 for r in mtn.requests if r.kind == "status" and r.path.endswith(f"/{item}"))


def open_items(db: Database, payment: Payment) -> list[ReviewItem]:
    with db.transaction() as conn:
        return reviews.open_items_of_payment(conn, payment.id)


# The schedule (pure).

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_default_schedule_is_1m_5m_15m_1h_6h_24h_with_a_7_day_deadline() -> None:
    schedule = CatchUpSchedule.parse()

    assert [step.total_seconds() / 60 for step in schedule.steps] == [1, 5, 15, 60, 360, 1440]
    assert schedule.deadline == timedelta(days=7)


def test_each_check_waits_its_step_and_after_the_last_step_a_day() -> None:
    schedule = CatchUpSchedule.parse("1m,5m,1h", "7d")

    waits = [schedule.next_check(made, T0) - T0 for made in range(1, 7)]

    hour, day = timedelta(hours=1), timedelta(days=1)
    assert waits == [FIRST_STEP, 5 * FIRST_STEP, hour, day, day, day]


@pytest.mark.parametrize(
    ("steps", "deadline"),
    [("", "7d"), (",", "7d"), ("5x", "7d"), ("1m,-5m", "7d"), ("1m", "-7d"), ("1m", "")],
)
def test_a_schedule_or_deadline_that_does_not_read_is_refused(steps: str, deadline: str) -> None:
    with pytest.raises((InvalidInput, ValueError)):
        CatchUpSchedule.parse(steps, deadline)


def test_an_item_is_overdue_only_once_past_the_deadline() -> None:
    schedule = CatchUpSchedule.parse(deadline="7d")

    assert not schedule.overdue(T0, T0 + timedelta(days=6, hours=23))
    assert not schedule.overdue(T0, T0 + timedelta(days=7))
    assert schedule.overdue(T0, T0 + timedelta(days=7, seconds=1))


# A payment whose callback never came.


def test_a_pending_payment_is_asked_once_when_its_first_check_is_due_and_settles_on_success(
    any_db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(any_db, provider)  # MTN: SUCCESSFUL, and nobody told us
    worker = catch_up(any_db, provider)

    clock.advance(LEASE - SECOND)
    assert worker.run_due().checked == []
    assert mtn.calls("status") == 0  # not due yet

    clock.advance(2 * SECOND)
    done = worker.run_due()

    assert mtn.calls("status") == 1
    assert [(c.item_id, c.after) for c in done.checked] == [(payment.id, "succeeded")]
    after = current(any_db, payment)
    assert (after.status, after.next_check_at) == (PaymentStatus.SUCCEEDED, None)
    assert order_status(any_db, payment) is OrderStatus.PAID
    assert notification_count(any_db, payment) == 1

    clock.advance(timedelta(days=2))
    worker.run_due()
    assert mtn.calls("status") == 1  # settled: nothing left to ask


def test_a_payment_mtn_does_not_show_stays_pending_and_is_asked_again_at_its_next_step(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(db, provider)
    mtn.late_404(payment.id, polls=10)  # "not found": no definite answer
    worker = catch_up(db, provider)
    clock.advance(LEASE + SECOND)
    worker.run_due()
    first = current(db, payment)
    assert first.status is PaymentStatus.PENDING
    assert (first.failure_reason, first.checks_made) == (None, 1)

    clock.advance(FIRST_STEP - 2 * SECOND)
    worker.run_due()
    assert asked(mtn, payment.id) == 1  # its next step has not come

    clock.advance(3 * SECOND)
    worker.run_due()

    assert asked(mtn, payment.id) == 2
    second = current(db, payment)
    assert (second.status, second.checks_made) == (PaymentStatus.PENDING, 2)
    assert order_status(db, payment) is OrderStatus.PENDING


def test_two_workers_ask_mtn_once_per_payment_per_step(
    pg_url: str, db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payments = [mtn_payment(db, provider, payer=STILL_PENDING) for _ in range(6)]
    mtn.hang("status", 0.02, times=None)  # each answer takes a moment: the workers overlap
    databases = [Database(pg_url), Database(pg_url)]

    def one_step(workers: list[CatchUp]) -> None:
        start = threading.Barrier(len(workers))
        threads = [
            threading.Thread(target=lambda w=w: (start.wait(), w.run_due())) for w in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    try:
        with mtn.provider() as one, mtn.provider() as two:
            workers = [catch_up(databases[0], one), catch_up(databases[1], two)]
            clock.advance(LEASE + SECOND)
            one_step(workers)
            assert [asked(mtn, p.id) for p in payments] == [1] * len(payments)
            clock.advance(FIRST_STEP + SECOND)
            one_step(workers)
            assert [asked(mtn, p.id) for p in payments] == [2] * len(payments)
    finally:
        for database in databases:
            database.dispose()
    assert [current(db, p).checks_made for p in payments] == [2] * len(payments)


def test_a_payment_claimed_by_a_worker_that_died_is_asked_once_the_claim_runs_out(
    any_db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(any_db, provider, payer=STILL_PENDING)
    clock.advance(LEASE + SECOND)
    due = current(any_db, payment)
    with any_db.transaction() as conn:  # a worker claims it, then dies before asking
        claim = ledger.claim_check(conn, due, clock.utcnow(), CLAIM)
    assert claim is not None
    worker = catch_up(any_db, provider)

    clock.advance(CLAIM - SECOND)
    worker.run_due()
    assert asked(mtn, payment.id) == 0  # the dead worker's claim still stands

    clock.advance(2 * SECOND)
    worker.run_due()

    assert asked(mtn, payment.id) == 1
    after = current(any_db, payment)
    assert (after.status, after.checks_made) == (PaymentStatus.PENDING, 1)


class SlowMtn:
    """MTN answering each status query as slowly as the client allows (its budget for one
    operation), on orderpay's clock; `meanwhile(n)` runs while the n-th answer is awaited."""

    name = "mtn"

    def __init__(self, inner: MtnProvider, meanwhile: Callable[[int], object] = int) -> None:
        self.inner, self.meanwhile, self.answers = inner, meanwhile, 0

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        self.answers += 1
        clock.advance(timedelta(seconds=DEFAULT_BUDGET_SECONDS))
        self.meanwhile(self.answers)
        return self.inner.payment_status(payment)


def test_a_payment_asked_late_in_a_slow_round_waits_its_whole_step_before_the_next_question(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    *_, last = [mtn_payment(db, provider, payer=STILL_PENDING) for _ in range(3)]
    clock.advance(LEASE + SECOND)
    catch_up(db, cast(Provider, SlowMtn(provider))).run_due()  # 3 answers of 45 s each
    assert asked(mtn, last.id) == 1

    catch_up(db, provider).run_due()  # the next round, at once

    assert asked(mtn, last.id) == 1  # asked a moment ago: its 1m step has not passed


def test_a_worker_does_not_ask_about_a_payment_another_worker_is_asking_about(
    pg_url: str, db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    *_, last = [mtn_payment(db, provider, payer=STILL_PENDING) for _ in range(3)]
    other = Database(pg_url)
    try:
        second = catch_up(other, provider)
        # The second worker's round runs while the first awaits MTN's answer about `last`.
        slow = SlowMtn(provider, lambda n: n == 3 and second.run_due())
        clock.advance(LEASE + SECOND)
        catch_up(db, cast(Provider, slow)).run_due()
    finally:
        other.dispose()

    assert slow.answers == 3
    assert asked(mtn, last.id) == 1  # the first worker's claim on it held
    assert current(db, last).checks_made == 1


def test_past_the_deadline_one_no_final_answer_item_opens_and_the_questions_go_on(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(db, provider, payer=STILL_PENDING)
    worker = catch_up(db, provider)
    clock.advance(LEASE + SECOND)
    assert worker.run_due().overdue == []
    assert open_items(db, payment) == []  # within the deadline: no operator asked

    clock.advance(timedelta(days=7))
    late = worker.run_due()

    assert late.overdue == [payment.id]
    [item] = open_items(db, payment)
    assert item.reason == "no_final_answer"
    assert str(payment.id) in item.reported
    assert "mtn asked about payment" in item.reported
    assert "last answer: pending" in item.reported

    clock.advance(SECOND_STEP + SECOND)
    again = worker.run_due()

    assert asked(mtn, payment.id) == 3
    assert again.overdue == []
    assert open_items(db, payment) == [item]  # once while open
    assert current(db, payment).status is PaymentStatus.PENDING


# A payment failed by an operator without MTN's word (cancel --force).


def force_cancel(db: Database, mtn: FakeMtn, provider: MtnProvider) -> Payment:
    """An MTN payment MTN did not show when the operator cancelled it with --force."""
    payment = mtn_payment(db, provider)
    mtn.late_404(payment.id, polls=1)
    cancelled = cancel_payment(
        db, lambda _: provider, payment.id, reason=REASON, force=True, notify=NOTIFY, operator="ops"
    )
    assert cancelled.outcome is Cancelled.FORCED
    after = current(db, payment)
    assert (after.status, after.awaiting_confirmation) == (PaymentStatus.FAILED, True)
    return after


def test_a_success_mtn_reports_after_a_forced_cancel_is_kept_for_review_not_paid(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = force_cancel(db, mtn, provider)  # MTN then shows it: SUCCESSFUL

    catch_up(db, provider).run_due()  # asked at once after a forced cancel

    assert asked(mtn, payment.id) == 2  # the cancel's question, and the catch-up's
    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, REASON)
    assert order_status(db, payment) is OrderStatus.PENDING
    assert notification_count(db, payment) == 0
    assert [item.reason for item in open_items(db, payment)] == ["success_after_cancel"]


def test_a_definite_failure_from_mtn_after_a_forced_cancel_ends_the_questions(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = force_cancel(db, mtn, provider)
    mtn.set_status(payment.id, "FAILED", "APPROVAL_REJECTED")
    worker = catch_up(db, provider)

    worker.run_due()

    after = current(db, payment)
    assert after.status is PaymentStatus.FAILED
    assert (after.awaiting_confirmation, after.next_check_at) == (False, None)
    assert open_items(db, payment) == []
    clock.advance(timedelta(days=2))
    worker.run_due()
    assert asked(mtn, payment.id) == 2  # confirmed: never asked again


# Refunds.


def test_a_refund_left_pending_at_mtn_is_settled_when_its_step_comes(
    db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(db, provider)
    worker = catch_up(db, provider)
    worker.reconcile(timedelta(0), 10, dry_run=False)  # MTN: SUCCESSFUL
    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    mtn.disbursement.pending_for = 60  # MTN: the refund is PENDING for a minute
    made = refund(db, provider, payment.id).refund
    assert made.status is RefundStatus.PENDING
    asked_before = mtn.calls("refund_status")

    mtn.advance(61)  # MTN: the refund has succeeded, and nobody told us
    clock.advance(LEASE - SECOND)
    worker.run_due()
    assert mtn.calls("refund_status") == asked_before  # its first check is not due yet

    clock.advance(2 * SECOND)
    worker.run_due()

    assert mtn.calls("refund_status") == asked_before + 1
    [settled] = refunds_of(db, payment.id)
    assert (settled.id, settled.status) == (made.id, RefundStatus.SUCCEEDED)
    assert order_status(db, payment) is OrderStatus.REFUNDED


# `orderpay worker --burst`, as an operator or a deployment runs it.


def test_worker_burst_settles_a_payment_due_a_check(
    pg_url: str, db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(db, provider)
    clock.advance(LEASE + SECOND)

    outcome = Cli({"DATABASE_URL": pg_url, **mtn.env()})("worker", "--burst")

    assert outcome.exit_code == 0, outcome.stderr
    assert "asked providers about 1 payment(s)" in outcome.stderr
    assert asked(mtn, payment.id) == 1
    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    assert order_status(db, payment) is OrderStatus.PAID
    assert notification_count(db, payment) == 1


def test_worker_burst_with_a_schedule_that_does_not_read_exits_2_and_changes_nothing(
    pg_url: str, db: Database, mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = mtn_payment(db, provider)
    clock.advance(LEASE + SECOND)
    before, asked_before = count_rows(db), len(mtn.requests)
    env = {"DATABASE_URL": pg_url, **mtn.env(), "ORDERPAY_CATCHUP_SCHEDULE": "nonsense"}

    outcome = Cli(env)("worker", "--burst")

    assert outcome.exit_code == 2, outcome.stderr
    assert "ORDERPAY_CATCHUP_SCHEDULE" in outcome.stderr
    assert "'nonsense'" in outcome.stderr
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert len(mtn.requests) == asked_before


# What an operator sees of the oldest answer awaited.


def test_metrics_report_the_age_of_the_oldest_payment_awaiting_its_providers_answer(
    pg_url: str, db: Database
) -> None:
    a_pending_payment(db)
    clock.advance(timedelta(hours=2))

    with listener_client(listener_settings(pg_url)) as client:
        age = metric(client, "orderpay_oldest_awaiting_answer_seconds")

    assert 2 * 3600 <= age < 2 * 3600 + 60


def test_doctor_shows_the_age_of_the_oldest_payment_awaiting_its_providers_answer(
    cli: Cli, db: Database
) -> None:
    a_pending_payment(db)
    clock.advance(timedelta(hours=2, minutes=30))

    outcome = cli("doctor", "--json")

    checks = {check["name"]: check for check in outcome.json()["checks"]}
    detail = checks["review queue"]["detail"]
    assert detail.startswith("0 open"), detail
    assert "awaiting" in detail
    assert re.search(r"\b2\.5 ?h\b", detail), detail  # "2.5 h" or "2.5h"
