"""A refund that succeeded tells the customer, through the outbox, with the refund's amount."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from orderpay.domain.states import NotificationStatus
from orderpay.errors import RefundDeclined
from orderpay.store.db import Database
from orderpay.store.notifications import Notification, NotifyTarget, notifications_of
from tests.builders import AMA
from tests.conftest import Cli
from tests.redis_helpers import (
    MERCHANT,
    Gateway,
    a_gateway,
    in_process_worker_fixture,  # noqa: F401
    shared_gateway_server_fixture,  # noqa: F401
    sms_env,
)
from tests.refund_helpers import (
    FAILING_PAYER,
    RecordingProvider,
    a_paid_payment,
    refund,
)

SMS = NotifyTarget("sms")
WEBHOOK_SECRET = "merchant-webhook-secret-0123456789"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with a_gateway() as running:
        yield running


def notifications(db: Database, order_id: uuid.UUID) -> list[Notification]:
    with db.transaction() as conn:
        return notifications_of(conn, [order_id])


def test_a_succeeded_refund_queues_one_refund_sent_notification_naming_the_refund(
    any_db: Database,
) -> None:
    payment = a_paid_payment(any_db)

    result = refund(any_db, RecordingProvider(), payment.id, amount="10.00")

    assert result.notification_queued is True
    received, sent = notifications(any_db, payment.order_id)
    assert (received.kind, received.refund_id) == ("payment_received", None)
    assert (sent.kind, sent.refund_id, sent.payment_id) == (
        "refund_sent",
        result.refund.id,
        payment.id,
    )
    assert (sent.status, sent.recipient) == (NotificationStatus.PENDING, AMA)


def test_each_refund_of_a_payment_gets_its_own_notification(any_db: Database) -> None:
    payment = a_paid_payment(any_db)
    provider = RecordingProvider()

    first = refund(any_db, provider, payment.id, amount="10.00")
    second = refund(any_db, provider, payment.id)

    refund_rows = [n for n in notifications(any_db, payment.order_id) if n.kind == "refund_sent"]
    assert [n.refund_id for n in refund_rows] == [first.refund.id, second.refund.id]


def test_a_refund_that_failed_tells_the_customer_nothing(db: Database) -> None:
    payment = a_paid_payment(db, phone=FAILING_PAYER)

    with pytest.raises(RefundDeclined, match="PAYEE_NOT_FOUND"):
        refund(db, RecordingProvider(), payment.id)

    assert [n.kind for n in notifications(db, payment.order_id)] == ["payment_received"]


def test_the_worker_sends_the_refund_message_with_the_refunds_amount(
    cli: Cli, db: Database, in_process_worker: None, gateway: Gateway
) -> None:
    payment = a_paid_payment(db, notify=SMS)
    env = sms_env(gateway.url)
    refunded = cli.ok(
        "refund",
        str(payment.id),
        "--key",
        "refund-1",
        "--amount",
        "10.00",
        "--reason",
        "one item missing",
        "--yes",
        **env,
    )

    outcome = cli("worker", "--burst", **env)

    assert outcome.exit_code == 0, outcome.stderr
    texts = [form["message"] for form in gateway.sms_forms()]
    (refund_text,) = [text for text in texts if "refund" in text]
    assert "GHS 10.00" in refund_text
    assert "25.00" not in refund_text
    assert refund_text.endswith(MERCHANT)
    assert {form["to"] for form in gateway.sms_forms()} == {AMA}
    (row,) = [n for n in notifications(db, payment.order_id) if n.kind == "refund_sent"]
    assert (row.refund_id, row.status) == (uuid.UUID(refunded["id"]), NotificationStatus.SENT)


def test_the_merchant_webhook_gets_a_refund_sent_event(
    cli: Cli, db: Database, in_process_worker: None, gateway: Gateway
) -> None:
    env = {
        "ORDERPAY_NOTIFY_CHANNEL": "webhook",
        "ORDERPAY_NOTIFY_WEBHOOK_URL": gateway.url,
        "ORDERPAY_NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ORDERPAY_MERCHANT_NAME": MERCHANT,
    }
    payment = a_paid_payment(db, notify=NotifyTarget("webhook", gateway.url))
    refunded = cli.ok(
        "refund",
        str(payment.id),
        "--key",
        "refund-1",
        "--amount",
        "2.50",
        "--reason",
        "late delivery",
        "--yes",
        **env,
    )

    outcome = cli("worker", "--burst", **env)

    assert outcome.exit_code == 0, outcome.stderr
    events = [json.loads(request.body) for request in gateway.requests()]
    (event,) = [e for e in events if e["type"] == "refund.sent"]
    assert (event["data"]["refund"], event["data"]["amount"]) == (refunded["id"], "2.50")
    assert event["data"]["payment"] == str(payment.id)
    assert sorted(e["type"] for e in events) == ["payment.received", "refund.sent"]
