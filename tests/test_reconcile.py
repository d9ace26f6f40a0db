"""`orderpay reconcile`: settle payments whose outcome never arrived, resume lost requests.

Against the fake MTN server (tests/fake_mtn.py) on Postgres, and with the simulator on the
embedded SQLite default. Outcomes go through the callbacks' transition, so the customer is
notified once however many times, and however many processes at once, reconcile runs.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from orderpay.clock import utcnow
from orderpay.config import load_settings
from orderpay.domain.states import NotificationStatus, OrderStatus, PaymentStatus
from orderpay.notify.drain import Drain
from orderpay.payments.charge import charge_order, claim_payment
from orderpay.providers.base import CollectionRequest
from orderpay.runtime import Runtime
from orderpay.store.db import Database
from orderpay.store.notifications import notifications_of
from orderpay.store.orders import Order
from orderpay.store.payments import Payment, get_payment
from orderpay.store.schema import payments
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import (
    Cli,
    count_rows,
)
from tests.fake_mtn import DELAYED, ONGOING, REJECTS, FakeMtn
from tests.http_recorder import Recorder, recording_server
from tests.ledger_views import current, events, notification_count, order_status
from tests.live_server import listener

FORK = multiprocessing.get_context("fork")
MTN_PATH = "/api/webhooks/mtn/"
NOW = ("--older-than", "0s")


@pytest.fixture
def merchant() -> Iterator[Recorder]:
    """The merchant's webhook endpoint: every notification actually sent lands here."""
    with recording_server() as server:
        yield server


@pytest.fixture
def env(pg_url: str, mtn: FakeMtn, merchant: Recorder) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        **mtn.env(),
        "ORDERPAY_NOTIFY_CHANNEL": "webhook",
        "ORDERPAY_NOTIFY_WEBHOOK_URL": merchant.url,
        "ORDERPAY_NOTIFY_WEBHOOK_SECRET": "merchant-webhook-secret-0123456789",
    }


@pytest.fixture
def mtn_cli(env: dict[str, str]) -> Cli:
    return Cli(env)


def an_mtn_order(db: Database, payer: str = MTN_SANDBOX_PAYER) -> Order:
    return an_order(db, phone=payer, currency="EUR")


def mtn_payment(db: Database, mtn: FakeMtn, payer: str = MTN_SANDBOX_PAYER) -> Payment:
    """An order charged through MTN (the fake) with no callback URL: its payment is pending,
    and no callback will ever come."""
    order = an_mtn_order(db, payer)
    with mtn.provider() as provider:
        return charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment


def claimed_payment(db: Database, payer: str = MTN_SANDBOX_PAYER) -> Payment:
    """A payment claimed as by `orderpay charge` step 1, by a process that then died before
    asking MTN (its lease already over)."""
    order = an_mtn_order(db, payer)
    with db.transaction() as conn:
        claim = claim_payment(
            conn,
            order_id=order.id,
            key=a_key(),
            payer_phone=None,
            provider="mtn",
            lease=timedelta(0),
        )
    assert claim.payment.status is PaymentStatus.INITIATED
    return claim.payment


def backdate(db: Database, payment: Payment, age: timedelta, *, created: bool = False) -> None:
    """Make a payment look unchanged (and, with `created`, made) `age` ago."""
    values: dict[str, Any] = {"updated_at": utcnow() - age}
    if created:
        values["created_at"] = utcnow() - age
    with db.transaction() as conn:
        conn.execute(update(payments).where(payments.c.id == payment.id).values(**values))


def requests_to_pay(mtn: FakeMtn) -> list[tuple[str, int]]:
    return [
        (r.headers["x-reference-id"], r.status) for r in mtn.requests if r.kind == "requesttopay"
    ]


def deliver_due(env: dict[str, str]) -> None:
    """The embedded worker (REDIS_URL unset): send every due notification, then return."""
    runtime = Runtime(load_settings(**env))
    try:
        drain = Drain(
            runtime.database,
            runtime.channel_for,
            runtime.retry_policy,
            runtime.settings.merchant_name,
        )
        drain.drain_due()
    finally:
        runtime.close()


# Outcomes MTN reports.


def test_reconcile_settles_a_payment_whose_callback_never_came(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)  # MTN: SUCCESSFUL, and nobody told us

    mtn_cli.ok("reconcile", *NOW)

    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    assert order_status(db, payment) is OrderStatus.PAID
    assert notification_count(db, payment) == 1


@pytest.mark.slow
def test_after_reconcile_the_worker_notifies_the_customer_once(
    mtn_cli: Cli, env: dict[str, str], db: Database, mtn: FakeMtn, merchant: Recorder
) -> None:
    payment = mtn_payment(db, mtn)
    mtn_cli.ok("reconcile", *NOW)

    worker = subprocess.run(
        [sys.executable, "-m", "orderpay", "worker", "--burst"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode == 0, worker.stderr
    (sent,) = merchant.requests
    assert sent.json()["data"]["payment"] == str(payment.id)
    with db.transaction() as conn:
        (notification,) = notifications_of(conn, [payment.order_id])
    assert notification.status is NotificationStatus.SENT


def test_running_reconcile_again_changes_nothing_and_sends_nothing_more(
    mtn_cli: Cli, env: dict[str, str], db: Database, mtn: FakeMtn, merchant: Recorder
) -> None:
    payment = mtn_payment(db, mtn)
    mtn_cli.ok("reconcile", *NOW)
    deliver_due(env)
    before = count_rows(db)

    again = mtn_cli.ok("reconcile", *NOW)
    deliver_due(env)

    assert again == {
        "checked": 0,
        "dry_run": False,
        "changed": [],
        "review": [],
        "unchanged": [],
        "refunds": {"checked": 0, "changed": [], "review": [], "unchanged": []},
        "skipped": [],
    }
    assert count_rows(db) == before
    assert merchant.count() == 1
    assert events(db, payment).count("payment_succeeded") == 1


def test_reconcile_fails_a_payment_mtn_reports_failed_with_mtns_reason(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + REJECTS)  # MTN: FAILED, APPROVAL_REJECTED

    mtn_cli.ok("reconcile", *NOW)

    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, "APPROVAL_REJECTED")
    assert order_status(db, payment) is OrderStatus.PENDING
    assert notification_count(db, payment) == 0


@pytest.mark.parametrize("payer", [ONGOING, DELAYED], ids=["pending", "created"])
def test_reconcile_leaves_a_payment_mtn_has_no_outcome_for_pending(
    mtn_cli: Cli, db: Database, mtn: FakeMtn, payer: str
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + payer)
    before = count_rows(db)

    mtn_cli.ok("reconcile", *NOW)

    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.PENDING, None)
    assert count_rows(db) == before
    assert mtn.calls("status") == 1


def test_reconcile_treats_mtn_not_yet_seeing_a_pending_payment_as_not_yet(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.late_404(payment.id, polls=1)

    mtn_cli.ok("reconcile", *NOW)

    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.PENDING, None)
    assert requests_to_pay(mtn) == [(str(payment.id), 202)]  # no second request to pay


def test_reconcile_settles_a_late_visible_payment_once_mtn_sees_it(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.late_404(payment.id, polls=1)
    mtn_cli.ok("reconcile", *NOW)

    mtn_cli.ok("reconcile", *NOW)

    assert current(db, payment).status is PaymentStatus.SUCCEEDED


# Initiated payments: the charge died between its steps.


def test_reconcile_submits_a_request_that_never_reached_mtn_under_the_payment_id(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db)

    mtn_cli.ok("reconcile", *NOW)

    assert requests_to_pay(mtn) == [(str(payment.id), 202)]
    assert current(db, payment).status is PaymentStatus.PENDING


def test_reconcile_settles_an_initiated_payment_mtn_already_holds_without_asking_again(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db)
    with mtn.provider() as provider:  # MTN took it; the charge died before recording that
        provider.request_payment(
            CollectionRequest(payment.id, payment.order_id, payment.amount, payment.payer_phone)
        )

    mtn_cli.ok("reconcile", *NOW)

    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    assert notification_count(db, payment) == 1
    assert requests_to_pay(mtn) == [(str(payment.id), 202)]


def test_reconcile_leaves_an_initiated_payment_alone_while_its_charge_holds_the_lease(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    with db.transaction() as conn:
        claim = claim_payment(
            conn,
            order_id=order.id,
            key=a_key(),
            payer_phone=None,
            provider="mtn",
            lease=timedelta(minutes=5),
        )

    mtn_cli.ok("reconcile", *NOW)

    assert current(db, claim.payment).status is PaymentStatus.INITIATED
    assert requests_to_pay(mtn) == []


# Concurrency: reconcile against itself and against the listener.


def _cli_after_barrier(barrier: Any, env: dict[str, str], args: list[str]) -> None:
    """Child process: wait for the others, then run the real CLI entry point."""
    from orderpay.cli import app

    os.environ.update(env)
    barrier.wait(timeout=30)
    app(args=args, prog_name="orderpay")  # exits the process with the command's exit code


def start_after_barrier(barrier: Any, env: dict[str, str], args: list[str]) -> Any:
    process = FORK.Process(target=_cli_after_barrier, args=(barrier, env, args))
    process.start()
    return process


@pytest.mark.slow
def test_two_reconciles_at_once_settle_each_payment_once_with_one_notification(
    env: dict[str, str], db: Database, mtn: FakeMtn
) -> None:
    settled = [mtn_payment(db, mtn) for _ in range(5)]
    db.dispose()  # the children must not inherit the pool's connections
    barrier = FORK.Barrier(2)

    children = [start_after_barrier(barrier, env, ["reconcile", *NOW]) for _ in range(2)]
    for child in children:
        child.join(60)

    assert [child.exitcode for child in children] == [0, 0]
    for payment in settled:
        assert current(db, payment).status is PaymentStatus.SUCCEEDED
        assert events(db, payment).count("payment_succeeded") == 1
        assert notification_count(db, payment) == 1


def test_two_reconciles_at_once_resubmit_an_initiated_payment_once(
    env: dict[str, str], db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db, payer="+" + ONGOING)  # MTN keeps it PENDING once submitted
    db.dispose()
    barrier = FORK.Barrier(2)

    children = [start_after_barrier(barrier, env, ["reconcile", *NOW]) for _ in range(2)]
    for child in children:
        child.join(60)

    assert [child.exitcode for child in children] == [0, 0]
    assert requests_to_pay(mtn) == [(str(payment.id), 202)]
    assert current(db, payment).status is PaymentStatus.PENDING


@pytest.mark.slow
def test_reconcile_racing_the_listener_settles_each_payment_once_with_one_notification(
    env: dict[str, str], db: Database, mtn: FakeMtn
) -> None:
    settled = [mtn_payment(db, mtn) for _ in range(5)]
    db.dispose()
    settings = load_settings(MOMO_WEBHOOK_SECRET="x" * 40, **env)
    with listener(settings) as server:
        barrier = FORK.Barrier(2)
        child = start_after_barrier(barrier, env, ["reconcile", *NOW])
        barrier.wait(timeout=30)
        answers = [mtn.deliver_callback(p.id, url=server.url + MTN_PATH) for p in settled]
        child.join(60)
    # The listener has stopped: its background confirmations have finished.

    assert child.exitcode == 0
    assert answers == [200] * len(settled)
    for payment in settled:
        assert current(db, payment).status is PaymentStatus.SUCCEEDED
        assert events(db, payment).count("payment_succeeded") == 1
        assert events(db, payment).count("order_paid") == 1
        assert notification_count(db, payment) == 1


# Options.


def test_older_than_leaves_payments_changed_more_recently_alone(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    old, recent = mtn_payment(db, mtn), mtn_payment(db, mtn)
    backdate(db, old, timedelta(minutes=10))

    report = mtn_cli.ok("reconcile", "--older-than", "5m")

    assert report["checked"] == 1
    assert current(db, old).status is PaymentStatus.SUCCEEDED
    assert current(db, recent).status is PaymentStatus.PENDING


def test_limit_caps_how_many_payments_are_checked(mtn_cli: Cli, db: Database, mtn: FakeMtn) -> None:
    made = [mtn_payment(db, mtn) for _ in range(3)]

    report = mtn_cli.ok("reconcile", *NOW, "--limit", "2")

    assert report["checked"] == 2
    assert sorted(current(db, p).status.value for p in made) == [
        "pending",
        "succeeded",
        "succeeded",
    ]


# Bad ages are refused before anything is read: shown on the embedded SQLite default.


@pytest.mark.parametrize("age", ["soon", "5", "-5m", "5 minutes", "1w", ""])
def test_a_bad_age_exits_2_and_changes_nothing(
    sqlite_url: str, sqlite_db: Database, mtn: FakeMtn, age: str
) -> None:
    payment = mtn_payment(sqlite_db, mtn)
    before, asked = count_rows(sqlite_db), sum(mtn.counts().values())

    outcome = Cli({"DATABASE_URL": sqlite_url, **mtn.env()})(
        "reconcile", "--older-than", age, "--json"
    )

    assert outcome.exit_code == 2, outcome.stderr
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(sqlite_db) == before
    assert sum(mtn.counts().values()) == asked
    assert current(sqlite_db, payment).status is PaymentStatus.PENDING


@pytest.mark.parametrize("age", ["1000000d", "99999999999d"])
def test_an_age_too_large_to_compute_exits_2_and_changes_nothing(
    sqlite_url: str, sqlite_db: Database, mtn: FakeMtn, age: str
) -> None:
    mtn_payment(sqlite_db, mtn)
    before = count_rows(sqlite_db)

    outcome = Cli({"DATABASE_URL": sqlite_url, **mtn.env()})(
        "reconcile", "--older-than", age, "--json"
    )

    assert outcome.exit_code == 2, outcome.stderr
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(sqlite_db) == before


def test_json_prints_one_document_describing_each_change(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)

    outcome = mtn_cli("reconcile", *NOW, "--json")

    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.json() == {
        "checked": 1,
        "dry_run": False,
        "changed": [
            {
                "payment": str(payment.id),
                "order": str(payment.order_id),
                "before": "pending",
                "after": "succeeded",
                "provider_says": "succeeded",
                "note": "",
            }
        ],
        "review": [],
        "unchanged": [],
        "refunds": {"checked": 0, "changed": [], "review": [], "unchanged": []},
        "skipped": [],
    }


def test_without_json_reconcile_reports_on_stderr_and_settles(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)

    outcome = mtn_cli("reconcile", *NOW)

    assert outcome.exit_code == 0, outcome.stderr
    assert "1 changed" in outcome.stderr
    assert current(db, payment).status is PaymentStatus.SUCCEEDED


# The embedded default: SQLite and the simulator answer the same status calls.


def simulated_payment(cli: Cli, db: Database, payer: str) -> Payment:
    order = an_order(db, phone=payer)
    charged = cli.ok("charge", str(order.id), "--key", a_key())
    assert charged["status"] == "pending"
    with db.transaction() as conn:
        return get_payment(conn, uuid.UUID(charged["id"]))


@pytest.mark.parametrize(
    ("payer", "status", "reason"),
    [
        pytest.param(MTN_SANDBOX_PAYER, PaymentStatus.SUCCEEDED, None, id="ordinary"),
        pytest.param("+" + REJECTS, PaymentStatus.FAILED, "APPROVAL_REJECTED", id="rejected"),
    ],
)
def test_on_the_embedded_default_reconcile_settles_a_pending_payment_older_than_the_age(
    sqlite_url: str, sqlite_db: Database, payer: str, status: PaymentStatus, reason: str | None
) -> None:
    cli = Cli({"DATABASE_URL": sqlite_url})
    payment = simulated_payment(cli, sqlite_db, payer)
    backdate(sqlite_db, payment, timedelta(minutes=10))

    report = cli.ok("reconcile")  # the default age: 5 minutes

    assert report["checked"] == 1
    after = current(sqlite_db, payment)
    assert (after.status, after.failure_reason) == (status, reason)


def test_on_the_embedded_default_an_ongoing_payment_stays_pending_for_five_minutes(
    sqlite_url: str, sqlite_db: Database
) -> None:
    cli = Cli({"DATABASE_URL": sqlite_url})
    payment = simulated_payment(cli, sqlite_db, "+" + ONGOING)
    backdate(sqlite_db, payment, timedelta(minutes=4), created=True)

    cli.ok("reconcile", "--older-than", "1m")

    assert current(sqlite_db, payment).status is PaymentStatus.PENDING


def test_on_the_embedded_default_an_ongoing_payment_expires_after_five_minutes(
    sqlite_url: str, sqlite_db: Database
) -> None:
    cli = Cli({"DATABASE_URL": sqlite_url})
    payment = simulated_payment(cli, sqlite_db, "+" + ONGOING)
    backdate(sqlite_db, payment, timedelta(minutes=6), created=True)

    cli.ok("reconcile")

    after = current(sqlite_db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, "EXPIRED")


def test_on_the_embedded_default_the_customer_is_notified_once_after_reconcile(
    sqlite_url: str, sqlite_db: Database
) -> None:
    cli = Cli({"DATABASE_URL": sqlite_url})
    payment = simulated_payment(cli, sqlite_db, MTN_SANDBOX_PAYER)
    cli.ok("reconcile", *NOW)
    cli.ok("reconcile", *NOW)

    deliver_due({"DATABASE_URL": sqlite_url})

    with sqlite_db.transaction() as conn:
        (notification,) = notifications_of(conn, [payment.order_id])
    assert notification.status is NotificationStatus.SENT
