"""`orderpay refund` of MTN payments, through MTN's Disbursement product, against the fake MTN
server (tests/fake_mtn.py + tests/fake_mtn_disbursement.py) on Postgres.

Each test pays an order the way an operator does (`orderpay charge`, then `orderpay reconcile`
settles it from MTN's status call), refunds it through the CLI, and checks both our rows and
what MTN received. The sandbox takes EUR only, so orders are in EUR.
"""

from __future__ import annotations

from typing import Any

import pytest

from orderpay.store.db import Database
from tests.builders import MTN_SANDBOX_PAYER, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn
from tests.fake_mtn_disbursement import Refund
from tests.processes import run_cli_in_parallel

NOW = ("--older-than", "0s")
PROCESSES = 8
REASON = "item out of stock"


@pytest.fixture
def mtn_cli(pg_url: str, mtn: FakeMtn) -> Cli:
    return Cli({"DATABASE_URL": pg_url, **mtn.env()})


def a_paid_mtn_payment(cli: Cli, db: Database) -> dict[str, Any]:
    """An order of 25.00 EUR charged through MTN and settled by `orderpay reconcile` (MTN
    reports the request to pay SUCCESSFUL): the payment, as `payment show --json` prints it."""
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    payment = cli.ok("charge", str(order.id), "--key", f"charge-{order.id}")
    assert payment["status"] == "pending"
    cli.ok("reconcile", *NOW)
    shown = cli.ok("payment", "show", payment["id"])
    assert shown["status"] == "succeeded", shown
    return shown  # type: ignore[no-any-return]


def refund(cli: Cli, payment: dict[str, Any], key: str, *options: str) -> Any:
    return cli(
        "refund", payment["id"], "--key", key, "--reason", REASON, "--yes", "--json", *options
    )


def refunds_at_mtn(mtn: FakeMtn) -> list[Refund]:
    return mtn.disbursement.refunds


def refund_requests(mtn: FakeMtn) -> list[tuple[str, int]]:
    """(X-Reference-Id, HTTP status) of every refund request MTN answered, in order."""
    return [(r.headers["x-reference-id"], r.status) for r in mtn.requests if r.kind == "refund"]


def order_of(cli: Cli, payment: dict[str, Any]) -> Any:
    return cli.ok("order", "show", payment["order"])


def refund_events(cli: Cli, payment: dict[str, Any]) -> list[str]:
    """The refund events of the payment's order, in order."""
    events = order_of(cli, payment)["events"]
    return [e["event"] for e in events if e["event"].startswith("refund_")]


# A refund MTN accepts.


@pytest.mark.slow
def test_a_full_refund_sends_mtn_one_refund_of_the_payment_and_ends_succeeded(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)

    outcome = refund(mtn_cli, payment, "refund-1")

    assert outcome.exit_code == 0, outcome.stderr
    shown = outcome.json()
    assert (shown["status"], shown["amount"], shown["currency"]) == ("succeeded", "25.00", "EUR")
    [sent] = [r for r in mtn.requests if r.kind == "refund"]
    assert sent.headers["x-reference-id"] == shown["id"]
    body = sent.json()
    assert body["referenceIdToRefund"] == payment["provider_reference"] == payment["id"]
    assert (body["amount"], body["currency"]) == ("25.00", "EUR")
    assert body["externalId"] == payment["order"]
    [at_mtn] = refunds_at_mtn(mtn)
    assert shown["provider_reference"] == at_mtn.reference == shown["id"]
    assert shown["provider_transaction_id"] == at_mtn.financial_transaction_id
    assert order_of(mtn_cli, payment)["status"] == "refunded"


@pytest.mark.slow
def test_a_partial_refund_sends_its_own_amount_and_leaves_the_order_partially_refunded(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)

    outcome = refund(mtn_cli, payment, "refund-1", "--amount", "10.00")

    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.json()["status"] == "succeeded"
    [at_mtn] = refunds_at_mtn(mtn)
    assert (at_mtn.amount, at_mtn.reference_to_refund) == ("10.00", payment["id"])
    assert order_of(mtn_cli, payment)["status"] == "partially_refunded"


def test_replaying_a_refund_key_sends_no_second_refund_to_mtn(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    first = refund(mtn_cli, payment, "refund-1").json()

    again = refund(mtn_cli, payment, "refund-1")

    assert again.exit_code == 0, again.stderr
    assert (again.json()["id"], again.json()["replayed"]) == (first["id"], True)
    assert refund_requests(mtn) == [(first["id"], 202)]


@pytest.mark.slow
def test_a_refund_still_pending_at_mtn_is_settled_by_reconcile(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.disbursement.pending_for = 60  # MTN: PENDING for a minute

    pending = refund(mtn_cli, payment, "refund-1")
    assert pending.exit_code == 0, pending.stderr
    assert pending.json()["status"] == "pending"
    assert order_of(mtn_cli, payment)["status"] == "paid"

    mtn.advance(61)
    mtn_cli.ok("reconcile", *NOW)

    [settled] = order_of(mtn_cli, payment)["refunds"]
    assert (settled["id"], settled["status"]) == (pending.json()["id"], "succeeded")
    assert order_of(mtn_cli, payment)["status"] == "refunded"
    assert mtn.calls("refund") == 1
    assert mtn.calls("refund_status") == 2  # once by the refund, once by reconcile


def test_a_refund_mtn_reports_failed_exits_6_and_its_amount_is_refundable_again(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.disbursement.script_payee(MTN_SANDBOX_PAYER, "FAILED", "PAYEE_NOT_FOUND")

    outcome = refund(mtn_cli, payment, "refund-1")

    assert outcome.exit_code == 6
    error = outcome.error()
    assert (error["code"], error["reason"]) == ("refund_declined", "PAYEE_NOT_FOUND")
    assert order_of(mtn_cli, payment)["status"] == "paid"
    mtn.disbursement.script_payee(MTN_SANDBOX_PAYER, "SUCCESSFUL")
    again = refund(mtn_cli, payment, "refund-2")
    assert again.exit_code == 0, again.stderr
    assert len(refunds_at_mtn(mtn)) == 2


# A refund MTN reports FAILED for an error of its own: the credit may still complete.


@pytest.mark.parametrize("reason", ["INTERNAL_PROCESSING_ERROR", None], ids=["ambiguous", "none"])
@pytest.mark.slow
def test_a_refund_mtn_reports_failed_without_a_definite_reason_stays_pending_and_unrefundable(
    mtn_cli: Cli, db: Database, mtn: FakeMtn, reason: str | None
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.disbursement.script_payee(MTN_SANDBOX_PAYER, "FAILED", reason)

    outcome = refund(mtn_cli, payment, "refund-1")

    assert outcome.exit_code == 0, outcome.stderr
    pending = outcome.json()
    assert pending["status"] == "pending"
    report = mtn_cli.ok("reconcile", *NOW)
    [unchanged] = report["refunds"]["unchanged"]
    assert (unchanged["refund"], unchanged["after"]) == (pending["id"], "pending")
    assert (reason or "no outcome yet") in unchanged["note"]
    # Its amount is not freed: refunding it again could pay the customer twice.
    before = count_rows(db)
    again = refund(mtn_cli, payment, "refund-2")
    assert again.exit_code == 4
    assert again.error()["code"] == "refund_exceeds_payment"
    assert count_rows(db) == before
    assert order_of(mtn_cli, payment)["status"] == "paid"
    assert [r.reference for r in refunds_at_mtn(mtn)] == [pending["id"]]


def test_a_refund_kept_pending_after_an_ambiguous_failure_is_settled_when_mtn_reports_success(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.disbursement.script_payee(MTN_SANDBOX_PAYER, "FAILED", "INTERNAL_PROCESSING_ERROR")
    pending = refund(mtn_cli, payment, "refund-1").json()
    assert pending["status"] == "pending"
    mtn.disbursement.set_status(pending["id"], "SUCCESSFUL")

    report = mtn_cli.ok("reconcile", *NOW)

    [changed] = report["refunds"]["changed"]
    assert (changed["refund"], changed["before"], changed["after"]) == (
        pending["id"],
        "pending",
        "succeeded",
    )
    assert order_of(mtn_cli, payment)["status"] == "refunded"
    assert mtn.calls("refund") == 1


# Concurrent refunds.


@pytest.mark.slow
def test_processes_refunding_with_one_key_at_once_send_mtn_one_refund(
    mtn_cli: Cli, pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    db.dispose()  # the children must not inherit the pool's connections
    argv = ["refund", payment["id"], "--key", "refund-1", "--reason", REASON, "--yes"]

    codes = run_cli_in_parallel(mtn_cli.env, [argv] * PROCESSES)

    assert set(codes) <= {0, 4}, codes  # 4: the key was in progress in another process
    assert 0 in codes
    [stored] = order_of(mtn_cli, payment)["refunds"]
    assert refund_requests(mtn) == [(stored["id"], 202)]
    assert [r.reference for r in refunds_at_mtn(mtn)] == [stored["id"]]


@pytest.mark.slow
def test_processes_refunding_parts_at_once_never_ask_mtn_for_more_than_the_payment(
    mtn_cli: Cli, pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)  # 25.00 EUR
    db.dispose()
    argvs = [
        [
            "refund",
            payment["id"],
            "--key",
            f"refund-{n}",
            "--amount",
            "10.00",
            "--reason",
            REASON,
            "--yes",
        ]
        for n in range(PROCESSES)
    ]

    codes = run_cli_in_parallel(mtn_cli.env, argvs)

    assert sorted(codes) == [0, 0] + [4] * (PROCESSES - 2), codes  # 4: refund_exceeds_payment
    assert [r.amount for r in refunds_at_mtn(mtn)] == ["10.00", "10.00"]
    assert [status for _, status in refund_requests(mtn)] == [202, 202]  # MTN refused none
    assert order_of(mtn_cli, payment)["status"] == "partially_refunded"


# A refund MTN refuses, or cannot answer.


def test_a_refund_mtn_declines_exits_6_and_mtn_holds_no_refund(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.fail("refund", 400, "NOT_ENOUGH_FUNDS")

    outcome = refund(mtn_cli, payment, "refund-1")

    assert outcome.exit_code == 6
    assert outcome.error()["code"] == "refund_declined"
    [stored] = order_of(mtn_cli, payment)["refunds"]
    assert stored["status"] == "failed"
    assert refunds_at_mtn(mtn) == []
    assert mtn.calls("refund_status") == 0


def test_a_refund_while_mtn_is_down_exits_7_and_the_same_key_resubmits_the_same_reference(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.fail("refund", 500)

    down = refund(mtn_cli, payment, "refund-1")
    assert down.exit_code == 7, down.stderr
    [initiated] = order_of(mtn_cli, payment)["refunds"]
    assert initiated["status"] == "initiated"

    again = refund(mtn_cli, payment, "refund-1")

    assert again.exit_code == 0, again.stderr
    assert again.json()["id"] == initiated["id"]
    assert again.json()["status"] == "succeeded"
    assert refund_requests(mtn) == [(initiated["id"], 500), (initiated["id"], 202)]
    assert [r.reference for r in refunds_at_mtn(mtn)] == [initiated["id"]]


def test_a_refund_mtn_took_before_answering_500_is_settled_by_the_same_key_through_409(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.fail("refund", 500, process=True)  # MTN stores the refund; the gateway answers 500

    down = refund(mtn_cli, payment, "refund-1", "--amount", "10.00")
    assert down.exit_code == 7, down.stderr
    [initiated] = order_of(mtn_cli, payment)["refunds"]
    assert initiated["status"] == "initiated"
    assert [r.reference for r in refunds_at_mtn(mtn)] == [initiated["id"]]

    again = refund(mtn_cli, payment, "refund-1", "--amount", "10.00")

    assert again.exit_code == 0, again.stderr
    assert (again.json()["id"], again.json()["status"]) == (initiated["id"], "succeeded")
    assert refund_requests(mtn) == [(initiated["id"], 500), (initiated["id"], 409)]
    assert [r.reference for r in refunds_at_mtn(mtn)] == [initiated["id"]]
    assert refund_events(mtn_cli, payment)[-2:] == ["refund_pending", "refund_succeeded"]
    assert mtn.calls("refund_status") == 1
    assert order_of(mtn_cli, payment)["status"] == "partially_refunded"


@pytest.mark.slow
def test_a_refund_mtn_took_before_answering_500_is_settled_by_reconcile_from_its_status(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.fail("refund", 500, process=True)  # MTN stores the refund; the gateway answers 500
    down = refund(mtn_cli, payment, "refund-1")
    assert down.exit_code == 7, down.stderr
    [initiated] = order_of(mtn_cli, payment)["refunds"]
    # No clock to move: a provider error releases the refund's lease, so the next run (of the
    # key, or reconcile) may resume it at once.

    report = mtn_cli.ok("reconcile", *NOW)

    [changed] = report["refunds"]["changed"]
    assert (changed["refund"], changed["before"], changed["after"]) == (
        initiated["id"],
        "initiated",
        "succeeded",
    )
    assert refund_requests(mtn) == [(initiated["id"], 500)]  # asked, not sent again
    assert [r.reference for r in refunds_at_mtn(mtn)] == [initiated["id"]]
    assert order_of(mtn_cli, payment)["status"] == "refunded"


def test_a_refund_mtn_took_and_does_not_show_yet_is_sent_again_and_settled_through_409(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.fail("refund", 500, process=True)
    assert refund(mtn_cli, payment, "refund-1").exit_code == 7
    [initiated] = order_of(mtn_cli, payment)["refunds"]
    mtn.disbursement.late_404(initiated["id"], polls=1)  # not visible to the first question

    report = mtn_cli.ok("reconcile", *NOW)

    [changed] = report["refunds"]["changed"]
    assert (changed["refund"], changed["after"]) == (initiated["id"], "succeeded")
    assert refund_requests(mtn) == [(initiated["id"], 500), (initiated["id"], 409)]
    assert [r.reference for r in refunds_at_mtn(mtn)] == [initiated["id"]]
    assert refund_events(mtn_cli, payment)[-2:] == ["refund_pending", "refund_succeeded"]
    assert order_of(mtn_cli, payment)["status"] == "refunded"


# Configuration.


def test_a_refund_without_the_disbursement_settings_exits_2_and_stores_nothing(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    no_refunds = Cli({**mtn_cli.env, **mtn.env(refunds=False)})
    for name in ("SUBSCRIPTION_KEY", "API_USER", "API_KEY"):
        no_refunds.env.pop(f"MTN_MOMO_DISBURSEMENT_{name}")
    before = count_rows(db)

    outcome = refund(no_refunds, payment, "refund-1")

    assert outcome.exit_code == 2
    error = outcome.error()
    assert error["code"] == "configuration_error"
    for name in ("SUBSCRIPTION_KEY", "API_USER", "API_KEY"):
        assert f"MTN_MOMO_DISBURSEMENT_{name}" in error["message"]
    assert count_rows(db) == before
    assert (mtn.calls("disbursement_token"), mtn.calls("refund")) == (0, 0)


def test_reconcile_without_the_disbursement_settings_leaves_a_pending_refund_and_says_why(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_paid_mtn_payment(mtn_cli, db)
    mtn.disbursement.pending_for = 60
    pending = refund(mtn_cli, payment, "refund-1").json()
    no_refunds = Cli({**mtn_cli.env, **mtn.env(refunds=False)})
    for name in ("SUBSCRIPTION_KEY", "API_USER", "API_KEY"):
        no_refunds.env.pop(f"MTN_MOMO_DISBURSEMENT_{name}")
    mtn.advance(61)
    before = count_rows(db)

    report = no_refunds.ok("reconcile", *NOW)

    [skipped] = report["skipped"]
    assert (skipped["kind"], skipped["id"], skipped["status"]) == (
        "refund",
        pending["id"],
        "pending",
    )
    assert "MTN_MOMO_DISBURSEMENT_API_KEY" in skipped["why"]
    assert count_rows(db) == before
    assert mtn.calls("refund_status") == 1  # only the refund's own, before
