"""Notification channels: the log, Africa's Talking's SMS API, and the merchant's webhook."""

from __future__ import annotations

import logging
from contextlib import closing

import pytest

from orderpay.domain.phones import mask_phone
from orderpay.domain.signatures import verify
from orderpay.domain.states import NotificationStatus
from orderpay.errors import InvalidSignature
from orderpay.notify.channels import LogChannel, SmsChannel, WebhookChannel
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from tests.builders import AMA
from tests.conftest import Cli, count_rows
from tests.http_recorder import Answer
from tests.redis_helpers import (
    LOG_TARGET,
    MERCHANT,
    SMS_API_KEY,
    SMS_USERNAME,
    WEBHOOK_SECRET,
    a_gateway,
    a_settled_payment,
    event_names,
    form_of,
    in_process_worker_fixture,  # noqa: F401
    notification,
    notification_rows,
    run_orderpay,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    wait_until,
)

FAST = RetryPolicy(intervals=(1, 1, 1, 1, 1), lease_seconds=30)
SENDER_ID = "KENKEY"


def test_the_log_channel_never_writes_a_full_phone_number(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    settled = a_settled_payment(db, target=LOG_TARGET)
    caplog.set_level(logging.DEBUG)

    Drain(db, serving(LogChannel()), FAST, MERCHANT).drain_due()

    assert notification(db, settled.notification_id).status is NotificationStatus.SENT
    assert "notification" in caplog.text
    assert AMA not in caplog.text
    assert AMA.removeprefix("+") not in caplog.text
    assert AMA[-9:] not in caplog.text  # nor the local number
    assert AMA[-4:] in caplog.text  # masked, not dropped


@pytest.mark.slow
def test_the_workers_own_log_shows_the_message_with_the_phone_number_masked(
    pg_url: str, db: Database
) -> None:
    settled = a_settled_payment(db, target=LOG_TARGET)

    done = run_orderpay(
        {"DATABASE_URL": pg_url, "ORDERPAY_MERCHANT_NAME": MERCHANT}, "worker", "--burst"
    )

    assert done.returncode == 0, done.stderr
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT
    assert f"to {mask_phone(AMA)}: " in done.stderr
    assert MERCHANT in done.stderr
    assert AMA not in done.stderr + done.stdout
    assert AMA.removeprefix("+") not in done.stderr + done.stdout


def test_the_sms_request_carries_the_api_key_username_recipient_and_message(
    db: Database,
) -> None:
    settled = a_settled_payment(db, phone="0241234567")
    with a_gateway() as gateway:
        channel = sms_channel(gateway, sender_id=SENDER_ID)
        with closing(channel):
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()
        (request,) = gateway.requests()

    form = form_of(request)
    assert (request.method, request.path) == ("POST", "/version1/messaging")
    assert request.headers["apikey"] == SMS_API_KEY
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert form["username"] == SMS_USERNAME
    assert form["to"] == AMA  # E.164, though the customer gave a local number
    assert form["from"] == SENDER_ID
    assert form["message"] == notification(db, settled.notification_id).body


def test_the_gateways_message_id_is_stored_as_the_notifications_gateway_message_id(
    db: Database,
) -> None:
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        channel = sms_channel(gateway)
        with closing(channel):
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()
        ((_, message_id),) = gateway.answered

    assert message_id.startswith("ATXid_")
    assert notification(db, settled.notification_id).gateway_message_id == message_id


def test_the_sms_channel_keeps_its_api_key_out_of_its_repr() -> None:
    channel = SmsChannel(
        base_url="http://127.0.0.1:1",
        username=SMS_USERNAME,
        api_key=SMS_API_KEY,
        sender_id=None,
        timeout=1,
    )
    with closing(channel):
        assert SMS_API_KEY not in repr(channel)


def merchant_target(url: str) -> NotifyTarget:
    return NotifyTarget("webhook", url + "/hooks/orderpay")


def test_the_merchant_webhook_is_signed_with_standard_webhooks_headers(db: Database) -> None:
    with a_gateway() as merchant:
        settled = a_settled_payment(db, target=merchant_target(merchant.url))
        with closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as channel:
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()
        (request,) = merchant.requests()

    verified = verify(request.body, request.headers, [WEBHOOK_SECRET.encode()])
    event = request.json()
    assert request.path == "/hooks/orderpay"
    assert verified.scheme == "standard-webhooks"
    assert verified.webhook_id == request.headers["webhook-id"]
    assert event["type"] == "payment.received"
    assert event["data"]["notification"] == settled.notification_id
    assert event["data"]["order"] == str(settled.order_id)
    assert (event["data"]["amount"], event["data"]["currency"]) == ("25.00", "GHS")
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_the_merchant_webhook_signature_does_not_verify_with_another_secret(
    db: Database,
) -> None:
    with a_gateway() as merchant:
        a_settled_payment(db, target=merchant_target(merchant.url))
        with closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as channel:
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()
        (request,) = merchant.requests()

    with pytest.raises(InvalidSignature):
        verify(request.body, request.headers, [b"another-secret"])


@pytest.mark.slow
def test_the_webhook_id_is_stable_across_retries_of_one_notification(db: Database) -> None:
    with a_gateway(Answer(503, b"busy")) as merchant:
        settled = a_settled_payment(db, target=merchant_target(merchant.url))
        with closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as channel:
            drain = Drain(db, serving(channel), FAST, MERCHANT)

            def sent() -> bool:
                drain.drain_due()
                return notification(db, settled.notification_id).status is NotificationStatus.SENT

            wait_until(sent, timeout=10, interval=0.1, what="the webhook to be delivered")
        requests = merchant.requests()

    assert len(requests) == 2
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:
        verify(request.body, request.headers, [WEBHOOK_SECRET.encode()])


def test_a_merchant_endpoint_that_refuses_the_event_fails_the_notification(db: Database) -> None:
    with a_gateway(Answer(410, b"gone")) as merchant:
        settled = a_settled_payment(db, target=merchant_target(merchant.url))
        with closing(WebhookChannel(secret=WEBHOOK_SECRET.encode(), timeout=5)) as channel:
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()

    row = notification(db, settled.notification_id)
    assert row.status is NotificationStatus.FAILED
    assert row.last_error is not None
    assert "HTTP 410" in row.last_error
    assert event_names(db, settled.order_id)[-1] == "notification_failed"


def test_the_worker_refuses_the_sms_channel_without_an_api_key_and_changes_nothing(
    cli: Cli, db: Database, in_process_worker: None
) -> None:
    a_settled_payment(db)
    before = count_rows(db), notification_rows(db)

    outcome = cli(
        "worker",
        "--burst",
        ORDERPAY_NOTIFY_CHANNEL="sms",
        ORDERPAY_SMS_USERNAME=SMS_USERNAME,
    )

    assert outcome.exit_code == 2
    assert "ORDERPAY_SMS_API_KEY" in outcome.stderr
    assert (count_rows(db), notification_rows(db)) == before


def test_the_worker_refuses_the_webhook_channel_without_a_secret_and_changes_nothing(
    cli: Cli, db: Database, in_process_worker: None
) -> None:
    a_settled_payment(db, target=NotifyTarget("webhook", "http://127.0.0.1:1/hook"))
    before = count_rows(db), notification_rows(db)

    outcome = cli(
        "worker",
        "--burst",
        ORDERPAY_NOTIFY_CHANNEL="webhook",
        ORDERPAY_NOTIFY_WEBHOOK_URL="http://127.0.0.1:1/hook",
    )

    assert outcome.exit_code == 2
    assert "ORDERPAY_NOTIFY_WEBHOOK_SECRET" in outcome.stderr
    assert (count_rows(db), notification_rows(db)) == before


def test_an_unreadable_gateway_answer_is_retried_not_taken_as_sent(db: Database) -> None:
    settled = a_settled_payment(db)
    with a_gateway(Answer(200, b"<html>maintenance</html>", "text/html")) as gateway:
        channel = sms_channel(gateway)
        with closing(channel):
            Drain(db, serving(channel), FAST, MERCHANT).drain_due()

    row = notification(db, settled.notification_id)
    assert (row.status, row.attempts, row.gateway_message_id) == (
        NotificationStatus.PENDING,
        1,
        None,
    )
    assert row.last_error is not None
