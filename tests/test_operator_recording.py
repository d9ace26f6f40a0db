"""Who did it: an operator's action records the operator on the order's events.

`payment cancel`, `order cancel`, `notification retry` (one, or --all-failed) and
`review resolve` write their order events with ORDERPAY_OPERATOR, else the OS user (the
login name, as getpass reads it). Rows the system writes on its own carry none.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from orderpay.domain.states import NotificationStatus, PaymentStatus
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import OrderEvent, events_of
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli
from tests.fake_mtn import FakeMtn
from tests.live_server import (
    a_pending_payment,
    callback_body,
    listener_client,
    listener_settings,
    signed,
)
from tests.redis_helpers import (
    MERCHANT,
    Gateway,
    a_gateway,
    a_settled_payment,
    at_answer,
    notification,
    serving,
    sms_channel,
)

SIMULATOR_REJECTS = "+46733123451"  # accepted, then FAILED / APPROVAL_REJECTED
CLOSED_MTN = {"MTN_MOMO_BASE_URL": "http://127.0.0.1:1"}
OPERATOR = {"ORDERPAY_OPERATOR": "akosua"}
# No ORDERPAY_OPERATOR: the login name decides (getpass reads LOGNAME first).
LOGIN = {"LOGNAME": "kwabena", "USER": "kwabena"}


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with a_gateway() as running:
        yield running


def timeline(db: Database, order_id: uuid.UUID) -> list[OrderEvent]:
    with db.transaction() as conn:
        return events_of(conn, [order_id])[order_id]


def the_event(db: Database, order_id: uuid.UUID, name: str) -> OrderEvent:
    (event,) = [e for e in timeline(db, order_id) if e.event == name]
    return event


REJECTED_PAYER = "+46733123451"  # the simulator accepts, then reports APPROVAL_REJECTED


def a_failed_notification(db: Database, gateway: Gateway) -> Any:
    """A notification the gateway refused for good: `failed` after one try."""
    settled = a_settled_payment(db, target=NotifyTarget("sms"))
    gateway.then(at_answer(403, "InvalidPhoneNumber", "None"))
    with closing(sms_channel(gateway)) as channel:
        Drain(db, serving(channel), RetryPolicy((1, 1), 30), MERCHANT).drain_due()
    assert notification(db, settled.notification_id).status is NotificationStatus.FAILED
    return settled


def a_review_item(db: Database, cli: Cli) -> dict[str, Any]:
    """An open review item: a success reported for another amount."""
    payment = a_pending_payment(db)
    with listener_client(listener_settings(cli.env["DATABASE_URL"])) as client:
        body = callback_body(payment, "success", amount="20.00")
        assert (
            client.post("/api/webhooks/momo/", content=body, headers=signed(body)).json()["status"]
            == "review"
        )
    (item,) = cli.items("review", "list")
    return dict(item)


# --- payment cancel ---------------------------------------------------------------------------


def test_a_payment_cancel_records_the_operator(cli: Cli, db: Database) -> None:
    order = an_order(db, phone=REJECTED_PAYER)
    charged = cli.ok("charge", str(order.id), "--key", a_key())
    assert charged["status"] == "pending"

    outcome = cli("payment", "cancel", charged["id"], "--yes", **OPERATOR)

    assert outcome.exit_code == 0, outcome.stderr
    assert the_event(db, order.id, "payment_failed").operator == "akosua"


def test_a_forced_payment_cancel_records_the_operator(
    pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with mtn.provider() as provider:
        payment = charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment
    mtn_cli = Cli({"DATABASE_URL": pg_url, **mtn.env(), **CLOSED_MTN})

    outcome = mtn_cli("payment", "cancel", str(payment.id), "--force", "--yes", **OPERATOR)

    assert outcome.exit_code == 0, outcome.stderr
    event = the_event(db, order.id, "payment_cancelled_unconfirmed")
    assert event.operator == "akosua"


def test_a_cancel_the_provider_answers_with_a_failure_records_the_operator(
    cli: Cli, db: Database
) -> None:
    order = an_order(db, phone=SIMULATOR_REJECTS)
    payment = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment
    assert payment.status is PaymentStatus.PENDING

    outcome = cli("payment", "cancel", str(payment.id), "--yes", **OPERATOR)

    assert outcome.exit_code == 0, outcome.stderr
    failed = the_event(db, order.id, "payment_failed")
    assert failed.operator == "akosua"
    assert "APPROVAL_REJECTED" in failed.detail


# --- order cancel -----------------------------------------------------------------------------


def test_an_order_cancel_records_the_operator(cli: Cli, db: Database) -> None:
    order = an_order(db)

    shown = cli.ok("order", "cancel", str(order.id), "--yes", **OPERATOR)

    (cancelled,) = [e for e in shown["events"] if e["event"] == "order_cancelled"]
    assert cancelled["operator"] == "akosua"
    assert the_event(db, order.id, "order_cancelled").operator == "akosua"


# --- notification retry -----------------------------------------------------------------------


def test_a_notification_retry_records_the_operator(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    settled = a_failed_notification(db, gateway)

    outcome = cli("notification", "retry", str(settled.notification_id), **OPERATOR)

    assert outcome.exit_code == 0, outcome.stderr
    assert the_event(db, settled.order_id, "notification_retried").operator == "akosua"


def test_retrying_every_failed_notification_records_the_operator_on_each(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    failed = [a_failed_notification(db, gateway) for _ in range(2)]

    outcome = cli("notification", "retry", "--all-failed", "--yes", **OPERATOR)

    assert outcome.exit_code == 0, outcome.stderr
    for settled in failed:
        assert the_event(db, settled.order_id, "notification_retried").operator == "akosua"


# --- review resolve ---------------------------------------------------------------------------


def test_a_review_resolve_records_the_operator_on_the_item_and_the_timeline(
    cli: Cli, db: Database
) -> None:
    item = a_review_item(db, cli)

    resolved = cli.ok("review", "resolve", str(item["id"]), "--note", "refunded", **OPERATOR)

    assert resolved["resolved_by"] == "akosua"
    event = the_event(db, uuid.UUID(item["order"]), "review_resolved")
    assert event.operator == "akosua"


# --- Unset: the OS user -----------------------------------------------------------------------


def test_without_orderpay_operator_the_os_user_is_recorded(cli: Cli, db: Database) -> None:
    order = an_order(db)

    cli.ok("order", "cancel", str(order.id), "--yes", **LOGIN)

    assert the_event(db, order.id, "order_cancelled").operator == "kwabena"


def test_without_orderpay_operator_a_resolve_names_the_os_user(cli: Cli, db: Database) -> None:
    item = a_review_item(db, cli)

    resolved = cli.ok("review", "resolve", str(item["id"]), "--note", "checked", **LOGIN)

    assert resolved["resolved_by"] == "kwabena"


def test_a_blank_orderpay_operator_falls_back_to_the_os_user(cli: Cli, db: Database) -> None:
    order = an_order(db)

    cli.ok("order", "cancel", str(order.id), "--yes", ORDERPAY_OPERATOR="  ", **LOGIN)

    assert the_event(db, order.id, "order_cancelled").operator == "kwabena"


# --- What the system does on its own ----------------------------------------------------------


@pytest.mark.slow
def test_rows_the_system_writes_on_its_own_name_no_operator(cli: Cli, db: Database) -> None:
    payment = a_pending_payment(db)
    with listener_client(listener_settings(cli.env["DATABASE_URL"])) as client:
        body = callback_body(payment, "success")
        client.post("/api/webhooks/momo/", content=body, headers=signed(body))

    events = timeline(db, payment.order_id)

    assert [e.event for e in events][:2] == ["order_created", "payment_initiated"]
    assert "order_paid" in [e.event for e in events]
    assert all(e.operator is None for e in events)


def test_order_show_lists_who_acted_next_to_the_detail(cli: Cli, db: Database) -> None:
    order = an_order(db)
    cli.ok("order", "cancel", str(order.id), "--yes", **OPERATOR)

    outcome = cli("order", "show", str(order.id), COLUMNS="120")

    assert outcome.exit_code == 0, outcome.stderr
    assert "by the operator (by akosua)" in outcome.stdout
