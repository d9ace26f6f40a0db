"""No stuck payments: `orderpay payment cancel`, and reconcile after the provider changed.

Cancel asks the payment's own provider first and its word wins: a definite failure fails the
payment with the operator's reason and frees the order for a new charge; a success settles it
as paid; still pending there is refused. No record there, an ambiguous answer or a provider
that cannot be asked is no definite answer: the cancel is refused unless `--force`, which fails
it awaiting confirmation (still asked), and a success reported after a forced cancel is kept
for review, never a paid order (DESIGN.md sections 4 and 5). `orderpay reconcile` asks each
payment's own provider, even after the operator switched ORDERPAY_PROVIDER. MTN is the local
fake.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order
from orderpay.store.db import Database
from orderpay.store.orders import Order
from orderpay.store.payments import Payment, payments_of
from tests.builders import AMA, MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import ONGOING, FakeMtn
from tests.ledger_views import current, events, notification_count, order_status
from tests.live_server import TestClient, listener_client, listener_settings
from tests.user_shell import orderpay

SIMULATOR_OUTAGE = "+46733123461"  # the simulator raises INTERNAL_PROCESSING_ERROR for it
CLOSED_MTN = {"MTN_MOMO_BASE_URL": "http://127.0.0.1:1"}  # nothing listens: refused at once
REASON = "customer paid cash"
NOW = ("--older-than", "0s")
MTN_PATH = "/api/webhooks/mtn/"

LateSuccess = Callable[["Cli", "TestClient", "FakeMtn", "Payment"], None]


@pytest.fixture
def mtn_cli(pg_url: str, mtn: FakeMtn) -> Cli:
    """The CLI of a deployment whose provider is MTN (the fake)."""
    return Cli({"DATABASE_URL": pg_url, **mtn.env()})


@pytest.fixture
def mtn_listener(pg_url: str, mtn: FakeMtn) -> Iterator[TestClient]:
    with listener_client(listener_settings(pg_url, **mtn.env())) as client:
        yield client


def mtn_payment(db: Database, mtn: FakeMtn, payer: str = MTN_SANDBOX_PAYER) -> Payment:
    """A 25.00 EUR order charged through MTN (the fake): MTN accepted the request, so the
    payment is pending; no callback URL, so MTN never calls back."""
    order = an_order(db, phone=payer, currency="EUR")
    with mtn.provider() as provider:
        return charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment


def stuck_simulator_payment(cli: Cli, db: Database) -> Payment:
    """An order charged through the simulator whose request failed on the provider's side:
    `orderpay charge` exits 7 and the payment stays initiated."""
    order = an_order(db, phone=SIMULATOR_OUTAGE)
    charged = cli("charge", str(order.id), "--key", a_key())
    assert charged.exit_code == 7, charged.stderr
    (payment,) = payments_of_order(db, order)
    assert payment.status is PaymentStatus.INITIATED
    return payment


def payments_of_order(db: Database, order: Order) -> list[Payment]:
    with db.transaction() as conn:
        return payments_of(conn, [order.id])


# The provider shows no record of it: no definite answer (it may not show a request it took
# yet), so the cancel is refused, unless forced.


def test_cancelling_a_payment_the_provider_does_not_show_is_refused_and_changes_nothing(
    cli: Cli, db: Database
) -> None:
    payment = stuck_simulator_payment(cli, db)
    before = count_rows(db)

    outcome = cli("payment", "cancel", str(payment.id), "--reason", REASON, "--yes", "--json")

    assert outcome.exit_code == 4, outcome.stderr
    error = outcome.error()
    assert error["code"] == "payment_pending_at_provider"
    assert "--force" in error["message"]
    assert count_rows(db) == before
    assert current(db, payment) == payment


def test_a_forced_cancel_of_a_payment_the_provider_does_not_show_awaits_its_confirmation(
    cli: Cli, db: Database
) -> None:
    payment = stuck_simulator_payment(cli, db)

    outcome = cli(
        "payment", "cancel", str(payment.id), "--reason", REASON, "--force", "--yes", "--json"
    )

    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.json()
    assert document["outcome"] == "cancelled_unconfirmed"
    assert document["payment"]["status"] == "failed"
    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, REASON)
    assert after.awaiting_confirmation  # still asked by the catch-up
    assert after.next_check_at is not None
    assert "payment_cancelled_unconfirmed" in events(db, payment)
    assert order_status(db, payment) is OrderStatus.PENDING
    assert notification_count(db, payment) == 0


def test_after_a_forced_cancel_the_order_can_be_charged_with_a_new_key(
    cli: Cli, db: Database
) -> None:
    payment = stuck_simulator_payment(cli, db)
    cancelled = cli("payment", "cancel", str(payment.id), "--reason", REASON, "--force", "--yes")
    assert cancelled.exit_code == 0, cancelled.stderr

    charged = cli("charge", str(payment.order_id), "--key", a_key(), "--phone", AMA, "--json")

    assert charged.exit_code == 0, charged.stderr
    document = charged.json()
    assert document["status"] == "pending"
    assert document["id"] != str(payment.id)
    assert document["replayed"] is False
    with db.transaction() as conn:
        assert len(payments_of(conn, [payment.order_id])) == 2
    assert current(db, payment).status is PaymentStatus.FAILED


# The provider says it succeeded, or that it is still pending.


def test_cancel_settles_as_paid_a_payment_mtn_reports_successful(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)  # MTN: SUCCESSFUL, and nobody told us

    outcome = mtn_cli("payment", "cancel", str(payment.id), "--reason", REASON, "--yes", "--json")

    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.json()
    assert document["outcome"] == "succeeded"
    assert document["payment"]["status"] == "succeeded"
    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.SUCCEEDED, None)
    assert order_status(db, payment) is OrderStatus.PAID
    assert notification_count(db, payment) == 1
    assert mtn.calls("status") == 1


def test_cancel_is_refused_while_mtn_still_has_the_payment_pending(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)  # MTN: PENDING, the payer may approve
    before = count_rows(db)

    outcome = mtn_cli("payment", "cancel", str(payment.id), "--reason", REASON, "--yes", "--json")

    assert outcome.exit_code == 4, outcome.stderr
    assert outcome.error()["code"] == "payment_pending_at_provider"
    assert outcome.stdout == ""
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert mtn.calls("status") == 1  # MTN was asked, and said PENDING


# MTN cannot be reached.


def test_cancel_is_refused_when_mtn_cannot_be_reached(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before = count_rows(db)

    outcome = mtn_cli(
        "payment", "cancel", str(payment.id), "--reason", REASON, "--yes", "--json", **CLOSED_MTN
    )

    assert outcome.exit_code == 7, outcome.stderr
    error = outcome.error()
    assert error["code"] == "provider_unavailable"
    assert "--force" in error["message"]
    assert outcome.stdout == ""
    assert count_rows(db) == before
    assert current(db, payment) == payment


def test_a_forced_cancel_fails_the_payment_and_says_mtn_was_not_asked(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)

    outcome = mtn_cli(
        "payment",
        "cancel",
        str(payment.id),
        "--reason",
        REASON,
        "--force",
        "--yes",
        "--json",
        **CLOSED_MTN,
    )

    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.json()
    assert document["outcome"] == "cancelled_unconfirmed"
    assert document["payment"]["status"] == "failed"
    after = current(db, payment)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, REASON)
    assert "payment_cancelled_unconfirmed" in events(db, payment)
    assert order_status(db, payment) is OrderStatus.PENDING
    assert notification_count(db, payment) == 0


def force_cancel_while_mtn_is_unreachable(mtn_cli: Cli, db: Database, mtn: FakeMtn) -> Payment:
    """An MTN payment the operator failed with --force while MTN could not be reached; MTN
    had in fact taken it, and the payer approves it (the fake's default: SUCCESSFUL)."""
    payment = mtn_payment(db, mtn)
    forced = mtn_cli(
        "payment",
        "cancel",
        str(payment.id),
        "--reason",
        REASON,
        "--force",
        "--yes",
        **CLOSED_MTN,
    )
    assert forced.exit_code == 0, forced.stderr
    after = current(db, payment)
    assert after.status is PaymentStatus.FAILED
    return after


def confirm_late_success_by_reconcile(
    mtn_cli: Cli, mtn_listener: TestClient, mtn: FakeMtn, payment: Payment
) -> None:
    outcome = mtn_cli("reconcile", *NOW, "--json")
    assert outcome.exit_code == 0, outcome.stderr


def confirm_late_success_by_mtn_callback(
    mtn_cli: Cli, mtn_listener: TestClient, mtn: FakeMtn, payment: Payment
) -> None:
    body = json.dumps(mtn.status_body(payment.id)).encode()
    answer = mtn_listener.post(MTN_PATH, content=body, headers={"Content-Type": "application/json"})
    mtn_listener.app.state.confirmer.wait()  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "confirm_late_success",
    [confirm_late_success_by_reconcile, confirm_late_success_by_mtn_callback],
    ids=["reconcile", "mtn-callback"],
)
def test_a_success_reported_after_a_forced_cancel_is_kept_for_review(
    mtn_cli: Cli,
    mtn_listener: TestClient,
    db: Database,
    mtn: FakeMtn,
    confirm_late_success: LateSuccess,
) -> None:
    forced = force_cancel_while_mtn_is_unreachable(mtn_cli, db, mtn)
    assert mtn.status_body(forced.id)["status"] == "SUCCESSFUL"

    confirm_late_success(mtn_cli, mtn_listener, mtn, forced)

    after = current(db, forced)
    assert (after.status, after.failure_reason) == (PaymentStatus.FAILED, REASON)
    assert order_status(db, forced) is OrderStatus.PENDING
    assert notification_count(db, forced) == 0
    assert mtn.calls("status") >= 1  # the success is MTN's word, not an unsigned claim
    assert "callback_conflict" in events(db, forced)  # the review item: money to refund


# Refused before the provider is asked.


@pytest.mark.slow
def test_cancel_without_yes_and_without_a_terminal_is_refused(
    pg_url: str, db: Database, mtn: FakeMtn, tmp_path: Path
) -> None:
    payment = mtn_payment(db, mtn)
    before, asked = count_rows(db), len(mtn.requests)

    run = orderpay(
        tmp_path,
        "payment",
        "cancel",
        str(payment.id),
        "--reason",
        REASON,
        "--json",
        env={"DATABASE_URL": pg_url, **mtn.env()},
    )

    assert run.exit_code == 2, run.stderr
    assert run.error()["code"] == "confirmation_required"
    assert "--yes" in run.error()["message"]
    assert run.stdout == ""
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert len(mtn.requests) == asked  # MTN was not asked anything


def test_cancelling_a_payment_that_already_succeeded_is_refused(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn_cli.ok("reconcile", *NOW)
    succeeded = current(db, payment)
    assert succeeded.status is PaymentStatus.SUCCEEDED
    before, asked = count_rows(db), len(mtn.requests)

    outcome = mtn_cli("payment", "cancel", str(payment.id), "--reason", REASON, "--yes", "--json")

    assert outcome.exit_code == 4, outcome.stderr
    assert outcome.error()["code"] == "payment_already_settled"
    assert outcome.stdout == ""
    assert count_rows(db) == before
    assert current(db, payment) == succeeded
    assert len(mtn.requests) == asked


# Reconcile after the operator switched ORDERPAY_PROVIDER while an MTN payment was pending.


def test_reconcile_after_switching_to_the_simulator_still_asks_mtn_and_settles(
    pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)  # MTN: SUCCESSFUL, and nobody told us
    switched = Cli({"DATABASE_URL": pg_url, **mtn.env(), "ORDERPAY_PROVIDER": "simulator"})

    outcome = switched("reconcile", *NOW, "--json")

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
    assert mtn.calls("status") == 1
    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    assert order_status(db, payment) is OrderStatus.PAID
    assert notification_count(db, payment) == 1


def test_reconcile_without_mtn_settings_says_it_cannot_ask_mtn_and_changes_nothing(
    cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before, asked = count_rows(db), len(mtn.requests)

    outcome = cli("reconcile", *NOW, "--json")  # the simulator, and no MTN_MOMO_* settings

    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.json()
    assert document["checked"] == 0
    assert document["changed"] == document["unchanged"] == []
    (entry,) = document["skipped"]  # listed with the reason
    assert (entry["kind"], entry["id"]) == ("payment", str(payment.id))
    assert entry["status"] == "pending"
    assert "cannot ask mtn" in entry["why"]
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert len(mtn.requests) == asked


def test_reconcile_without_mtn_settings_says_so_in_its_table(
    cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before = count_rows(db)

    outcome = cli("reconcile", *NOW)

    assert outcome.exit_code == 0, outcome.stderr
    shown = outcome.stdout + outcome.stderr
    assert str(payment.id)[:8] in shown  # tables show ids by their first 8 characters
    assert "cannot ask mtn" in shown
    assert "0 changed" in outcome.stderr
    assert count_rows(db) == before
    assert current(db, payment) == payment


def test_a_payment_id_that_matches_nothing_is_refused(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("payment", "cancel", str(uuid.uuid4()), "--yes", "--json")

    assert outcome.exit_code == 3, outcome.stderr
    assert outcome.error()["code"] == "payment_not_found"
    assert count_rows(db) == before
