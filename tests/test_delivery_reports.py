"""SMS delivery reports (Africa's Talking DLRs) on POST /api/webhooks/sms-dlr/?token=...

A report moves a `sent` notification to `delivered` or `undelivered`; interim statuses keep it
`sent`; a repeated report changes nothing; a bad or missing token is 401, and without
ORDERPAY_SMS_DLR_TOKEN the route does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.store.db import Database
from tests.builders import AMA
from tests.conftest import count_rows
from tests.live_server import TestClient, listener_client, listener_settings
from tests.redis_helpers import (
    MERCHANT,
    a_gateway,
    a_settled_payment,
    event_names,
    notification,
    notification_rows,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
)

TOKEN = "dlr-token-7c1e0b5a9d"
PATH = "/api/webhooks/sms-dlr/"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class SentSms:
    notification_id: int
    order_id: Any
    message_id: str


@pytest.fixture
def sent(db: Database) -> SentSms:
    """A notification sent by SMS: `sent`, with the gateway's message id."""
    settled = a_settled_payment(db)
    with a_gateway() as gateway:
        channel = sms_channel(gateway)
        with closing(channel):
            Drain(db, serving(channel), RetryPolicy((1,), 30), MERCHANT).drain_due()
        ((_, message_id),) = gateway.answered
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT
    return SentSms(settled.notification_id, settled.order_id, message_id)


@pytest.fixture
def client(pg_url: str) -> Iterator[TestClient]:
    with listener_client(listener_settings(pg_url, ORDERPAY_SMS_DLR_TOKEN=TOKEN)) as running:
        yield running


def report(message_id: str, status: str, **fields: str) -> str:
    return urlencode(
        {"id": message_id, "status": status, "phoneNumber": AMA, "networkCode": "62001", **fields}
    )


def post_report(client: TestClient, body: str, token: str | None = TOKEN) -> Any:
    query = f"?token={token}" if token is not None else ""
    return client.post(PATH + query, content=body, headers=FORM)


def test_a_success_report_marks_the_notification_delivered(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    answer = post_report(client, report(sent.message_id, "Success"))

    row = notification(db, sent.notification_id)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "delivered"}
    assert (row.status, row.last_error) == (NotificationStatus.DELIVERED, None)
    assert event_names(db, sent.order_id)[-1] == "notification_delivered"


@pytest.mark.parametrize(
    ("status", "reason"), [("Failed", "DeliveryFailure"), ("Rejected", "UserInBlackList")]
)
def test_a_failed_or_rejected_report_marks_it_undelivered_with_the_reason(
    status: str, reason: str, client: TestClient, db: Database, sent: SentSms
) -> None:
    answer = post_report(client, report(sent.message_id, status, failureReason=reason))

    row = notification(db, sent.notification_id)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "undelivered"}
    assert row.status is NotificationStatus.UNDELIVERED
    assert row.last_error is not None
    assert reason in row.last_error
    assert event_names(db, sent.order_id)[-1] == "notification_undelivered"


def test_interim_reports_keep_the_notification_sent(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    events_before = event_names(db, sent.order_id)

    answers = [
        post_report(client, report(sent.message_id, status))
        for status in ("Sent", "Submitted", "Buffered")
    ]

    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "kept"})] * 3
    assert notification(db, sent.notification_id).status is NotificationStatus.SENT
    assert event_names(db, sent.order_id) == events_before


def test_a_repeated_report_changes_nothing(client: TestClient, db: Database, sent: SentSms) -> None:
    post_report(client, report(sent.message_id, "Success"))
    before = count_rows(db), notification_rows(db)

    again = post_report(client, report(sent.message_id, "Success"))

    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate"}
    assert (count_rows(db), notification_rows(db)) == before
    assert event_names(db, sent.order_id).count("notification_delivered") == 1


def test_a_final_report_after_another_final_report_changes_nothing(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    post_report(client, report(sent.message_id, "Success"))
    rows_before = notification_rows(db)

    late = post_report(client, report(sent.message_id, "Failed", failureReason="DeliveryFailure"))

    assert late.status_code == 200, late.text
    assert notification_rows(db) == rows_before
    assert notification(db, sent.notification_id).status is NotificationStatus.DELIVERED


def test_a_report_sent_as_json_is_accepted(client: TestClient, db: Database, sent: SentSms) -> None:
    body = json.dumps({"id": sent.message_id, "status": "Success", "phoneNumber": AMA})

    answer = client.post(
        f"{PATH}?token={TOKEN}", content=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 200, answer.text
    assert notification(db, sent.notification_id).status is NotificationStatus.DELIVERED


def test_a_bad_or_missing_token_is_401_and_changes_nothing(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    before = count_rows(db), notification_rows(db)

    answers = [
        post_report(client, report(sent.message_id, "Success"), token=token)
        for token in ("wrong-token", TOKEN.upper(), "", None)
    ]

    assert [a.status_code for a in answers] == [401] * 4
    assert {a.json()["error"]["code"] for a in answers} == {"invalid_token"}
    assert (count_rows(db), notification_rows(db)) == before


def test_the_route_is_404_when_no_report_token_is_configured(
    pg_url: str, db: Database, sent: SentSms
) -> None:
    before = count_rows(db), notification_rows(db)

    with listener_client(listener_settings(pg_url)) as client:
        answer = post_report(client, report(sent.message_id, "Success"))

    assert answer.status_code == 404
    assert (count_rows(db), notification_rows(db)) == before


def test_a_report_for_an_unknown_message_is_404_and_changes_nothing(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    before = count_rows(db), notification_rows(db)

    answer = post_report(client, report("ATXid_unknown", "Success"))

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "notification_not_found"
    assert (count_rows(db), notification_rows(db)) == before


def test_a_malformed_report_is_400_and_changes_nothing(
    client: TestClient, db: Database, sent: SentSms
) -> None:
    before = count_rows(db), notification_rows(db)
    malformed = [
        f"status=Success&phoneNumber={AMA}",  # no id
        f"id={sent.message_id}",  # no status
        f"id={sent.message_id}&status={'S' * 200}",  # too long
        "not a report",
    ]

    answers = [post_report(client, body) for body in malformed]

    assert [a.status_code for a in answers] == [400] * len(malformed)
    assert {a.json()["error"]["code"] for a in answers} == {"invalid_payload"}
    assert (count_rows(db), notification_rows(db)) == before
