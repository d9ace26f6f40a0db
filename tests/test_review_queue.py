"""The review queue: every outcome orderpay refuses to act on is an item an operator decides.

Each reason a provider's report can produce shows up in `orderpay review list --json` with the
order, the payment, what the provider said and a suggested action; the same finding reported
again opens no second item while the first is open; resolving records the note, who and when,
and the item stays in `--all`. The provider is the simulator (signed callbacks) or the local
fake of MTN; the database is Postgres.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orderpay.domain.reviews import ReviewReason
from orderpay.domain.signatures import standard_headers
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.errors import ProviderUnavailable, ReviewItemResolved
from orderpay.payments import review
from orderpay.payments.cancel import cancel_payment
from orderpay.payments.charge import charge_order
from orderpay.providers.base import Provider
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import events_of
from orderpay.store.payments import Payment
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn
from tests.ledger_views import seen
from tests.live_server import (
    CALLBACK_PATH,
    SECRET,
    TestClient,
    a_pending_payment,
    callback_body,
    listener,
    listener_client,
    listener_settings,
    post_in_parallel,
    sender_body,
    signed,
)

MTN_PATH = "/api/webhooks/mtn/"
CLOSED_MTN = {"MTN_MOMO_BASE_URL": "http://127.0.0.1:1"}  # nothing listens: refused at once
OTHER_REFERENCE = "MP240101.5678.B98765"  # a sender's own id that matches no payment of ours
FIELDS = {
    "id",
    "reason",
    "open",
    "order",
    "payment",
    "refund",
    "event",
    "reported",
    "suggested_action",
    "opened_at",
    "resolved_at",
    "resolved_by",
    "note",
}


@pytest.fixture
def mtn_listener(pg_url: str, mtn: FakeMtn) -> Iterator[TestClient]:
    with listener_client(listener_settings(pg_url, **mtn.env())) as client:
        yield client


@pytest.fixture
def mtn_cli(pg_url: str, mtn: FakeMtn) -> Cli:
    return Cli({"DATABASE_URL": pg_url, **mtn.env()})


def post(client: TestClient, body: bytes, webhook_id: str | None = None) -> httpx.Response:
    """A signed callback; with `webhook_id`, a copy under that sender event id."""
    headers = (
        signed(body) if webhook_id is None else standard_headers(body, SECRET.encode(), webhook_id)
    )
    answer: httpx.Response = client.post(CALLBACK_PATH, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


def open_items(cli: Cli, *args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cli.items("review", "list", *args)
    return items


def the_only_item(cli: Cli) -> dict[str, Any]:
    items = open_items(cli)
    assert len(items) == 1, items
    assert set(items[0]) == FIELDS
    return items[0]


def last_event_id(cli: Cli, order: str) -> int:
    newest: int = cli.items("webhook", "list", "--order", order)[0]["id"]
    return newest


def mtn_payment(db: Database, mtn: FakeMtn) -> Payment:
    """A 25.00 EUR order charged through MTN (the fake): pending, no callback URL."""
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with mtn.provider() as provider:
        return charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment


def mtn_callback(client: TestClient, mtn: FakeMtn, payment: Payment) -> None:
    body = json.dumps(mtn.status_body(payment.id)).encode()
    answer = client.post(MTN_PATH, content=body, headers={"Content-Type": "application/json"})
    client.app.state.confirmer.wait()  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text


def unreachable(name: str) -> Provider:
    raise ProviderUnavailable(f"{name} cannot be reached")


def force_cancelled(db: Database, payment: Payment) -> None:
    """The operator fails a pending payment with --force while its provider is unreachable."""
    cancel_payment(
        db,
        unreachable,
        payment.id,
        reason="customer gave up",
        force=True,
        notify=NotifyTarget(),
        operator="akosua",
    )


# --- Every reason a report can produce --------------------------------------------------------


def test_a_success_for_another_amount_is_an_amount_mismatch_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)

    post(client, callback_body(payment, "success", amount="20.00"))

    item = the_only_item(cli)
    assert item["reason"] == "amount_mismatch"
    assert (item["order"], item["payment"]) == (str(payment.order_id), str(payment.id))
    assert item["reported"] == (
        f"momo callback, simulator: succeeded, 20.00 GHS, reference {payment.provider_reference}"
    )
    # Nothing was recorded as paid by it: all that was taken goes back.
    assert item["suggested_action"] == (
        "refund 20.00 GHS: simulator reports it taken, our record says pending"
    )
    assert item["event"] == last_event_id(cli, str(payment.order_id))
    assert item["open"] is True
    assert seen(db, payment).payment is PaymentStatus.PENDING  # nothing moved


def test_a_success_in_another_currency_is_an_amount_mismatch_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)

    post(client, callback_body(payment, "success", currency="KES"))

    item = the_only_item(cli)
    assert item["reason"] == "amount_mismatch"
    assert item["payment"] == str(payment.id)
    assert "25.00 KES" in item["reported"]
    assert item["suggested_action"] == (
        "refund 25.00 KES: simulator reports it taken, our record says pending"
    )


def test_a_success_of_another_amount_for_a_failed_payment_says_refund_all_of_it(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))

    post(client, callback_body(payment, "success", amount="30.00"))

    item = the_only_item(cli)
    assert item["reason"] == "amount_mismatch"
    assert item["suggested_action"] == (
        "refund 30.00 GHS: simulator reports it taken, our record says failed"
    )
    assert seen(db, payment).payment is PaymentStatus.FAILED
    assert seen(db, payment).order is OrderStatus.PENDING


def test_a_success_of_another_amount_for_a_succeeded_payment_says_refund_any_excess(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"), webhook_id="msg_paid")

    post(client, callback_body(payment, "success", amount="30.00"), webhook_id="msg_more")

    item = the_only_item(cli)
    assert item["reason"] == "amount_mismatch"
    assert item["suggested_action"] == (
        "check with simulator what was taken (30.00 GHS reported, 25.00 GHS charged); "
        "refund any excess"
    )


def test_a_failure_of_another_amount_says_a_failure_took_no_money(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)

    post(client, callback_body(payment, "failed", amount="20.00", reason="EXPIRED"))

    item = the_only_item(cli)
    assert item["reason"] == "amount_mismatch"
    assert item["suggested_action"] == "check with simulator; a failure took no money"
    assert seen(db, payment).payment is PaymentStatus.PENDING


def test_a_success_of_another_amount_is_not_folded_into_an_open_failure_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", amount="1.00"))

    answer = post(client, callback_body(payment, "success", amount="40.00"))

    assert answer.json()["status"] == "review"
    success, failure = open_items(cli)  # newest first
    assert "succeeded, 40.00 GHS" in success["reported"]
    assert success["suggested_action"].startswith("refund 40.00 GHS")
    assert "failed, 1.00 GHS" in failure["reported"]
    assert failure["suggested_action"] == "check with simulator; a failure took no money"


def test_a_success_after_a_failure_is_an_outcome_conflict_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))

    post(client, callback_body(payment, "success"))

    item = the_only_item(cli)
    assert item["reason"] == "outcome_conflict"
    assert (item["order"], item["payment"]) == (str(payment.order_id), str(payment.id))
    assert item["reported"].startswith("momo callback, simulator: succeeded, 25.00 GHS")
    assert item["suggested_action"] == (
        "check with simulator whether 25.00 GHS was taken; if so, refund it"
    )
    assert seen(db, payment).payment is PaymentStatus.FAILED


def test_a_failure_after_a_success_is_an_outcome_conflict_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))

    post(client, callback_body(payment, "failed", reason="APPROVAL_REJECTED"))

    item = the_only_item(cli)
    assert item["reason"] == "outcome_conflict"
    assert item["payment"] == str(payment.id)
    assert item["reported"] == (
        f"momo callback, simulator: failed, 25.00 GHS, reference {payment.provider_reference}, "
        "reason APPROVAL_REJECTED"
    )
    assert item["suggested_action"] == (
        "check with simulator whether 25.00 GHS was taken; if not, hold the order "
        "(marked paid) and collect it again"
    )
    assert seen(db, payment).order is OrderStatus.PAID


@pytest.mark.parametrize("number", ["+233241234567", "0241234567", "233241234567"])
@pytest.mark.slow
def test_a_phone_number_in_what_the_provider_said_is_masked(
    number: str, client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))

    post(client, callback_body(payment, "failed", reason=f"payer {number} not reachable"))

    reported = the_only_item(cli)["reported"]
    assert "1234567" not in reported
    assert "****" in reported.split("reason payer ")[1]  # masked, as `db prune` masks


def test_a_second_success_under_another_reference_on_a_paid_order_is_a_second_payment_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))

    answer = post(client, sender_body(payment.order_id, OTHER_REFERENCE))

    assert answer.json()["status"] == "review"
    item = the_only_item(cli)
    assert item["reason"] == "second_payment"
    assert (item["order"], item["payment"]) == (str(payment.order_id), None)
    assert item["reported"] == f"momo callback: succeeded, 25.00 GHS, reference {OTHER_REFERENCE}"
    assert item["suggested_action"] == (
        "check with the provider whether 25.00 GHS was taken twice; if so, give it back "
        "through the provider (its portal: no payment of ours matches it) and resolve this item"
    )
    assert item["event"] == last_event_id(cli, str(payment.order_id))


def test_a_failure_under_another_reference_on_a_paid_order_says_no_money_moved(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))

    post(client, sender_body(payment.order_id, OTHER_REFERENCE, "failed"))

    item = the_only_item(cli)
    assert item["reason"] == "second_payment"
    assert item["suggested_action"] == (
        "check the reference with the provider; a failure took no money"
    )


def test_a_late_success_after_a_forced_cancel_is_a_success_after_cancel_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    force_cancelled(db, payment)

    post(client, callback_body(payment, "success"))

    item = the_only_item(cli)
    assert item["reason"] == "success_after_cancel"
    assert item["payment"] == str(payment.id)
    assert item["suggested_action"] == (
        "refund 25.00 GHS: simulator took it after the operator's forced cancel"
    )
    assert seen(db, payment).order is OrderStatus.PENDING  # never a paid order


@pytest.mark.parametrize("confirmed_by", ["mtn-callback", "reconcile"])
def test_mtn_confirming_a_success_after_a_forced_cancel_is_a_success_after_cancel_item(
    confirmed_by: str, mtn_listener: TestClient, mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    forced = mtn_cli("payment", "cancel", str(payment.id), "--force", "--yes", **CLOSED_MTN)
    assert forced.exit_code == 0, forced.stderr

    if confirmed_by == "reconcile":
        assert mtn_cli("reconcile", "--older-than", "0s").exit_code == 0
    else:
        mtn_callback(mtn_listener, mtn, payment)

    item = the_only_item(mtn_cli)
    assert item["reason"] == "success_after_cancel"
    assert item["payment"] == str(payment.id)
    said_by = "reconcile, mtn" if confirmed_by == "reconcile" else "mtn callback, confirmed"
    assert item["reported"].startswith(said_by)
    assert "succeeded, 25.00 EUR, transaction " in item["reported"]
    assert item["suggested_action"].startswith("refund 25.00 EUR")
    assert mtn.calls("status") >= 1  # MTN's word, asked by its status call


def test_mtn_confirming_another_amount_is_an_amount_mismatch_item(
    mtn_listener: TestClient, mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    payment = mtn_payment(db, mtn)
    mtn.patch_body(payment.id, amount="1.00")

    mtn_callback(mtn_listener, mtn, payment)

    item = the_only_item(mtn_cli)
    assert item["reason"] == "amount_mismatch"
    assert item["payment"] == str(payment.id)
    assert item["reported"].startswith("mtn callback, confirmed by status: succeeded, 1.00 EUR")
    assert item["suggested_action"] == (
        "refund 1.00 EUR: mtn reports it taken, our record says pending"
    )
    assert item["event"] is None  # MTN's status call said it, not a webhook event


def test_a_success_for_a_failed_payment_of_a_cancelled_order_says_refund(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))
    assert cli("order", "cancel", str(payment.order_id), "--yes").exit_code == 0

    post(client, callback_body(payment, "success"))

    item = the_only_item(cli)
    assert item["reason"] == "success_on_cancelled_order"
    assert (
        item["suggested_action"] == "refund 25.00 GHS (`orderpay refund`): the order was cancelled"
    )


def a_cancelled_order(db: Database, cli: Cli) -> uuid.UUID:
    """An order (25.00 GHS) cancelled by the operator before any payment."""
    order = an_order(db).id
    assert cli("order", "cancel", str(order), "--yes").exit_code == 0
    return order


def test_a_late_success_under_an_unknown_reference_on_a_cancelled_order_is_an_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    order = a_cancelled_order(db, cli)

    answer = post(client, sender_body(order, OTHER_REFERENCE, amount="30.00"))

    assert answer.json()["status"] == "review"
    item = the_only_item(cli)
    assert item["reason"] == "success_on_cancelled_order"
    assert (item["order"], item["payment"]) == (str(order), None)
    assert item["reported"] == f"momo callback: succeeded, 30.00 GHS, reference {OTHER_REFERENCE}"
    assert item["suggested_action"] == (
        "refund 30.00 GHS: the order was cancelled; give it back through the provider (its "
        "portal: no payment of ours matches it) and resolve this item"
    )
    assert item["event"] == last_event_id(cli, str(order))
    last = cli.ok("order", "show", str(order))["events"][-1]
    assert last["event"] == "callback_unmatched"
    assert f"kept for review as item {item['id']}" in last["detail"]


def test_a_late_success_on_a_cancelled_order_changes_nothing_but_the_queue_and_timeline(
    client: TestClient, db: Database, cli: Cli
) -> None:
    order = a_cancelled_order(db, cli)
    before = count_rows(db)

    post(client, sender_body(order, OTHER_REFERENCE))

    after = count_rows(db)
    grew = {table for table in after if after[table] != before[table]}
    assert grew == {"webhook_events", "order_events", "review_items"}
    assert all(after[t] == before[t] + 1 for t in grew)
    assert cli.ok("order", "show", str(order))["status"] == "cancelled"
    assert cli.items("webhook", "list", "--order", str(order))[0]["outcome"] == "review_unmatched"


def test_a_copy_of_a_late_success_on_a_cancelled_order_opens_no_second_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    order = a_cancelled_order(db, cli)
    body = sender_body(order, OTHER_REFERENCE)
    post(client, body, webhook_id="msg_first")

    again = post(client, body, webhook_id="msg_second")

    assert again.json()["status"] == "review"
    item = the_only_item(cli)
    last = cli.ok("order", "show", str(order))["events"][-1]
    assert f"(item {item['id']}, open already)" in last["detail"]  # the report is kept


def test_a_failure_under_an_unknown_reference_on_a_cancelled_order_stays_unmatched(
    client: TestClient, db: Database, cli: Cli
) -> None:
    """No money moved, so nothing waits for a decision: kept as `unmatched`, like a failure
    under an unknown reference on a pending order."""
    order = a_cancelled_order(db, cli)
    body = sender_body(order, OTHER_REFERENCE, "failed")

    answer = client.post(CALLBACK_PATH, content=body, headers=signed(body))

    assert answer.status_code == 404, answer.text
    assert open_items(cli) == []
    assert cli.items("webhook", "list", "--order", str(order))[0]["outcome"] == "unmatched"


def test_a_success_for_a_failed_payment_of_an_order_paid_since_says_refund(
    client: TestClient, db: Database, cli: Cli
) -> None:
    first = a_pending_payment(db)
    post(client, callback_body(first, "failed", reason="EXPIRED"))
    second = charge_order(
        db,
        SimulatorProvider(),
        order_id=first.order_id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment
    post(client, callback_body(second, "success"))

    post(client, callback_body(first, "success"))

    item = the_only_item(cli)
    assert item["reason"] == "second_payment"
    assert item["payment"] == str(first.id)
    assert item["suggested_action"] == (
        "refund 25.00 GHS (`orderpay refund`): the order was already paid by another"
    )


def test_a_payment_settled_as_reported_opens_no_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)

    post(client, callback_body(payment, "success"))
    post(client, callback_body(payment, "success"), webhook_id="msg_copy")

    assert open_items(cli) == []


def test_the_timeline_names_the_item_a_finding_was_kept_as(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)

    post(client, callback_body(payment, "success", amount="20.00"))

    item = the_only_item(cli)
    with db.transaction() as conn:
        last = events_of(conn, [payment.order_id])[payment.order_id][-1]
    assert last.event == "callback_amount_mismatch"
    assert f"kept for review as item {item['id']}" in last.detail


# --- The same finding, reported again -------------------------------------------------------


def test_a_copy_under_another_sender_id_opens_no_second_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))
    body = callback_body(payment, "success")
    post(client, body, webhook_id="msg_first")

    again = post(client, body, webhook_id="msg_second")

    assert again.json()["status"] == "review"
    item = the_only_item(cli)
    with db.transaction() as conn:
        last = events_of(conn, [payment.order_id])[payment.order_id][-1]
    assert f"(item {item['id']}, open already)" in last.detail  # the report is kept


def test_another_report_of_an_amount_opens_no_second_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success", amount="20.00"), webhook_id="msg_1")

    post(client, callback_body(payment, "success", amount="20.00"), webhook_id="msg_2")

    assert len(open_items(cli)) == 1


def test_a_success_reported_again_after_a_forced_cancel_opens_no_second_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    """The first report confirms the forced cancel (the provider gave its word), so a second
    one reads as a success after an ordinary failure: still the same finding."""
    payment = a_pending_payment(db)
    force_cancelled(db, payment)
    body = callback_body(payment, "success")
    post(client, body, webhook_id="msg_first")

    post(client, body, webhook_id="msg_second")

    item = the_only_item(cli)
    assert item["reason"] == "success_after_cancel"


def test_a_second_payment_reported_again_opens_no_second_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))
    body = sender_body(payment.order_id, OTHER_REFERENCE)
    post(client, body, webhook_id="msg_first")

    post(client, body, webhook_id="msg_second")

    assert len(open_items(cli)) == 1


def test_copies_arriving_at_once_open_one_item(pg_url: str, db: Database, cli: Cli) -> None:
    payment = a_pending_payment(db)
    body = callback_body(payment, "success", amount="20.00")
    ids = iter(f"msg_{n}" for n in range(8))

    with listener(listener_settings(pg_url)) as server:
        answers = post_in_parallel(
            server.url + CALLBACK_PATH,
            [(body, lambda: standard_headers(body, SECRET.encode(), next(ids)))] * 8,
        )

    assert [a.json()["status"] for a in answers] == ["review"] * 8
    assert len(open_items(cli)) == 1


def test_a_finding_reported_after_its_item_was_resolved_opens_a_new_item(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success", amount="20.00"), webhook_id="msg_1")
    first = the_only_item(cli)
    cli.ok("review", "resolve", str(first["id"]), "--note", "sender bug, amount was right")

    post(client, callback_body(payment, "success", amount="20.00"), webhook_id="msg_2")

    second = the_only_item(cli)
    assert second["id"] != first["id"]


# --- Resolving --------------------------------------------------------------------------------


def an_open_item(client: TestClient, db: Database, cli: Cli) -> dict[str, Any]:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success", amount="20.00"))
    return the_only_item(cli)


def test_a_resolved_item_leaves_the_open_list_and_stays_in_all(
    client: TestClient, db: Database, cli: Cli
) -> None:
    item = an_open_item(client, db, cli)

    resolved = cli.ok(
        "review",
        "resolve",
        str(item["id"]),
        "--note",
        "refunded 5.00 GHS",
        ORDERPAY_OPERATOR="akosua",
    )

    assert (resolved["open"], resolved["resolved_by"], resolved["note"]) == (
        False,
        "akosua",
        "refunded 5.00 GHS",
    )
    assert resolved["resolved_at"] is not None
    assert open_items(cli) == []
    (kept,) = open_items(cli, "--all")
    assert kept == resolved
    assert kept["reported"] == item["reported"]


def test_resolving_writes_who_and_why_on_the_orders_timeline(
    client: TestClient, db: Database, cli: Cli
) -> None:
    item = an_open_item(client, db, cli)

    cli.ok("review", "resolve", str(item["id"]), "--note", "refunded", ORDERPAY_OPERATOR="kofi")

    events = cli.ok("order", "show", item["order"])["events"]
    last = events[-1]
    assert (last["event"], last["operator"]) == ("review_resolved", "kofi")
    assert f"review item {item['id']} (amount_mismatch)" in last["detail"]
    assert "refunded" in last["detail"]


def test_resolving_twice_exits_4_and_changes_nothing(
    client: TestClient, db: Database, cli: Cli
) -> None:
    item = an_open_item(client, db, cli)
    cli.ok("review", "resolve", str(item["id"]), "--note", "done", ORDERPAY_OPERATOR="akosua")
    before, first = count_rows(db), open_items(cli, "--all")

    again = cli(
        "review",
        "resolve",
        str(item["id"]),
        "--note",
        "again",
        "--json",
        ORDERPAY_OPERATOR="kofi",
    )

    assert again.exit_code == 4
    assert again.error()["code"] == "review_item_resolved"
    assert "akosua" in again.error()["message"]
    assert count_rows(db) == before
    assert open_items(cli, "--all") == first


def test_resolving_an_unknown_item_exits_3_and_changes_nothing(
    client: TestClient, db: Database, cli: Cli
) -> None:
    an_open_item(client, db, cli)
    before = count_rows(db)

    outcome = cli("review", "resolve", "999999", "--note", "done", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "review_item_not_found"
    assert count_rows(db) == before


@pytest.mark.parametrize("note", [[], ["--note", ""], ["--note", "   "], ["--note", "a\x00b"]])
@pytest.mark.slow
def test_resolving_without_a_note_exits_2_and_changes_nothing(
    note: list[str], client: TestClient, db: Database, cli: Cli
) -> None:
    item = an_open_item(client, db, cli)
    before = count_rows(db)

    outcome = cli("review", "resolve", str(item["id"]), *note, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(db) == before
    assert the_only_item(cli) == item


def test_showing_an_unknown_item_exits_3(cli: Cli) -> None:
    outcome = cli("review", "show", "424242", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "review_item_not_found"


def test_resolves_at_once_resolve_the_item_once(client: TestClient, db: Database, cli: Cli) -> None:
    """Four operators resolve one item at the same moment, each in its own transaction on
    its own connection: the compare-and-set lets exactly one through."""
    item = an_open_item(client, db, cli)
    barrier = threading.Barrier(4)
    results: list[str] = []

    def resolve(operator: str) -> None:
        barrier.wait(10)
        try:
            review.resolve(db, item["id"], note=f"by {operator}", operator=operator)
            results.append(operator)
        except ReviewItemResolved:
            results.append("refused")

    threads = [threading.Thread(target=resolve, args=(f"op{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    winners = [r for r in results if r != "refused"]
    assert len(winners) == 1
    assert results.count("refused") == 3
    (resolved,) = open_items(cli, "--all")
    assert resolved["resolved_by"] == winners[0]
    events = [e["event"] for e in cli.ok("order", "show", item["order"])["events"]]
    assert events.count("review_resolved") == 1


# --- Reading ----------------------------------------------------------------------------------


def test_review_show_has_the_items_fields(client: TestClient, db: Database, cli: Cli) -> None:
    item = an_open_item(client, db, cli)

    assert cli.ok("review", "show", str(item["id"])) == item


def test_review_show_tells_a_person_the_action_and_how_to_resolve(
    client: TestClient, db: Database, cli: Cli
) -> None:
    item = an_open_item(client, db, cli)

    outcome = cli("review", "show", str(item["id"]), COLUMNS="80")

    assert outcome.exit_code == 0, outcome.stderr
    text = " ".join(outcome.stdout.split())
    assert "amount_mismatch" in text
    assert "refund 20.00 GHS: simulator reports it taken" in text
    assert f"orderpay review resolve {item['id']} --note" in outcome.stderr


def test_the_list_pages_with_limit_and_after(client: TestClient, db: Database, cli: Cli) -> None:
    for _ in range(3):
        payment = a_pending_payment(db)
        post(client, callback_body(payment, "success", amount="20.00"))

    first = cli.ok("review", "list", "--limit", "2")
    rest = cli.ok("review", "list", "--limit", "2", "--after", first["next"])

    assert len(first["items"]) == 2
    assert first["next"] is not None
    assert len(rest["items"]) == 1
    assert rest["next"] is None
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert len(set(ids)) == 3
    assert ids == sorted(ids, reverse=True)  # newest first


def test_the_list_filters_by_order_prefix(client: TestClient, db: Database, cli: Cli) -> None:
    mine, other = a_pending_payment(db), a_pending_payment(db)
    for payment in (mine, other):
        post(client, callback_body(payment, "success", amount="20.00"))

    listed = open_items(cli, "--order", str(mine.order_id)[:8])

    assert [i["order"] for i in listed] == [str(mine.order_id)]


def test_the_list_refuses_an_order_that_does_not_exist(cli: Cli, db: Database) -> None:
    outcome = cli("review", "list", "--order", "00000000-0000-4000-8000-000000000000", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "order_not_found"


def test_the_table_fits_80_columns_without_cutting_ids_reasons_or_orders(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))
    assert cli("order", "cancel", str(payment.order_id), "--yes").exit_code == 0
    post(client, callback_body(payment, "success"))
    item = the_only_item(cli)
    assert item["reason"] == max(ReviewReason, key=len)  # the longest reason there is

    outcome = cli("review", "list", "--all", COLUMNS="80")

    assert outcome.exit_code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if item["reason"] in line)
    assert row.split()[0] == str(item["id"])
    assert str(payment.order_id)[:8] in row
    assert "refund" in outcome.stdout


def test_an_empty_queue_says_so(cli: Cli) -> None:
    outcome = cli("review", "list")

    assert outcome.exit_code == 0, outcome.stderr
    assert "nothing waits for a decision" in outcome.stdout


def test_review_help_has_examples(cli: Cli) -> None:
    for command in (["review"], ["review", "list"], ["review", "resolve"]):
        outcome = cli(*command, "--help")
        assert outcome.exit_code == 0
        assert "Examples:" in outcome.stdout
        assert "orderpay review" in outcome.stdout
