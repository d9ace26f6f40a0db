"""What `orderpay reconcile` reports, and `orderpay reconcile --dry-run`.

The JSON report lists under "changed" only payments that changed (settled, or submitted
again), under "review" those the provider disagrees about (kept for review, nothing moved),
and under "unchanged" the rest, each with its note ("no outcome yet", "cannot ask mtn: ...").
A dry run asks the providers the same status questions and reports what would change, but
writes nothing (no payment, order, order event, notification or webhook event) and never submits a
payment to a provider again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store import ledger
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from tests import test_reconcile
from tests.conftest import Cli, count_rows
from tests.fake_mtn import ONGOING, REJECTS, FakeMtn
from tests.http_recorder import Recorder
from tests.ledger_views import current, notification_count, order_status
from tests.test_reconcile import (
    NOW,
    backdate,
    claimed_payment,
    mtn_payment,
    requests_to_pay,
    simulated_payment,
)

# test_reconcile's fixtures: MTN's settings and the merchant's endpoint that webhook
# notifications reach.
merchant = test_reconcile.merchant
env = test_reconcile.env
mtn_cli = test_reconcile.mtn_cli

DRY = ("--dry-run", *NOW)


def entry(payment: Payment, before: str, after: str, says: str, note: str) -> dict[str, str]:
    return {
        "payment": str(payment.id),
        "order": str(payment.order_id),
        "before": before,
        "after": after,
        "provider_says": says,
        "note": note,
    }


def report(
    *, dry_run: bool = False, changed: Any = (), review: Any = (), unchanged: Any = ()
) -> dict[str, Any]:
    return {
        "checked": len(changed) + len(review) + len(unchanged),
        "dry_run": dry_run,
        "changed": list(changed),
        "review": list(review),
        "unchanged": list(unchanged),
        "refunds": {"checked": 0, "changed": [], "review": [], "unchanged": []},
        "skipped": [],
    }


# What a reconcile reports.


def test_a_payment_with_no_outcome_yet_is_listed_as_unchanged_not_as_changed(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn, payer="+" + ONGOING)  # MTN: PENDING

    document = mtn_cli.ok("reconcile", *NOW)

    assert document == report(
        unchanged=[entry(payment, "pending", "pending", "pending", "no outcome yet")]
    )


def test_a_payment_whose_provider_cannot_be_reached_is_listed_as_unchanged(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.fail("status", 500, times=None)
    before = count_rows(db)

    document = mtn_cli.ok("reconcile", *NOW)

    assert document["changed"] == []
    (unchanged,) = document["unchanged"]
    assert (unchanged["payment"], unchanged["provider_says"]) == (str(payment.id), "unavailable")
    assert unchanged["note"]
    assert count_rows(db) == before


def test_a_settled_payment_is_listed_as_changed(mtn_cli: Cli, db: Database, mtn: FakeMtn) -> None:
    payment = mtn_payment(db, mtn, payer="+" + REJECTS)  # MTN: FAILED, APPROVAL_REJECTED

    document = mtn_cli.ok("reconcile", *NOW)

    assert document == report(changed=[entry(payment, "pending", "failed", "failed", "")])


def test_a_payment_submitted_again_is_listed_as_changed(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db)  # its request never reached MTN

    document = mtn_cli.ok("reconcile", *NOW)

    assert document["unchanged"] == []
    (changed,) = document["changed"]
    assert (changed["payment"], changed["before"], changed["after"], changed["note"]) == (
        str(payment.id),
        "initiated",
        "pending",
        "resubmitted",
    )


def test_a_provider_reporting_another_amount_is_listed_for_review(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)  # 25.00 EUR
    mtn.patch_body(payment.id, amount="24")

    document = mtn_cli.ok("reconcile", *NOW)

    assert document == report(
        review=[
            entry(
                payment,
                "pending",
                "pending",
                "succeeded",
                "provider reports another amount: kept for review",
            )
        ]
    )
    assert current(db, payment).status is PaymentStatus.PENDING


def test_with_nothing_to_reconcile_the_table_says_so(mtn_cli: Cli) -> None:
    outcome = mtn_cli("reconcile", *NOW)

    assert outcome.exit_code == 0, outcome.stderr
    assert "nothing to reconcile" in outcome.stdout + outcome.stderr
    assert "checked 0 payment(s); 0 changed" in outcome.stderr


# --dry-run: ask, report, change nothing.


@pytest.mark.parametrize(
    ("payer", "after"),
    [(None, "succeeded"), ("+" + REJECTS, "failed")],
    ids=["successful", "rejected"],
)
def test_a_dry_run_reports_the_outcome_it_would_apply_and_changes_nothing(
    mtn_cli: Cli,
    db: Database,
    mtn: FakeMtn,
    merchant: Recorder,
    payer: str | None,
    after: str,
) -> None:
    payment = mtn_payment(db, mtn, **({"payer": payer} if payer else {}))
    before, asked = count_rows(db), mtn.calls("requesttopay")

    document = mtn_cli.ok("reconcile", *DRY)

    assert document == report(dry_run=True, changed=[entry(payment, "pending", after, after, "")])
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert order_status(db, payment) is OrderStatus.PENDING
    assert notification_count(db, payment) == 0
    assert mtn.calls("status") == 1  # it did ask
    assert mtn.calls("requesttopay") == asked
    assert merchant.count() == 0


def test_after_a_dry_run_a_real_reconcile_settles_what_it_reported(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    dry = mtn_cli.ok("reconcile", *DRY)

    real = mtn_cli.ok("reconcile", *NOW)

    assert real["changed"] == dry["changed"]
    assert current(db, payment).status is PaymentStatus.SUCCEEDED
    assert notification_count(db, payment) == 1


def test_a_dry_run_never_submits_an_initiated_payment_again(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db)  # its request never reached MTN: a real run would submit it
    before = count_rows(db)

    document = mtn_cli.ok("reconcile", *DRY)

    (changed,) = document["changed"]
    assert (changed["payment"], changed["before"], changed["after"]) == (
        str(payment.id),
        "initiated",
        "initiated",
    )
    assert changed["note"] == "would be submitted again under its own reference"
    assert requests_to_pay(mtn) == []
    assert count_rows(db) == before
    assert current(db, payment) == payment  # no lease taken either


def test_a_dry_run_leaves_a_payment_whose_charge_holds_the_lease_alone(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = claimed_payment(db)
    with db.transaction() as conn:
        held = ledger.take_lease(conn, payment.id, timedelta(minutes=5))
    assert held is not None

    document = mtn_cli.ok("reconcile", *DRY)

    (skipped,) = document["skipped"]
    assert skipped["why"] == "lease held: its request to mtn is in progress"
    assert document["changed"] == document["unchanged"] == []
    assert current(db, payment) == held


def test_a_dry_run_reports_a_disagreement_for_review_without_recording_it(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.patch_body(payment.id, amount="24")
    before = count_rows(db)

    document = mtn_cli.ok("reconcile", *DRY)

    (review,) = document["review"]
    assert review["payment"] == str(payment.id)
    assert count_rows(db) == before  # no order event: that is the real run's to write


def test_a_dry_run_in_a_table_says_it_changed_nothing(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before = count_rows(db)

    outcome = mtn_cli("reconcile", *DRY)

    assert outcome.exit_code == 0, outcome.stderr
    assert str(payment.id)[:8] in outcome.stdout
    assert "dry run" in outcome.stderr
    assert "1 would change" in outcome.stderr
    assert count_rows(db) == before
    assert current(db, payment) == payment


def test_a_dry_run_on_the_embedded_default_changes_nothing(
    sqlite_url: str, sqlite_db: Database
) -> None:
    cli = Cli({"DATABASE_URL": sqlite_url})
    payment = simulated_payment(cli, sqlite_db, "+" + REJECTS)
    backdate(sqlite_db, payment, timedelta(minutes=10))
    payment = current(sqlite_db, payment)
    before = count_rows(sqlite_db)

    document = cli.ok("reconcile", "--dry-run")

    assert document == report(
        dry_run=True, changed=[entry(payment, "pending", "failed", "failed", "")]
    )
    assert count_rows(sqlite_db) == before
    assert current(sqlite_db, payment) == payment


def test_a_dry_run_with_a_bad_age_exits_2_and_changes_nothing(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    before = count_rows(db)

    outcome = mtn_cli("reconcile", "--dry-run", "--older-than", "soon", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert outcome.stdout == ""
    assert count_rows(db) == before
    assert current(db, payment) == payment
    assert mtn.calls("status") == 0
