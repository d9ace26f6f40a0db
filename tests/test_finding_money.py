"""What an open finding says of its payment's money decides whether `orderpay refund` may give
it back, whatever amount or currency the provider's report names; `review resolve --refund`
records the refund that settled an item; suggested actions say where the money goes back.

A succeeded payment its provider then reports failed is held (exit 4 payment_not_refundable)
while that item is open; a payment recorded failed or pending that its provider reports taken
is refundable, up to its own amount. The provider is the simulator: its callbacks are signed
and posted to the listener, and its refund requests are recorded (`simulator_asked`), the far
side's view. On Postgres.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from orderpay.domain.states import PaymentStatus
from orderpay.errors import ProviderUnavailable
from orderpay.payments.cancel import cancel_payment
from orderpay.payments.charge import charge_order
from orderpay.providers.base import Provider, RefundRequest
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from tests.builders import a_key, an_order
from tests.conftest import Cli, count_rows
from tests.ledger_views import seen
from tests.live_server import (
    CALLBACK_PATH,
    OMIT,
    TestClient,
    a_pending_payment,
    callback_body,
    sender_body,
    signed,
)

REASON = ("--reason", "the provider took money our records do not count")
UNKNOWN_REFERENCE = "MP240101.5678.B98765"  # a sender's own id that matches no payment of ours
# What a provider may name instead of the payment's 25.00 GHS.
ANOTHER_AMOUNT = {"amount": "30.00"}
ANOTHER_CURRENCY = {"currency": "KES"}
NO_AMOUNT = {"amount": OMIT, "currency": OMIT}


@pytest.fixture
def simulator_asked(monkeypatch: pytest.MonkeyPatch) -> list[RefundRequest]:
    """Every refund request the simulator receives, whoever builds it (the CLI does)."""
    asked: list[RefundRequest] = []
    real = SimulatorProvider.request_refund

    def recording(self: SimulatorProvider, request: RefundRequest) -> Any:
        asked.append(request)
        return real(self, request)

    monkeypatch.setattr(SimulatorProvider, "request_refund", recording)
    return asked


def post(client: TestClient, body: bytes) -> httpx.Response:
    answer: httpx.Response = client.post(CALLBACK_PATH, content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    return answer


def refund_cli(cli: Cli, payment_id: uuid.UUID, *args: str) -> Any:
    return cli("refund", str(payment_id), "--key", a_key(), *REASON, "--yes", "--json", *args)


def the_only_item(cli: Cli) -> dict[str, Any]:
    items: list[dict[str, Any]] = cli.items("review", "list")
    assert len(items) == 1, items
    return items[0]


def unreachable(name: str) -> Provider:
    raise ProviderUnavailable(f"{name} cannot be reached")


# --- How each payment comes to be recorded (25.00 GHS) ----------------------------------------


def recorded_pending(client: TestClient, db: Database) -> Payment:
    return a_pending_payment(db)


def recorded_failed_by_callback(client: TestClient, db: Database) -> Payment:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", reason="EXPIRED"))
    return payment


def recorded_failed_by_forced_cancel(client: TestClient, db: Database) -> Payment:
    payment = a_pending_payment(db)
    notify, operator = NotifyTarget(), "akosua"
    cancel_payment(
        db, unreachable, payment.id, reason="gave up", force=True, notify=notify, operator=operator
    )
    return payment


def recorded_succeeded(client: TestClient, db: Database) -> Payment:
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "success"))
    return payment


NOT_RECORDED_TAKEN = [
    recorded_pending,
    recorded_failed_by_callback,
    recorded_failed_by_forced_cancel,
]


def reported_taken(
    client: TestClient, db: Database, record: Any, report: dict[str, str]
) -> Payment:
    """A payment recorded as `record` makes it, which its provider reports succeeded with
    another amount or currency than its 25.00 GHS: an open item says money was taken."""
    payment: Payment = record(client, db)
    answer = post(client, callback_body(payment, "success", **report))
    assert answer.json()["status"] == "review"
    return payment


# --- A. Held while an open finding says the money may not have been taken -------------------


def failed_after_success(report: dict[str, Any]) -> Any:
    """Our succeeded payment, then reported failed (with `report`'s amount or currency)."""

    def make(client: TestClient, db: Database) -> Payment:
        payment = recorded_succeeded(client, db)
        post(client, callback_body(payment, "failed", reason="APPROVAL_REJECTED", **report))
        return payment

    return make


def failed_of_another_amount_then_succeeded(client: TestClient, db: Database) -> Payment:
    """Reported failed of 20.00 while pending (the item stays open), then succeeded."""
    payment = a_pending_payment(db)
    post(client, callback_body(payment, "failed", amount="20.00", reason="EXPIRED"))
    post(client, callback_body(payment, "success"))
    return payment


@pytest.mark.parametrize(
    "disputed",
    [
        failed_after_success(ANOTHER_AMOUNT),
        failed_after_success(ANOTHER_CURRENCY),
        failed_after_success(NO_AMOUNT),
        failed_of_another_amount_then_succeeded,
    ],
    ids=["another amount", "another currency", "no amount", "reported before it succeeded"],
)
def test_a_succeeded_payment_an_open_item_reports_failed_is_not_refunded_and_nothing_changes(
    disputed: Any, client: TestClient, db: Database, cli: Cli, simulator_asked: list[RefundRequest]
) -> None:
    payment = disputed(client, db)
    item = the_only_item(cli)
    assert (item["payment"], seen(db, payment).payment) == (
        str(payment.id),
        PaymentStatus.SUCCEEDED,
    )
    before, state = count_rows(db), seen(db, payment)

    outcome = refund_cli(cli, payment.id)

    assert outcome.exit_code == 4, outcome.stdout
    error = outcome.error()
    assert (error["code"], error["review_item"]) == ("payment_not_refundable", item["id"])
    assert count_rows(db) == before
    assert seen(db, payment) == state
    assert simulator_asked == []


# --- A. Allowed, up to the payment's amount, while one says money was taken -------------------


@pytest.mark.parametrize("report", [ANOTHER_AMOUNT, ANOTHER_CURRENCY], ids=["amount", "currency"])
@pytest.mark.parametrize("record", NOT_RECORDED_TAKEN, ids=["pending", "failed", "forced cancel"])
def test_a_payment_not_recorded_succeeded_that_its_provider_reports_taken_is_refunded_in_full(
    record: Any,
    report: dict[str, str],
    client: TestClient,
    db: Database,
    cli: Cli,
    simulator_asked: list[RefundRequest],
) -> None:
    payment = reported_taken(client, db, record, report)

    outcome = refund_cli(cli, payment.id)

    assert outcome.exit_code == 0, outcome.stderr
    given = outcome.json()
    assert (given["status"], given["amount"], given["currency"]) == ("succeeded", "25.00", "GHS")
    [asked] = simulator_asked
    assert (str(asked.reference), asked.amount) == (given["id"], payment.amount)
    assert asked.payment.reference == payment.id


@pytest.mark.parametrize("record", NOT_RECORDED_TAKEN, ids=["pending", "failed", "forced cancel"])
def test_a_refund_of_what_the_provider_reported_taken_above_the_payments_amount_is_refused(
    record: Any, client: TestClient, db: Database, cli: Cli, simulator_asked: list[RefundRequest]
) -> None:
    payment = reported_taken(client, db, record, ANOTHER_AMOUNT)  # 30.00 GHS reported taken
    before = count_rows(db)

    outcome = refund_cli(cli, payment.id, "--amount", "30.00")

    assert outcome.exit_code == 4, outcome.stderr
    error = outcome.error()
    assert (error["code"], error["remaining"]) == ("refund_exceeds_payment", "25.00")
    assert count_rows(db) == before
    assert simulator_asked == []


# --- B. `review resolve --refund` ----------------------------------------------------------


def a_refunded_finding(client: TestClient, db: Database, cli: Cli) -> tuple[dict[str, Any], str]:
    """An open item saying money was taken, and the refund that gave it back."""
    payment = reported_taken(client, db, recorded_failed_by_callback, ANOTHER_AMOUNT)
    item = the_only_item(cli)
    outcome = refund_cli(cli, payment.id)
    assert outcome.exit_code == 0, outcome.stderr
    return item, str(outcome.json()["id"])


@pytest.mark.parametrize("named_by", ["id", "prefix"])
def test_resolving_an_item_with_its_refund_records_the_refund_on_the_item(
    named_by: str, client: TestClient, db: Database, cli: Cli
) -> None:
    item, refund_id = a_refunded_finding(client, db, cli)
    named = refund_id if named_by == "id" else refund_id[:8]

    cli.ok("review", "resolve", str(item["id"]), "--note", "given back", "--refund", named)

    shown = cli.ok("review", "show", str(item["id"]))
    assert (shown["open"], shown["refund"], shown["note"]) == (False, refund_id, "given back")


@pytest.mark.parametrize("item_about", ["another payment", "no payment"])
def test_resolving_with_a_refund_not_of_the_items_payment_is_refused_and_changes_nothing(
    item_about: str, client: TestClient, db: Database, cli: Cli
) -> None:
    _, refund_id = a_refunded_finding(client, db, cli)
    if item_about == "another payment":
        reported_taken(client, db, recorded_failed_by_callback, ANOTHER_AMOUNT)
    else:  # a second success under an unknown reference on a paid order
        post(client, sender_body(recorded_succeeded(client, db).order_id, UNKNOWN_REFERENCE))
    other = cli.items("review", "list")[0]  # the newest
    before = count_rows(db)

    outcome = cli(
        "review", "resolve", str(other["id"]), "--note", "x", "--refund", refund_id, "--json"
    )

    assert outcome.exit_code == 2, outcome.stderr
    assert (outcome.error()["code"], outcome.error()["field"]) == ("invalid_field", "refund")
    assert count_rows(db) == before
    assert cli.ok("review", "show", str(other["id"])) == other


def test_resolving_with_an_unknown_refund_is_refused_and_changes_nothing(
    client: TestClient, db: Database, cli: Cli
) -> None:
    item, _ = a_refunded_finding(client, db, cli)
    before = count_rows(db)

    outcome = cli(
        "review", "resolve", str(item["id"]), "--note", "x", "--refund", str(uuid.uuid4()), "--json"
    )

    assert outcome.exit_code == 3, outcome.stderr
    assert outcome.error()["code"] == "refund_not_found"
    assert count_rows(db) == before
    assert cli.ok("review", "show", str(item["id"]))["open"] is True


# --- C. Where the money goes back ----------------------------------------------------------


def paid_order(client: TestClient, db: Database, cli: Cli) -> uuid.UUID:
    return recorded_succeeded(client, db).order_id


def cancelled_order(client: TestClient, db: Database, cli: Cli) -> uuid.UUID:
    order = an_order(db).id
    assert cli("order", "cancel", str(order), "--yes").exit_code == 0
    return order


@pytest.mark.parametrize("order_of", [paid_order, cancelled_order], ids=["paid", "cancelled"])
def test_a_late_success_under_an_unknown_reference_suggests_the_providers_portal(
    order_of: Any, client: TestClient, db: Database, cli: Cli
) -> None:
    order = order_of(client, db, cli)

    post(client, sender_body(order, UNKNOWN_REFERENCE))

    item = the_only_item(cli)
    assert item["payment"] is None
    assert "its portal" in item["suggested_action"]
    assert "orderpay refund" not in item["suggested_action"]


def late_success_on_a_paid_order(client: TestClient, db: Database, cli: Cli) -> Payment:
    """Our failed payment reported succeeded after another payment paid the order."""
    first = recorded_failed_by_callback(client, db)
    again = charge_order(
        db,
        SimulatorProvider(),
        order_id=first.order_id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment
    post(client, callback_body(again, "success"))
    return first


def late_success_on_a_cancelled_order(client: TestClient, db: Database, cli: Cli) -> Payment:
    """Our failed payment reported succeeded after the operator cancelled its order."""
    payment = recorded_failed_by_callback(client, db)
    assert cli("order", "cancel", str(payment.order_id), "--yes").exit_code == 0
    return payment


@pytest.mark.parametrize(
    "make",
    [late_success_on_a_paid_order, late_success_on_a_cancelled_order],
    ids=["paid", "cancelled"],
)
def test_a_late_success_for_a_payment_of_ours_names_orderpay_refund(
    make: Any, client: TestClient, db: Database, cli: Cli
) -> None:
    payment = make(client, db, cli)

    post(client, callback_body(payment, "success"))

    item = the_only_item(cli)
    assert item["payment"] == str(payment.id)
    assert "`orderpay refund`" in item["suggested_action"]
    assert "portal" not in item["suggested_action"]
    assert seen(db, payment).payment is PaymentStatus.FAILED
