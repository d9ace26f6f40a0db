"""`orderpay refund PAYMENT_ID --key KEY [--amount] --reason TEXT`: money back, once per key.

On Postgres, and on the embedded SQLite default where the flow is the same. The simulator
decides by the payment's payer (tests/refund_helpers.py names its numbers).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from orderpay.domain.states import OrderStatus, RefundStatus
from orderpay.errors import PaymentDeclined, RefundNotSupported
from orderpay.payments.charge import charge_order
from orderpay.providers.capabilities import RefundMode
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.orders import get_order
from orderpay.store.payments import find_by_key
from orderpay.store.refunds import get_refund
from tests.builders import a_key, an_order
from tests.conftest import Cli, count_rows
from tests.refund_helpers import (
    CHARGE_REFUSED_PAYER,
    FAILING_PAYER,
    OUTAGE_PAYER,
    REFUSING_PAYER,
    RecordingProvider,
    a_paid_payment,
    refund,
    refunds_of,
    timeline_of,
)

REASON = ("--reason", "customer returned the goods")
YES = ("--yes",)


def run_refund(cli: Cli, payment_id: uuid.UUID, *args: str, **env: str) -> Any:
    """A refund that must succeed (exit 0); its JSON document."""
    return cli.ok("refund", str(payment_id), *REASON, *YES, *args, **env)


def order_status(db: Database, order_id: uuid.UUID) -> OrderStatus:
    with db.transaction() as conn:
        return get_order(conn, order_id).status


# What a refund does.


def test_refunding_without_an_amount_gives_back_the_whole_payment_and_the_order_is_refunded(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db)

    document = run_refund(any_cli, payment.id, "--key", "refund-1")

    assert (document["status"], document["amount"], document["currency"]) == (
        "succeeded",
        "25.00",
        "GHS",
    )
    assert (document["payment"], document["replayed"]) == (str(payment.id), False)
    assert document["provider_reference"] == document["id"]
    assert order_status(any_db, payment.order_id) is OrderStatus.REFUNDED


def test_a_partial_refund_makes_the_order_partially_refunded_and_the_rest_makes_it_refunded(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db)

    first = run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "10.00")
    after_first = order_status(any_db, payment.order_id)
    rest = run_refund(any_cli, payment.id, "--key", "refund-2")

    assert (first["status"], first["amount"]) == ("succeeded", "10.00")
    assert after_first is OrderStatus.PARTIALLY_REFUNDED
    assert (rest["status"], rest["amount"]) == ("succeeded", "15.00")
    assert order_status(any_db, payment.order_id) is OrderStatus.REFUNDED


def test_replaying_a_refund_key_returns_the_stored_refund(any_cli: Cli, any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    first = run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "5.00")
    before = count_rows(any_db)

    again = run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "5.00")

    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"
    }
    assert count_rows(any_db) == before


def test_replaying_a_refund_key_asks_the_provider_nothing(db: Database) -> None:
    payment = a_paid_payment(db)
    provider = RecordingProvider()
    refund(db, provider, payment.id, key="refund-1", amount="5.00")

    again = refund(db, provider, payment.id, key="refund-1", amount="5.00")

    assert again.replayed is True
    assert len(provider.refund_requests) == 1
    assert len(provider.status_calls) == 1  # the first run's one status call, none since


def test_replaying_a_key_with_the_reason_reworded_replays_the_stored_refund(
    any_cli: Cli, any_db: Database
) -> None:
    # The reason explains the refund and moves no money: it is not part of the fingerprint.
    payment = a_paid_payment(any_db)
    first = run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "5.00")

    again = any_cli.ok(
        "refund",
        str(payment.id),
        "--key",
        "refund-1",
        "--amount",
        "5.00",
        "--reason",
        "goods returned (reworded)",
        "--yes",
    )

    assert (again["id"], again["replayed"]) == (first["id"], True)
    assert again["reason"] == "customer returned the goods"


def test_replaying_a_refund_the_rest_key_after_it_succeeded_replays_it(
    any_cli: Cli, any_db: Database
) -> None:
    # The fingerprint holds the amount asked ("the rest"), not what it came to: nothing is
    # left now, yet the same request replays.
    payment = a_paid_payment(any_db)
    first = run_refund(any_cli, payment.id, "--key", "refund-1")

    again = run_refund(any_cli, payment.id, "--key", "refund-1")

    assert (again["id"], again["amount"], again["replayed"]) == (first["id"], "25.00", True)


@pytest.mark.parametrize(
    "other_request",
    [("--amount", "6.00"), ()],
    ids=["another amount", "the rest instead of an amount"],
)
def test_reusing_a_refund_key_for_another_request_is_refused_and_stores_nothing(
    any_cli: Cli, any_db: Database, other_request: tuple[str, ...]
) -> None:
    payment = a_paid_payment(any_db)
    run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "5.00")
    before = count_rows(any_db)

    outcome = any_cli(
        "refund", str(payment.id), "--key", "refund-1", *other_request, *REASON, *YES, "--json"
    )

    assert outcome.exit_code == 5
    assert outcome.error()["code"] == "idempotency_key_reused"
    assert count_rows(any_db) == before


def test_reusing_a_refund_key_for_another_payment_is_refused_and_stores_nothing(
    cli: Cli, db: Database
) -> None:
    first, second = a_paid_payment(db), a_paid_payment(db)
    run_refund(cli, first.id, "--key", "refund-1", "--amount", "5.00")
    before = count_rows(db)

    outcome = cli(
        "refund",
        str(second.id),
        "--key",
        "refund-1",
        "--amount",
        "5.00",
        *REASON,
        *YES,
        "--json",
    )

    assert outcome.exit_code == 5
    assert outcome.error()["code"] == "idempotency_key_reused"
    assert count_rows(db) == before


# What is refused, with nothing stored.


def a_pending_payment_id(db: Database) -> uuid.UUID:
    order = an_order(db)
    charged = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    )
    return charged.payment.id


def a_failed_payment_id(db: Database) -> uuid.UUID:
    order = an_order(db, phone=CHARGE_REFUSED_PAYER)
    with pytest.raises(PaymentDeclined):
        charge_order(
            db,
            SimulatorProvider(),
            order_id=order.id,
            key="declined-charge",
            default_region="GH",
            lease_seconds=90,
        )
    with db.transaction() as conn:
        found = find_by_key(conn, "declined-charge")
        assert found is not None
        return found.id


@pytest.mark.parametrize(
    "make", [a_pending_payment_id, a_failed_payment_id], ids=["pending", "failed"]
)
def test_refunding_a_payment_that_did_not_succeed_is_refused_and_stores_nothing(
    any_cli: Cli, any_db: Database, make: Any
) -> None:
    payment_id = make(any_db)
    before = count_rows(any_db)

    outcome = any_cli("refund", str(payment_id), "--key", "refund-1", *REASON, *YES, "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "payment_not_refundable"
    assert count_rows(any_db) == before


def test_a_refund_above_what_remains_refundable_is_refused_and_stores_nothing(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db)
    run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "20.00")
    before = count_rows(any_db)

    outcome = any_cli(
        "refund",
        str(payment.id),
        "--key",
        "refund-2",
        "--amount",
        "5.01",
        *REASON,
        *YES,
        "--json",
    )

    assert outcome.exit_code == 4
    error = outcome.error()
    assert (error["code"], error["remaining"]) == ("refund_exceeds_payment", "5.00")
    assert count_rows(any_db) == before


def test_a_refunded_payment_has_nothing_left_to_refund(any_cli: Cli, any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    run_refund(any_cli, payment.id, "--key", "refund-1")
    before = count_rows(any_db)

    outcome = any_cli("refund", str(payment.id), "--key", "refund-2", *REASON, *YES, "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "refund_exceeds_payment"
    assert count_rows(any_db) == before


@pytest.mark.parametrize(
    ("option", "code"),
    [
        (("--amount", "1.005"), "invalid_amount"),
        (("--amount", "0"), "invalid_amount"),
        (("--amount", "0.00"), "invalid_amount"),
        (("--amount", "-5"), "invalid_amount"),
        (("--amount", "five"), "invalid_amount"),
        (("--amount", "1e3"), "invalid_amount"),
        (("--amount", "5.00", "--currency", "UGX"), "currency_mismatch"),
        (("--amount", "5.00", "--currency", "XYZ"), "unknown_currency"),
    ],
    ids=[
        "too many decimals",
        "zero",
        "zero with decimals",
        "negative",
        "not a number",
        "exponent",
        "another currency",
        "unknown currency",
    ],
)
@pytest.mark.slow
def test_a_bad_amount_is_exit_2_and_stores_nothing(
    any_cli: Cli, any_db: Database, option: tuple[str, ...], code: str
) -> None:
    payment = a_paid_payment(any_db)
    before = count_rows(any_db)

    outcome = any_cli(
        "refund", str(payment.id), "--key", "refund-1", *option, *REASON, *YES, "--json"
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == code
    assert count_rows(any_db) == before


def test_the_payments_own_currency_may_be_named(cli: Cli, db: Database) -> None:
    payment = a_paid_payment(db)

    document = run_refund(cli, payment.id, "--key", "r-1", "--amount", "5", "--currency", "ghs")

    assert (document["amount"], document["currency"]) == ("5.00", "GHS")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--key", "refund-1"), "invalid_field"),  # no --reason
        (("--key", "refund-1", "--reason", "   "), "invalid_field"),
        (("--key", "refund-1", "--reason", "x" * 201), "invalid_field"),
        (("--reason", "why"), "idempotency_key_missing"),
        (("--key", "has space", "--reason", "why"), "invalid_idempotency_key"),
    ],
    ids=["no reason", "blank reason", "reason too long", "no key", "malformed key"],
)
def test_a_refund_without_a_key_or_a_reason_is_exit_2_and_stores_nothing(
    cli: Cli, db: Database, args: tuple[str, ...], code: str
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    outcome = cli("refund", str(payment.id), *args, *YES, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == code
    assert count_rows(db) == before


def test_refunding_an_unknown_payment_is_exit_3(any_cli: Cli, any_db: Database) -> None:
    before = count_rows(any_db)

    outcome = any_cli("refund", str(uuid.uuid4()), "--key", "refund-1", *REASON, *YES, "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "payment_not_found"
    assert count_rows(any_db) == before


def test_without_yes_and_without_a_terminal_a_refund_is_refused_and_stores_nothing(
    cli: Cli, db: Database
) -> None:
    payment = a_paid_payment(db)
    before = count_rows(db)

    outcome = cli("refund", str(payment.id), "--key", "refund-1", *REASON, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "confirmation_required"
    assert "25.00 GHS" in outcome.error()["message"]
    assert count_rows(db) == before


def test_a_provider_that_refunds_only_whole_payments_refuses_a_partial_refund(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    whole_only = RecordingProvider(refund_modes=frozenset({RefundMode.FULL_BY_MONEY_ID}))
    before = count_rows(db)

    with pytest.raises(RefundNotSupported, match="only a whole payment"):
        refund(db, whole_only, payment.id, amount="5.00")

    assert count_rows(db) == before
    assert whole_only.refund_requests == []


# The provider's answers.


def test_a_refund_the_provider_declines_is_exit_6_and_failed_with_its_reason(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db, phone=REFUSING_PAYER)

    outcome = any_cli("refund", str(payment.id), "--key", "refund-1", *REASON, *YES, "--json")

    assert outcome.exit_code == 6
    error = outcome.error()
    assert (error["code"], error["reason"], error["replayed"]) == (
        "refund_declined",
        "NOT_ENOUGH_FUNDS",
        False,
    )
    with any_db.transaction() as conn:
        stored = get_refund(conn, uuid.UUID(error["refund"]))
    assert (stored.status, stored.failure_reason) == (RefundStatus.FAILED, "NOT_ENOUGH_FUNDS")
    assert order_status(any_db, payment.order_id) is OrderStatus.PAID


def test_replaying_a_declined_refund_key_is_exit_6_again(cli: Cli, db: Database) -> None:
    payment = a_paid_payment(db, phone=REFUSING_PAYER)
    cli("refund", str(payment.id), "--key", "refund-1", *REASON, *YES)
    before = count_rows(db)

    again = cli("refund", str(payment.id), "--key", "refund-1", *REASON, *YES, "--json")

    assert again.exit_code == 6
    assert again.error()["replayed"] is True
    assert count_rows(db) == before


def test_a_provider_outage_is_exit_7_and_keeps_the_refund_initiated(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db, phone=OUTAGE_PAYER)

    outcome = any_cli("refund", str(payment.id), "--key", "refund-1", *REASON, *YES, "--json")

    assert outcome.exit_code == 7
    assert outcome.error()["code"] == "provider_unavailable"
    (stored,) = refunds_of(any_db, payment.id)
    assert stored.status is RefundStatus.INITIATED
    assert stored.lease_expires_at is None  # the same key may resume at once
    assert timeline_of(any_db, payment.order_id)[-1].event == "refund_submission_failed"
    assert order_status(any_db, payment.order_id) is OrderStatus.PAID


def test_a_refund_that_fails_at_the_provider_frees_its_amount(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db, phone=FAILING_PAYER)  # refunds accepted, then failed
    failed = any_cli(
        "refund",
        str(payment.id),
        "--key",
        "refund-1",
        "--amount",
        "20.00",
        *REASON,
        *YES,
        "--json",
    )

    # "The rest" counts no failed refund: it is the whole payment again, not 5.00.
    again = any_cli("refund", str(payment.id), "--key", "refund-2", *REASON, *YES, "--json")

    assert (failed.exit_code, failed.error()["reason"]) == (6, "PAYEE_NOT_FOUND")
    assert again.exit_code == 6  # this payer's refunds all fail; but it was asked for in full
    amounts = sorted(r.amount.as_string() for r in refunds_of(any_db, payment.id))
    assert amounts == ["20.00", "25.00"]
    assert order_status(any_db, payment.order_id) is OrderStatus.PAID


# The record: order events, operator, order and payment views.


def test_each_step_of_a_refund_is_on_the_timeline_and_names_the_operator(
    any_cli: Cli, any_db: Database
) -> None:
    payment = a_paid_payment(any_db)

    document = run_refund(
        any_cli, payment.id, "--key", "refund-1", "--amount", "10.00", ORDERPAY_OPERATOR="akua"
    )

    events = timeline_of(any_db, payment.order_id)
    refund_events = [e for e in events if e.event.startswith(("refund_", "order_partially"))]
    assert [e.event for e in refund_events] == [
        "refund_initiated",
        "refund_pending",
        "refund_succeeded",
        "order_partially_refunded",
    ]
    assert refund_events[0].operator == "akua"
    assert events[-1].event == "notification_queued"
    assert document["operator"] == "akua"
    with any_db.transaction() as conn:
        assert get_refund(conn, uuid.UUID(document["id"])).operator == "akua"


def test_order_show_lists_the_orders_refunds(any_cli: Cli, any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    refunded = run_refund(any_cli, payment.id, "--key", "refund-1", "--amount", "10.00")

    order = any_cli.ok("order", "show", str(payment.order_id))
    table = any_cli("order", "show", str(payment.order_id))

    assert order["status"] == "partially_refunded"
    assert order["refunds"] == [{k: v for k, v in refunded.items() if k != "replayed"}]
    assert "Refunds" in table.stdout
    assert "10.00 GHS" in table.stdout


def test_payment_show_lists_the_payments_refunds(cli: Cli, db: Database) -> None:
    payment = a_paid_payment(db)
    first = run_refund(cli, payment.id, "--key", "refund-1", "--amount", "10.00")

    shown = cli.ok("payment", "show", str(payment.id))
    table = cli("payment", "show", str(payment.id)[:8])

    assert [r["id"] for r in shown["refunds"]] == [first["id"]]
    assert "refund-1" in table.stdout


@pytest.mark.slow
def test_the_refund_table_shows_what_was_refunded(cli: Cli, db: Database) -> None:
    payment = a_paid_payment(db)

    outcome = cli(
        "refund", str(payment.id)[:8], "--key", "refund-1", "--amount", "7.50", *REASON, *YES
    )

    assert outcome.exit_code == 0, outcome.stderr
    assert "succeeded" in outcome.stdout
    assert "7.50 GHS" in outcome.stdout
    assert "refund-1" in outcome.stdout


def test_a_fully_refunded_payment_is_refused_before_the_operator_is_asked_to_confirm(
    cli: Cli, db: Database
) -> None:
    payment = a_paid_payment(db)
    cli.ok("refund", str(payment.id), "--key", "refund-1", *REASON, *YES)
    before = count_rows(db)

    outcome = cli("refund", str(payment.id), "--key", "refund-2", *REASON)

    assert outcome.exit_code == 4
    assert "has 0.00 GHS left to refund" in outcome.stderr
    assert "[refund_exceeds_payment]" in outcome.stderr
    assert "Refund 0.00" not in outcome.stdout + outcome.stderr
    assert count_rows(db) == before
