"""Webhook events: signed callbacks that matched no payment are kept, listed and replayed
(DESIGN.md section 5: "the event is kept as unmatched, and a later copy of it tries the match
again rather than counting as a duplicate"), and `orderpay webhook list|show|replay` read and
re-run the webhook events.

The callbacks come in through the listener (in-process, or real uvicorn for the races), as a
seed-style sender posts them: with its own transaction id as the reference.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from orderpay import clock
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.notify.reports import DLR_SOURCE
from orderpay.payments.callbacks import MAX_UNMATCHED_PER_ORDER
from orderpay.payments.charge import charge_order, claim_payment, submit
from orderpay.payments.hints import parse_hint, record_hint
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from orderpay.store.schema import webhook_events
from orderpay.store.webhook_events import record_once
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn
from tests.ledger_views import seen
from tests.live_server import (
    CALLBACK_PATH,
    SENDER_ID,
    TestClient,
    a_pending_payment,
    assert_error,
    callback_body,
    listener,
    listener_client,
    listener_settings,
    post_in_parallel,
    sender_body,
    signed,
)

UNKNOWN_ORDER = "00000000-0000-4000-8000-000000000042"
PARALLEL = 8


def post(client: TestClient, body: bytes) -> httpx.Response:
    answer: httpx.Response = client.post(CALLBACK_PATH, content=body, headers=signed(body))
    return answer


def an_initiated_payment(db: Database) -> Payment:
    """An order whose charge has claimed its payment but not yet heard from the provider: a
    sender's callback about it comes early."""
    order = an_order(db)
    with db.transaction() as conn:
        claim = claim_payment(
            conn,
            order_id=order.id,
            key=a_key(),
            payer_phone=None,
            provider="simulator",
            lease=timedelta(seconds=90),
        )
    return claim.payment


def the_provider_accepts(db: Database, payment: Payment) -> None:
    """The charge hears from the provider: the payment now awaits its outcome."""
    assert submit(db, SimulatorProvider(), payment, resent=False).status is PaymentStatus.PENDING


def stored_events(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_events)).scalar_one())


# Kept: a 404 for an existing order


def test_a_404d_signed_callback_for_an_existing_order_is_listed_as_unmatched(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = an_initiated_payment(db)

    answer = post(client, sender_body(payment.order_id))

    assert_error(answer, 404, "payment_not_found")
    [item] = cli.items("webhook", "list")
    assert item | {"id": 0, "received_at": ""} == {
        "id": 0,
        "source": "momo",
        "received_at": "",
        "outcome": "unmatched",
        "order": str(payment.order_id),
        "payment": None,
        "dedupe_key": f"{SENDER_ID}:succeeded",
    }


def test_a_callback_for_an_unknown_order_is_not_kept(client: TestClient, db: Database) -> None:
    a_pending_payment(db)

    answer = post(client, sender_body(uuid.UUID(UNKNOWN_ORDER)))

    assert_error(answer, 404, "order_not_found")
    assert stored_events(db) == 0


def test_a_copy_of_an_unmatched_callback_is_404_again_and_kept_once(
    client: TestClient, db: Database
) -> None:
    payment = an_initiated_payment(db)
    body = sender_body(payment.order_id)
    post(client, body)
    before = count_rows(db)

    answer = post(client, body)

    assert_error(answer, 404, "payment_not_found")
    assert count_rows(db) == before


def test_the_21st_unmatched_callback_of_one_order_is_answered_404_and_not_stored(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = an_initiated_payment(db)
    for n in range(MAX_UNMATCHED_PER_ORDER):
        assert post(client, sender_body(payment.order_id, f"ref-{n}")).status_code == 404
    before = count_rows(db)

    answer = post(client, sender_body(payment.order_id, "ref-one-too-many"))

    assert_error(answer, 404, "payment_not_found")
    assert count_rows(db) == before
    listed = cli.items("webhook", "list", "--order", str(payment.order_id), "--limit", "100")
    assert len(listed) == MAX_UNMATCHED_PER_ORDER


def test_a_copy_of_a_kept_callback_still_settles_once_the_order_has_reached_the_bound(
    client: TestClient, db: Database
) -> None:
    payment = an_initiated_payment(db)
    first = sender_body(payment.order_id, "ref-0")
    for n in range(MAX_UNMATCHED_PER_ORDER):
        post(client, sender_body(payment.order_id, f"ref-{n}"))
    the_provider_accepts(db, payment)

    answer = post(client, first)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"


@pytest.mark.slow
def test_copies_of_an_unmatched_callback_racing_once_the_payment_is_pending_settle_it_once(
    pg_url: str, db: Database
) -> None:
    payment = an_initiated_payment(db)
    body = sender_body(payment.order_id)
    with listener(listener_settings(pg_url)) as server:
        early = httpx.post(server.callback_url, content=body, headers=signed(body))
        assert early.status_code == 404
        the_provider_accepts(db, payment)

        answers = post_in_parallel(server.callback_url, [(body, lambda: signed(body))] * PARALLEL)

    assert Counter(a.json()["status"] for a in answers) == {"processed": 1, "duplicate": 7}
    assert {a.json()["payment"] for a in answers} == {str(payment.id)}
    state = seen(db, payment)
    assert (state.payment, state.order, state.notifications) == (
        PaymentStatus.SUCCEEDED,
        OrderStatus.PAID,
        1,
    )


# Replay


@pytest.fixture
def any_client(any_url: str) -> Iterator[TestClient]:
    with listener_client(listener_settings(any_url)) as in_process:
        yield in_process


@pytest.mark.slow
def test_replaying_a_stored_unmatched_callback_settles_it_once_the_payment_exists(
    any_client: TestClient, any_db: Database, any_cli: Cli
) -> None:
    payment = an_initiated_payment(any_db)
    post(any_client, sender_body(payment.order_id))
    [event] = any_cli.items("webhook", "list")
    the_provider_accepts(any_db, payment)

    replayed = any_cli.ok("webhook", "replay", str(event["id"]))

    assert replayed == {
        "event": event["id"],
        "source": "momo",
        "outcome": "processed",
        "payment": str(payment.id),
        "notification_queued": True,
    }
    state = seen(any_db, payment)
    assert (state.payment, state.order, state.transaction_id) == (
        PaymentStatus.SUCCEEDED,
        OrderStatus.PAID,
        SENDER_ID,
    )
    assert state.notifications == 1
    assert [e["outcome"] for e in any_cli.items("webhook", "list")] == ["processed"]


def test_replaying_a_settled_unmatched_callback_again_is_a_duplicate(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = an_initiated_payment(db)
    post(client, sender_body(payment.order_id))
    [event] = cli.items("webhook", "list")
    the_provider_accepts(db, payment)
    cli.ok("webhook", "replay", str(event["id"]))
    before, state = count_rows(db), seen(db, payment)

    replayed = cli.ok("webhook", "replay", str(event["id"]))

    assert replayed["outcome"] == "duplicate"
    assert (count_rows(db), seen(db, payment)) == (before, state)


def test_replaying_a_processed_callback_is_a_duplicate_and_changes_nothing(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    assert post(client, callback_body(payment)).json()["status"] == "processed"
    [event] = cli.items("webhook", "list")
    before, state = count_rows(db), seen(db, payment)

    replayed = cli.ok("webhook", "replay", str(event["id"]))

    assert replayed["outcome"] == "duplicate"
    assert replayed["notification_queued"] is False
    assert (count_rows(db), seen(db, payment)) == (before, state)
    assert cli.items("webhook", "list") == [event]


def test_replaying_a_callback_that_still_matches_nothing_is_payment_not_found_and_changes_nothing(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = an_initiated_payment(db)
    post(client, sender_body(payment.order_id))
    [event] = cli.items("webhook", "list")
    before = count_rows(db)

    outcome = cli("webhook", "replay", str(event["id"]), "--json")

    assert (outcome.exit_code, outcome.stdout) == (3, "")
    assert outcome.error()["code"] == "payment_not_found"
    assert count_rows(db) == before
    assert seen(db, payment).payment is PaymentStatus.INITIATED


@pytest.mark.slow
def test_replaying_an_mtn_callback_asks_mtns_status_and_settles_on_its_answer(
    db: Database, pg_url: str, mtn: FakeMtn
) -> None:
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with mtn.provider() as provider:
        payment = charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment
    hint = {"externalId": str(order.id), "referenceId": str(payment.id), "status": "SUCCESSFUL"}
    with db.transaction() as conn:
        assert record_hint(conn, parse_hint(json.dumps(hint).encode())) is not None
    cli = Cli({"DATABASE_URL": pg_url, **mtn.env()})
    [event] = cli.items("webhook", "list", "--source", "mtn")

    replayed = cli.ok("webhook", "replay", str(event["id"]))

    assert (replayed["outcome"], replayed["confirmation"]["after"]) == ("confirmed", "succeeded")
    state = seen(db, payment)
    assert (state.payment, state.order, state.notifications) == (
        PaymentStatus.SUCCEEDED,
        OrderStatus.PAID,
        1,
    )


def test_replaying_a_delivery_report_is_refused_with_exit_2_and_changes_nothing(
    db: Database, cli: Cli
) -> None:
    order = an_order(db)
    with db.transaction() as conn:
        record_once(
            conn,
            source=DLR_SOURCE,
            dedupe_key="ATXid_1:Success",
            payload="status=Success",
            outcome="kept",
            order_id=order.id,
        )
    [event] = cli.items("webhook", "list")
    before = count_rows(db)

    outcome = cli("webhook", "replay", str(event["id"]), "--json")

    assert (outcome.exit_code, outcome.stdout) == (2, "")
    assert outcome.error()["code"] == "event_not_replayable"
    assert count_rows(db) == before


@pytest.mark.parametrize("command", ["show", "replay"])
def test_an_unknown_event_id_is_webhook_event_not_found_exit_3(
    cli: Cli, db: Database, command: str
) -> None:
    before = count_rows(db)

    outcome = cli("webhook", command, "424242", "--json")

    assert (outcome.exit_code, outcome.stdout) == (3, "")
    assert outcome.error()["code"] == "webhook_event_not_found"
    assert count_rows(db) == before


# Show


def phone_callback(client: TestClient, db: Database) -> None:
    """A callback whose sender put the payer's numbers in it: E.164, and an MTN MSISDN as a
    JSON number."""
    payment = a_pending_payment(db)
    body = callback_body(payment, payer="+233241234567", msisdn=46733123450)
    assert post(client, body).status_code == 200


def test_webhook_show_masks_the_phone_numbers_of_the_payload(
    client: TestClient, db: Database, cli: Cli
) -> None:
    phone_callback(client, db)
    [event] = cli.items("webhook", "list")

    outcome = cli("webhook", "show", str(event["id"]))

    assert outcome.exit_code == 0, outcome.stderr
    assert "+233*****4567" in outcome.stdout
    assert "467*****450" in outcome.stdout
    assert "241234567" not in outcome.stdout
    assert "46733123450" not in outcome.stdout


def test_webhook_show_json_masks_the_phone_numbers_of_the_payload(
    client: TestClient, db: Database, cli: Cli
) -> None:
    phone_callback(client, db)
    [event] = cli.items("webhook", "list")

    shown = cli.ok("webhook", "show", str(event["id"]))

    assert shown | {"payload": None} == event | {"payload": None}
    assert (shown["payload"]["payer"], shown["payload"]["msisdn"]) == (
        "+233*****4567",
        "467*****450",
    )
    assert shown["payload"]["amount"] == "25.00"


# List


def test_webhook_list_pages_newest_first_with_after(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = an_initiated_payment(db)
    for n in range(3):
        post(client, sender_body(payment.order_id, f"ref-{n}"))
        clock.advance(timedelta(seconds=1))

    first = cli.ok("webhook", "list", "--limit", "2")
    second = cli.ok("webhook", "list", "--limit", "2", "--after", first["next"])

    keys = [e["dedupe_key"] for e in first["items"] + second["items"]]
    assert keys == ["ref-2:succeeded", "ref-1:succeeded", "ref-0:succeeded"]
    assert second["next"] is None


def test_webhook_list_filters_by_outcome(client: TestClient, db: Database, cli: Cli) -> None:
    post(client, callback_body(a_pending_payment(db)))
    post(client, sender_body(an_initiated_payment(db).order_id))

    listed = cli.items("webhook", "list", "--outcome", "unmatched")

    assert [e["outcome"] for e in listed] == ["unmatched"]


def test_webhook_list_outcome_review_lists_every_review_outcome(
    client: TestClient, db: Database, cli: Cli
) -> None:
    paid = a_pending_payment(db)
    post(client, callback_body(paid))
    post(client, sender_body(paid.order_id, "another-reference"))  # a second success: review
    post(client, callback_body(a_pending_payment(db), amount="1.00"))  # another amount: review

    listed = cli.items("webhook", "list", "--outcome", "review")

    assert sorted(e["outcome"] for e in listed) == ["review_amount", "review_unmatched"]


def test_webhook_list_of_an_unknown_order_is_order_not_found_exit_3(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("webhook", "list", "--order", UNKNOWN_ORDER, "--json")

    assert (outcome.exit_code, outcome.stdout) == (3, "")
    assert outcome.error()["code"] == "order_not_found"
    assert count_rows(db) == before


def test_webhook_list_with_an_unknown_outcome_is_a_usage_error_exit_2(cli: Cli) -> None:
    outcome = cli("webhook", "list", "--outcome", "lost", "--json")

    assert (outcome.exit_code, outcome.stdout) == (2, "")
    assert outcome.error()["code"] == "usage_error"


def test_webhook_list_fits_80_columns(client: TestClient, db: Database, cli: Cli) -> None:
    post(client, sender_body(an_initiated_payment(db).order_id))

    outcome = cli("webhook", "list", COLUMNS="80")

    assert outcome.exit_code == 0, outcome.stderr
    assert "unmatched" in outcome.stdout
    assert max(len(line) for line in outcome.stdout.splitlines()) <= 80
