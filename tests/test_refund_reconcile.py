"""`orderpay reconcile` settles refunds left pending and resumes refunds left initiated; an
outcome our records contradict is kept for review."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection

from orderpay import clock
from orderpay.domain.money import Money
from orderpay.domain.reviews import ReviewReason
from orderpay.domain.states import OrderStatus, RefundStatus
from orderpay.errors import RefundDeclined
from orderpay.payments.life_cycle import Action, check
from orderpay.payments.refund import ask_for, claim_refund
from orderpay.payments.refund_cycle import RefundCycle
from orderpay.payments.refund_settlement import settle_refund
from orderpay.payments.settlement import Settled
from orderpay.providers.capabilities import SIMULATOR
from orderpay.providers.simulator import DELAYED_FOR
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget, notifications_of
from orderpay.store.orders import get_order
from orderpay.store.paging import Window
from orderpay.store.payments import get_payment
from orderpay.store.refund_rows import Refund
from orderpay.store.refunds import get_refund
from orderpay.store.reviews import ReviewItem, list_items
from tests.builders import AMA
from tests.conftest import Cli, count_rows
from tests.refund_helpers import (
    DELAYED_PAYER,
    FAILING_PAYER,
    OUTAGE_PAYER,
    RecordingProvider,
    a_paid_payment,
    refund,
    refunds_of,
)

NOW = ("--older-than", "0s")


def items_of(conn: Connection, order_id: uuid.UUID) -> list[ReviewItem]:
    """Every review item of the order, open or resolved."""
    return list_items(conn, Window(), open_only=False, order_id=order_id).items


def a_pending_refund(cli: Cli, db: Database, amount: str = "25.00") -> Any:
    """A refund the provider accepted and has not settled yet (the simulator's delayed payer)."""
    payment = a_paid_payment(db, phone=DELAYED_PAYER)
    document = cli.ok(
        "refund",
        str(payment.id),
        "--key",
        f"refund-{uuid.uuid4()}",
        "--amount",
        amount,
        "--reason",
        "returned",
        "--yes",
    )
    assert document["status"] == "pending"
    return document


def an_interrupted_refund(db: Database, phone: str = AMA) -> Refund:
    """A refund claimed by a process that died before asking the provider; lease run out."""
    payment = a_paid_payment(db, phone=phone)
    ask = ask_for(
        payment.id,
        key=f"refund-{uuid.uuid4()}",
        amount=None,
        currency=None,
        reason="returned",
        operator="tester",
    )
    with db.transaction() as conn:
        return claim_refund(conn, ask, modes=SIMULATOR.refund_modes, lease=timedelta(0)).refund


def status_of(db: Database, refund_id: str | uuid.UUID) -> RefundStatus:
    with db.transaction() as conn:
        return get_refund(conn, uuid.UUID(str(refund_id))).status


def test_a_refund_left_pending_stays_pending_until_the_provider_settles_it(
    any_cli: Cli, any_db: Database
) -> None:
    pending = a_pending_refund(any_cli, any_db)

    report = any_cli.ok("reconcile", *NOW)

    assert report["refunds"]["checked"] == 1
    (entry,) = report["refunds"]["unchanged"]
    assert (entry["refund"], entry["after"], entry["note"]) == (
        pending["id"],
        "pending",
        "no outcome yet",
    )
    assert status_of(any_db, pending["id"]) is RefundStatus.PENDING


def test_reconcile_settles_a_pending_refund_the_provider_has_settled(
    any_cli: Cli, any_db: Database
) -> None:
    pending = a_pending_refund(any_cli, any_db)
    clock.advance(DELAYED_FOR + timedelta(seconds=1))

    report = any_cli.ok("reconcile", *NOW)

    assert report["refunds"]["changed"] == [
        {
            "refund": pending["id"],
            "payment": pending["payment"],
            "order": pending["order"],
            "before": "pending",
            "after": "succeeded",
            "provider_says": "succeeded",
            "note": "",
        }
    ]
    assert status_of(any_db, pending["id"]) is RefundStatus.SUCCEEDED
    with any_db.transaction() as conn:
        order_id = uuid.UUID(pending["order"])
        assert get_order(conn, order_id).status is OrderStatus.REFUNDED
        kinds = [n.kind for n in notifications_of(conn, [order_id])]
    assert kinds == ["payment_received", "refund_sent"]


def test_reconcile_twice_settles_a_refund_and_notifies_the_customer_once(
    cli: Cli, db: Database
) -> None:
    pending = a_pending_refund(cli, db)
    clock.advance(DELAYED_FOR + timedelta(seconds=1))
    cli.ok("reconcile", *NOW)
    before = count_rows(db)

    again = cli.ok("reconcile", *NOW)

    assert again["refunds"]["checked"] == 0
    assert count_rows(db) == before
    assert status_of(db, pending["id"]) is RefundStatus.SUCCEEDED


def test_a_dry_run_says_what_would_change_and_changes_nothing(cli: Cli, db: Database) -> None:
    pending = a_pending_refund(cli, db)
    clock.advance(DELAYED_FOR + timedelta(seconds=1))
    before = count_rows(db)

    report = cli.ok("reconcile", "--dry-run", *NOW)

    (entry,) = report["refunds"]["changed"]
    assert (entry["refund"], entry["after"]) == (pending["id"], "succeeded")
    assert count_rows(db) == before
    assert status_of(db, pending["id"]) is RefundStatus.PENDING


def test_reconcile_resumes_an_interrupted_refund_under_its_own_reference(db: Database) -> None:
    interrupted = an_interrupted_refund(db)
    provider = RecordingProvider()

    with db.transaction() as conn:
        payment = get_payment(conn, interrupted.payment_id)

    checked = check(
        db,
        provider,
        RefundCycle(interrupted, payment),
        notify=NotifyTarget(),
        source="reconcile",
        lease=timedelta(seconds=90),
    )

    assert (checked.action, checked.before, checked.after) == (
        Action.RESUBMITTED,
        "initiated",
        "succeeded",
    )
    assert provider.references() == [interrupted.id]
    assert [r.id for r in refunds_of(db, interrupted.payment_id)] == [interrupted.id]


def test_reconcile_reports_a_resumed_refund_the_provider_fails(
    any_cli: Cli, any_db: Database
) -> None:
    interrupted = an_interrupted_refund(any_db, phone=FAILING_PAYER)

    report = any_cli.ok("reconcile", *NOW)

    (entry,) = report["refunds"]["changed"]
    assert (entry["refund"], entry["before"], entry["after"]) == (
        str(interrupted.id),
        "initiated",
        "failed",
    )
    with any_db.transaction() as conn:
        assert get_refund(conn, interrupted.id).failure_reason == "PAYEE_NOT_FOUND"


def test_reconcile_keeps_an_interrupted_refund_initiated_while_its_provider_is_down(
    any_cli: Cli, any_db: Database
) -> None:
    interrupted = an_interrupted_refund(any_db, phone=OUTAGE_PAYER)

    report = any_cli.ok("reconcile", *NOW)

    (entry,) = report["refunds"]["unchanged"]
    assert (entry["refund"], entry["provider_says"]) == (str(interrupted.id), "unavailable")
    assert status_of(any_db, interrupted.id) is RefundStatus.INITIATED


def test_reconcile_leaves_a_refund_whose_lease_is_held_to_its_process(
    cli: Cli, db: Database
) -> None:
    payment = a_paid_payment(db)
    ask = ask_for(
        payment.id, key="refund-1", amount=None, currency=None, reason="returned", operator="tester"
    )
    with db.transaction() as conn:  # another process is asking the provider right now
        claimed = claim_refund(
            conn, ask, modes=SIMULATOR.refund_modes, lease=timedelta(seconds=90)
        ).refund
    before = count_rows(db)

    report = cli.ok("reconcile", *NOW)

    (entry,) = report["skipped"]
    assert (entry["id"], entry["why"]) == (
        str(claimed.id),
        "lease held: its request to simulator is in progress",
    )
    assert count_rows(db) == before


# An outcome our records contradict.


def settle(db: Database, refund_id: uuid.UUID, target: RefundStatus, **kwargs: Any) -> Any:
    with db.transaction() as conn:
        return settle_refund(
            conn,
            refund_id,
            target,
            reason=kwargs.get("reason"),
            amount=kwargs.get("amount"),
            source="test",
            notify=NotifyTarget(),
        )


def test_a_success_reported_for_a_failed_refund_is_kept_for_review_and_moves_nothing(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db, phone=FAILING_PAYER)
    with pytest.raises(RefundDeclined) as declined:  # the refund is failed
        refund(any_db, RecordingProvider(), payment.id)
    failed_id = uuid.UUID(declined.value.details["refund"])
    before = count_rows(any_db)

    settled = settle(any_db, failed_id, RefundStatus.SUCCEEDED)
    again = settle(any_db, failed_id, RefundStatus.SUCCEEDED)  # reported a second time

    assert (settled.verdict, again.verdict) == (Settled.CONFLICT, Settled.CONFLICT)
    assert status_of(any_db, failed_id) is RefundStatus.FAILED
    with any_db.transaction() as conn:
        assert get_order(conn, payment.order_id).status is OrderStatus.PAID
        (item,) = items_of(conn, payment.order_id)
    assert (item.reason, item.subject, item.refund_id) == (
        ReviewReason.REFUND_CONFLICT,
        f"refund:{failed_id}",
        failed_id,
    )
    rows = count_rows(any_db)
    assert rows["review_items"] == before["review_items"] + 1
    assert rows["notifications"] == before["notifications"]


def test_a_failure_reported_for_a_succeeded_refund_is_kept_for_review(db: Database) -> None:
    payment = a_paid_payment(db)
    done = refund(db, RecordingProvider(), payment.id).refund

    settled = settle(db, done.id, RefundStatus.FAILED, reason="REVERSED")

    assert settled.verdict is Settled.CONFLICT
    assert status_of(db, done.id) is RefundStatus.SUCCEEDED
    with db.transaction() as conn:
        (item,) = items_of(conn, payment.order_id)
        assert get_order(conn, payment.order_id).status is OrderStatus.REFUNDED
    assert item.reason == ReviewReason.REFUND_CONFLICT


def test_another_amount_reported_for_a_refund_is_kept_for_review(db: Database) -> None:
    payment = a_paid_payment(db, phone=DELAYED_PAYER)
    pending = refund(db, RecordingProvider(), payment.id, amount="10.00").refund

    settled = settle(db, pending.id, RefundStatus.SUCCEEDED, amount=Money(2500, "GHS"))

    assert settled.verdict is Settled.MISMATCH
    assert status_of(db, pending.id) is RefundStatus.PENDING
    with db.transaction() as conn:
        (item,) = items_of(conn, payment.order_id)
    assert item.reason == ReviewReason.AMOUNT_MISMATCH
