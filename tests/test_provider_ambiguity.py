"""Ambiguity is pending (DESIGN.md section 4), as an operator and MTN would play it.

MTN is the fake (tests/fake_mtn.py): it can answer 404 on a status for a while after it took a
request, lose its answer after acting on it, and refuse a re-sent request because the first one
went through. The operator uses the real CLI; the deployment's worker (`orderpay worker
--burst`, whose catch-up asks MTN on its schedule) is the only other actor: nobody runs
`orderpay reconcile` from cron. Each test ends by counting the money MTN moved against what
orderpay recorded: every amount MTN took or paid out is a succeeded payment or refund of ours,
or an open review item says what differs.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from orderpay import clock
from orderpay.store.db import Database
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn

REASON = "customer changed their mind"
# Past the first question of the catch-up: it comes when the request's lease (90 s) ran out.
FIRST_STEP = timedelta(seconds=91)
# Past any later step of the default schedule but the daily ones.
NEXT_STEP = timedelta(hours=25)


@pytest.fixture
def mtn_cli(pg_url: str, mtn: FakeMtn) -> Cli:
    return Cli({"DATABASE_URL": pg_url, **mtn.env()})


def the_worker_runs(cli: Cli, after: timedelta = FIRST_STEP) -> None:
    """Time passes, and the deployment's worker does what is due (its catch-up included)."""
    clock.advance(after)
    outcome = cli("worker", "--burst")
    assert outcome.exit_code == 0, outcome.stderr


def a_pending_payment(cli: Cli, db: Database) -> dict[str, Any]:
    """25.00 EUR that MTN accepted (202): pending, its callback not come."""
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    payment = cli.ok("charge", str(order.id), "--key", a_key())
    assert payment["status"] == "pending"
    return payment  # type: ignore[no-any-return]


def a_paid_payment(cli: Cli, db: Database) -> dict[str, Any]:
    payment = a_pending_payment(cli, db)
    the_worker_runs(cli)
    shown = cli.ok("payment", "show", payment["id"])
    assert shown["status"] == "succeeded"
    return shown  # type: ignore[no-any-return]


def open_items(cli: Cli) -> list[dict[str, Any]]:
    return cli.items("review", "list")  # type: ignore[no-any-return]


def unaccounted(cli: Cli, mtn: FakeMtn) -> list[str]:
    """What MTN took or paid out that orderpay neither records as succeeded, nor gave back,
    nor has an open review item about: the money this test must never leave."""
    payments = {p["id"]: p for p in cli.items("payment", "list", "--limit", "500")}
    orders = {p["order"] for p in payments.values()}
    refunds = {r["id"]: r for o in orders for r in cli.ok("order", "show", o)["refunds"]}
    reviewed = {item["payment"] for item in open_items(cli)}
    given_back: dict[str, Decimal] = {}
    for r in refunds.values():
        if r["status"] == "succeeded":
            given_back[r["payment"]] = given_back.get(r["payment"], Decimal(0)) + Decimal(
                r["amount"]
            )
    missing = []
    for reference, (amount, currency) in mtn.collected().items():
        ours = payments.get(reference)
        recorded = ours is not None and ours["status"] == "succeeded"
        if recorded and Decimal(ours["amount"]) == amount:
            continue
        if reference in reviewed or given_back.get(reference) == amount:
            continue  # an operator is asked, or gave it all back
        missing.append(f"collected {amount} {currency} under {reference}")
    for reference, (amount, currency) in mtn.disbursement.paid_out().items():
        ours = refunds.get(reference)
        if ours is None or ours["status"] != "succeeded" or Decimal(ours["amount"]) != amount:
            missing.append(f"paid out {amount} {currency} under {reference}")
    return missing


def net_at_mtn(mtn: FakeMtn) -> Decimal:
    taken = sum((amount for amount, _ in mtn.collected().values()), Decimal(0))
    return taken - sum((amount for amount, _ in mtn.disbursement.paid_out().values()), Decimal(0))


# 1. A cancel while MTN does not show a collection it took yet.


def test_a_cancel_while_mtn_answers_404_is_refused_and_changes_nothing(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_pending_payment(mtn_cli, db)
    mtn.late_404(payment["id"], polls=1)
    before = count_rows(db)

    outcome = mtn_cli("payment", "cancel", payment["id"], "--reason", REASON, "--yes", "--json")

    assert outcome.exit_code == 4, outcome.stderr
    assert outcome.error()["code"] == "payment_pending_at_provider"
    assert count_rows(db) == before


def test_a_payment_mtn_took_while_it_answered_404_to_a_cancel_is_settled_by_the_worker(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_pending_payment(mtn_cli, db)
    mtn.late_404(payment["id"], polls=1)
    assert mtn_cli("payment", "cancel", payment["id"], "--yes").exit_code == 4

    the_worker_runs(mtn_cli)

    assert mtn_cli.ok("payment", "show", payment["id"])["status"] == "succeeded"
    assert mtn_cli.ok("order", "show", payment["order"])["status"] == "paid"
    again = mtn_cli("charge", payment["order"], "--key", a_key(), "--json")
    assert again.error()["code"] == "order_already_paid"
    assert len(mtn.collected()) == 1
    assert unaccounted(mtn_cli, mtn) == []


def test_a_forced_cancel_mtn_then_collects_is_kept_for_review_and_refundable(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = a_pending_payment(mtn_cli, db)
    mtn.late_404(payment["id"], polls=1)
    forced = mtn_cli("payment", "cancel", payment["id"], "--force", "--yes", "--json")
    assert forced.json()["outcome"] == "cancelled_unconfirmed"
    second = mtn_cli.ok("charge", payment["order"], "--key", a_key())  # charged again

    the_worker_runs(mtn_cli)  # asks about both: MTN took both

    assert mtn_cli.ok("payment", "show", payment["id"])["status"] == "failed"
    assert mtn_cli.ok("payment", "show", second["id"])["status"] == "succeeded"
    [item] = open_items(mtn_cli)
    assert (item["reason"], item["payment"]) == ("success_after_cancel", payment["id"])
    assert item["suggested_action"].startswith("refund 25.00 EUR")
    assert unaccounted(mtn_cli, mtn) == []
    # The operator does what the item says, and names the refund when resolving it.
    refunded = mtn_cli.ok("refund", payment["id"], "--key", a_key(), "--reason", REASON, "--yes")
    assert refunded["status"] == "succeeded"
    mtn_cli.ok(
        "review", "resolve", str(item["id"]), "--note", "refunded", "--refund", refunded["id"]
    )
    assert net_at_mtn(mtn) == Decimal("25.00")  # one order's worth, as orderpay shows
    assert open_items(mtn_cli) == []
    assert unaccounted(mtn_cli, mtn) == []


# 2. A refund whose answer was lost, re-sent, refused because the first went through.


def a_refund_mtn_took_and_answered_500(
    cli: Cli, db: Database, mtn: FakeMtn, hidden_for: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    payment = a_paid_payment(cli, db)
    mtn.disbursement.checks_before_reference = True  # a copy of it exceeds what is left
    mtn.fail("refund", 500, process=True)
    key = a_key()
    lost = cli("refund", payment["id"], "--key", key, "--reason", REASON, "--yes", "--json")
    assert lost.exit_code == 7, lost.stderr
    [refund] = cli.ok("order", "show", payment["order"])["refunds"]
    assert refund["status"] == "initiated"
    mtn.disbursement.late_404(refund["id"], polls=hidden_for)
    return payment, {**refund, "key": key}


def test_a_re_sent_refund_refused_while_mtn_answers_404_stays_initiated(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment, refund = a_refund_mtn_took_and_answered_500(mtn_cli, db, mtn, hidden_for=1)

    again = mtn_cli(
        "refund", payment["id"], "--key", refund["key"], "--reason", REASON, "--yes", "--json"
    )

    assert again.exit_code == 7, again.stderr
    assert again.error()["code"] == "provider_unavailable"
    [stored] = mtn_cli.ok("order", "show", payment["order"])["refunds"]
    assert stored["status"] == "initiated"
    another = mtn_cli("refund", payment["id"], "--key", a_key(), "--reason", REASON, "--yes")
    assert another.exit_code == 4  # its amount is not refundable again
    assert len(mtn.disbursement.paid_out()) == 1


def test_a_refund_mtn_paid_out_after_losing_its_answer_is_settled_by_the_worker(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment, refund = a_refund_mtn_took_and_answered_500(mtn_cli, db, mtn, hidden_for=2)
    mtn_cli("refund", payment["id"], "--key", refund["key"], "--reason", REASON, "--yes")

    the_worker_runs(mtn_cli)  # 404 once more: sent again, refused, then visible
    the_worker_runs(mtn_cli, NEXT_STEP)

    [stored] = mtn_cli.ok("order", "show", payment["order"])["refunds"]
    assert stored["status"] == "succeeded"
    assert mtn_cli.ok("order", "show", payment["order"])["status"] == "refunded"
    assert [r.reference for r in mtn.disbursement.refunds] == [refund["id"]]
    assert net_at_mtn(mtn) == Decimal(0)
    assert unaccounted(mtn_cli, mtn) == []


# 3. A resumed charge refused because the first request went through.


def test_a_resumed_charge_mtn_refuses_as_a_copy_stays_initiated_and_is_settled_by_the_worker(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    key = a_key()
    mtn.fail("requesttopay", 500, process=True)  # MTN took it; the answer was lost
    assert mtn_cli("charge", str(order.id), "--key", key).exit_code == 7
    mtn.refuse_copies()
    [payment] = mtn_cli.ok("order", "show", str(order.id))["payments"]
    mtn.late_404(payment["id"], polls=1)

    resumed = mtn_cli("charge", str(order.id), "--key", key, "--json")

    assert resumed.exit_code == 7, resumed.stderr
    assert mtn_cli.ok("payment", "show", payment["id"])["status"] == "initiated"
    the_worker_runs(mtn_cli)
    assert mtn_cli.ok("payment", "show", payment["id"])["status"] == "succeeded"
    assert mtn_cli.ok("order", "show", str(order.id))["status"] == "paid"
    assert len(mtn.collected()) == 1
    assert unaccounted(mtn_cli, mtn) == []


# 7. Nothing waits for cron: the worker alone asks about every open question.


def test_the_worker_alone_settles_a_lost_callback_a_pending_refund_and_a_forced_cancel(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    no_callback = a_pending_payment(mtn_cli, db)
    refunded = a_paid_payment(mtn_cli, db)
    mtn.disbursement.pending_for = 60
    pending_refund = mtn_cli.ok(
        "refund", refunded["id"], "--key", a_key(), "--reason", REASON, "--yes"
    )
    assert pending_refund["status"] == "pending"
    forced = a_pending_payment(mtn_cli, db)
    mtn.set_status(forced["id"], "FAILED", "APPROVAL_REJECTED")
    mtn.late_404(forced["id"], polls=1)
    mtn_cli("payment", "cancel", forced["id"], "--force", "--yes")
    mtn.advance(61)

    the_worker_runs(mtn_cli)

    assert mtn_cli.ok("payment", "show", no_callback["id"])["status"] == "succeeded"
    [refund] = mtn_cli.ok("order", "show", refunded["order"])["refunds"]
    assert (refund["id"], refund["status"]) == (pending_refund["id"], "succeeded")
    assert mtn_cli.ok("payment", "show", forced["id"])["status"] == "failed"
    dry = mtn_cli.ok("reconcile", "--dry-run", "--older-than", "0s")
    assert dry["checked"] == dry["refunds"]["checked"] == 0  # nothing left awaiting an answer
    assert open_items(mtn_cli) == []
    assert unaccounted(mtn_cli, mtn) == []
