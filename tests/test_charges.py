"""`orderpay charge ORDER --key KEY`: one payment per key, whatever happens around it."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from orderpay import clock
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments import settlement
from orderpay.payments.charge import claim_payment
from orderpay.shop.orders import cancel_order
from orderpay.store import ledger
from orderpay.store.db import Database
from orderpay.store.locks import lock_payment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import events_of
from orderpay.store.orders import get_order
from orderpay.store.payments import get_payment, payments_of
from tests.builders import AMA, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.http_recorder import Answer, Recorded, recording_server

REFUSED_PAYER = "+46733123457"  # MTN sandbox: NOT_ALLOWED when the request is made
OUTAGE_PAYER = "+46733123462"  # MTN sandbox: SERVICE_UNAVAILABLE


def settle(db: Database, payment_id: uuid.UUID) -> None:
    """Mark a payment succeeded and its order paid, as an applied callback does."""
    with db.transaction() as conn:
        locked = lock_payment(conn, payment_id)
        assert locked is not None
        report = settlement.Report(PaymentStatus.SUCCEEDED, "test")
        verdict = settlement.settle(conn, locked, report, NotifyTarget())
        assert verdict is settlement.Settled.APPLIED


def test_charging_an_order_records_a_pending_payment_for_its_total(
    any_cli: Cli, any_db: Database
) -> None:
    order = an_order(any_db)

    payment = any_cli.ok("charge", str(order.id), "--key", "order-1")

    assert payment["status"] == "pending"
    assert (payment["amount"], payment["currency"]) == ("25.00", "GHS")
    assert payment["order"] == str(order.id)
    assert payment["idempotency_key"] == "order-1"
    assert payment["replayed"] is False


def test_the_payer_defaults_to_the_customers_phone(cli: Cli, db: Database) -> None:
    order = an_order(db, phone="0241234567")

    payment = cli.ok("charge", str(order.id), "--key", a_key())

    assert payment["payer_phone"] == AMA


def test_a_payer_phone_given_on_the_command_line_is_charged_instead(cli: Cli, db: Database) -> None:
    order = an_order(db)

    payment = cli.ok("charge", str(order.id), "--key", a_key(), "--phone", "0201234567")

    assert payment["payer_phone"] == "+233201234567"


def test_replaying_a_key_returns_the_stored_payment(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)
    first = any_cli.ok("charge", str(order.id), "--key", "order-1")

    again = any_cli.ok("charge", str(order.id), "--key", "order-1")

    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"
    }
    with any_db.transaction() as conn:
        assert len(payments_of(conn, [order.id])) == 1


@pytest.mark.slow
def test_replaying_a_key_sends_no_second_request_to_the_provider(cli: Cli, db: Database) -> None:
    order = an_order(db)
    with recording_server() as provider_side:
        env = {"ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url}
        cli.ok("charge", str(order.id), "--key", "order-1", **env)

        cli.ok("charge", str(order.id), "--key", "order-1", **env)

        assert provider_side.count() == 1


@pytest.mark.slow
def test_the_provider_is_given_the_payment_id_as_its_reference(cli: Cli, db: Database) -> None:
    order = an_order(db)
    with recording_server() as provider_side:
        payment = cli.ok(
            "charge",
            str(order.id),
            "--key",
            a_key(),
            ORDERPAY_SIMULATOR_CALLBACK_URL=provider_side.url,
        )

        (request,) = provider_side.wait_for(1)

    assert request.json()["provider_reference"] == payment["id"]
    assert payment["provider_reference"] == payment["id"]


@pytest.mark.slow
def test_the_provider_is_called_after_the_claim_commits_and_outside_any_transaction(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    in_call, release = threading.Event(), threading.Event()

    def hold(_request: Recorded) -> Answer:
        in_call.set()
        release.wait(10)
        return Answer()

    with recording_server() as provider_side:
        provider_side.answer_with(hold)
        charge = threading.Thread(
            target=cli,
            args=("charge", str(order.id), "--key", "order-1", "--json"),
            kwargs={"ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url},
        )
        charge.start()
        assert in_call.wait(10)

        with db.transaction() as conn:
            (claimed,) = payments_of(conn, [order.id])
            open_transactions = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            ).scalar_one()
        release.set()
        charge.join(10)

    assert claimed.status is PaymentStatus.INITIATED
    assert open_transactions == 0


def test_every_step_of_a_charge_is_on_the_orders_timeline(cli: Cli, db: Database) -> None:
    order = an_order(db)

    cli.ok("charge", str(order.id), "--key", "order-1")

    with db.transaction() as conn:
        events = [e.event for e in events_of(conn, [order.id])[order.id]]
    assert events == ["order_created", "payment_initiated", "payment_pending"]


@pytest.mark.parametrize(
    "other_request",
    [("--phone", "0201234567")],
    ids=["another payer"],
)
def test_reusing_a_key_for_another_request_is_refused_and_stores_nothing(
    any_cli: Cli, any_db: Database, other_request: tuple[str, ...]
) -> None:
    order = an_order(any_db)
    any_cli.ok("charge", str(order.id), "--key", "order-1")
    before = count_rows(any_db)

    outcome = any_cli("charge", str(order.id), "--key", "order-1", *other_request, "--json")

    assert outcome.exit_code == 5
    assert outcome.error()["code"] == "idempotency_key_reused"
    assert count_rows(any_db) == before


def test_reusing_a_key_for_another_order_is_refused_and_stores_nothing(
    cli: Cli, db: Database
) -> None:
    first, second = an_order(db), an_order(db)
    cli.ok("charge", str(first.id), "--key", "order-1")
    before = count_rows(db)

    outcome = cli("charge", str(second.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 5
    assert outcome.error()["code"] == "idempotency_key_reused"
    assert count_rows(db) == before


def test_a_second_key_while_a_payment_is_live_is_refused(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)
    any_cli.ok("charge", str(order.id), "--key", "order-1")
    before = count_rows(any_db)

    outcome = any_cli("charge", str(order.id), "--key", "order-2", "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "payment_in_progress"
    assert count_rows(any_db) == before


def test_charging_a_paid_order_is_refused(cli: Cli, db: Database) -> None:
    order = an_order(db)
    paid = cli.ok("charge", str(order.id), "--key", "order-1")
    settle(db, uuid.UUID(paid["id"]))
    before = count_rows(db)

    outcome = cli("charge", str(order.id), "--key", "order-2", "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "order_already_paid"
    assert count_rows(db) == before


def test_replaying_the_key_that_paid_an_order_still_returns_its_payment(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    paid = cli.ok("charge", str(order.id), "--key", "order-1")
    settle(db, uuid.UUID(paid["id"]))

    again = cli.ok("charge", str(order.id), "--key", "order-1")

    assert (again["id"], again["status"], again["replayed"]) == (paid["id"], "succeeded", True)


def test_charging_a_cancelled_order_is_refused(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)
    with any_db.transaction() as conn:
        cancel_order(conn, order.id)
    before = count_rows(any_db)

    outcome = any_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "order_cancelled"
    assert count_rows(any_db) == before


def test_charging_without_a_key_is_refused_and_stores_nothing(cli: Cli, db: Database) -> None:
    order = an_order(db)
    before = count_rows(db)

    outcome = cli("charge", str(order.id), "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "idempotency_key_missing"
    assert count_rows(db) == before


@pytest.mark.parametrize(
    "key",
    ["has space", "x" * 256, "clé", "tab\tkey", "line\n"],
    ids=["space", "256 characters", "non-ascii", "tab", "newline"],
)
def test_a_malformed_key_is_refused_before_anything_is_stored(
    cli: Cli, db: Database, key: str
) -> None:
    order = an_order(db)
    before = count_rows(db)

    outcome = cli("charge", str(order.id), "--key", key, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_idempotency_key"
    assert count_rows(db) == before


def test_a_key_of_255_visible_characters_is_accepted(cli: Cli, db: Database) -> None:
    order = an_order(db)

    payment = cli.ok("charge", str(order.id), "--key", "k" * 255)

    assert payment["idempotency_key"] == "k" * 255


def test_charging_an_unknown_order_is_not_found(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("charge", str(uuid.uuid4()), "--key", "order-1", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "order_not_found"
    assert count_rows(db) == before


def test_a_malformed_order_id_is_refused(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("charge", "order-42", "--key", "order-1", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(db) == before


def test_an_invalid_payer_phone_is_refused_and_stores_nothing(cli: Cli, db: Database) -> None:
    order = an_order(db)
    before = count_rows(db)

    outcome = cli("charge", str(order.id), "--key", "order-1", "--phone", "12345", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_phone"
    assert count_rows(db) == before


def test_a_provider_refusal_is_exit_6_with_the_reason(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)

    outcome = any_cli(
        "charge", str(order.id), "--key", "order-1", "--phone", REFUSED_PAYER, "--json"
    )

    assert outcome.exit_code == 6
    error = outcome.error()
    assert (error["code"], error["reason"]) == ("payment_declined", "NOT_ALLOWED")
    with any_db.transaction() as conn:
        payment = get_payment(conn, uuid.UUID(error["payment"]))
    assert (payment.status, payment.failure_reason) == (PaymentStatus.FAILED, "NOT_ALLOWED")


def test_a_refused_payment_leaves_the_order_chargeable_with_a_new_key(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    cli("charge", str(order.id), "--key", "order-1", "--phone", REFUSED_PAYER)

    retry = cli.ok("charge", str(order.id), "--key", "order-2")

    assert retry["status"] == "pending"
    with db.transaction() as conn:
        assert get_order(conn, order.id).status is OrderStatus.PENDING


def test_replaying_a_refused_key_is_exit_6_again_without_a_new_request(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    cli("charge", str(order.id), "--key", "order-1", "--phone", REFUSED_PAYER)
    before = count_rows(db)

    again = cli("charge", str(order.id), "--key", "order-1", "--phone", REFUSED_PAYER, "--json")

    assert again.exit_code == 6
    assert again.error()["replayed"] is True
    assert count_rows(db) == before


def test_a_provider_outage_is_exit_7_and_keeps_the_payment_initiated(
    any_cli: Cli, any_db: Database
) -> None:
    order = an_order(any_db)

    outcome = any_cli(
        "charge", str(order.id), "--key", "order-1", "--phone", OUTAGE_PAYER, "--json"
    )

    assert outcome.exit_code == 7
    assert outcome.error()["code"] == "provider_unavailable"
    with any_db.transaction() as conn:
        (payment,) = payments_of(conn, [order.id])
        events = [e.event for e in events_of(conn, [order.id])[order.id]]
    assert payment.status is PaymentStatus.INITIATED
    assert payment.lease_expires_at is None  # the same key may resume at once
    assert events[-1] == "payment_submission_failed"


def test_a_charge_interrupted_after_the_claim_is_resumed_by_the_same_key(
    any_cli: Cli, any_db: Database
) -> None:
    order = an_order(any_db)
    with any_db.transaction() as conn:  # step 1 ran; the process died before asking the provider
        claim = claim_payment(
            conn,
            order_id=order.id,
            key="order-1",
            payer_phone=None,
            provider="simulator",
            lease=timedelta(0),
        )

    resumed = any_cli.ok("charge", str(order.id), "--key", "order-1")

    assert (resumed["id"], resumed["status"]) == (str(claim.payment.id), "pending")
    assert resumed["replayed"] is True
    with any_db.transaction() as conn:
        assert len(payments_of(conn, [order.id])) == 1


def test_a_key_whose_charge_is_still_in_flight_answers_key_in_use(
    any_cli: Cli, any_db: Database
) -> None:
    order = an_order(any_db)
    with any_db.transaction() as conn:  # another process holds the lease right now
        claim_payment(
            conn,
            order_id=order.id,
            key="order-1",
            payer_phone=None,
            provider="simulator",
            lease=timedelta(seconds=90),
        )
    before = count_rows(any_db)

    outcome = any_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "idempotency_key_in_use"
    assert count_rows(any_db) == before


def test_a_charge_whose_lease_ran_out_leaves_the_lease_of_the_run_that_took_over(
    db: Database,
) -> None:
    order = an_order(db)
    lease = timedelta(seconds=90)
    with db.transaction() as conn:
        first_run = claim_payment(
            conn,
            order_id=order.id,
            key="order-1",
            payer_phone=None,
            provider="simulator",
            lease=lease,
        ).payment
    clock.advance(lease + timedelta(seconds=1))
    with db.transaction() as conn:
        second_run = ledger.take_lease(conn, first_run.id, lease)
    assert second_run is not None

    with db.transaction() as conn:  # the first run's provider call times out at last
        ledger.release_lease(conn, first_run, "provider timed out")

    with db.transaction() as conn:
        assert get_payment(conn, first_run.id).lease_expires_at == second_run.lease_expires_at
        events = [e.event for e in events_of(conn, [order.id])[order.id]]
    assert "payment_submission_failed" not in events
