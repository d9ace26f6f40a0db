"""Who sent a signed callback, and what its reference names (DESIGN.md section 5, Callback).

A seed-style sender puts its OWN transaction id in `provider_reference`, never our payment id:
the first such callback settles the order's pending payment and keeps the sender's id as the
payment's `provider_transaction_id`; every later copy is a duplicate, and a later callback
naming that id is matched by it. A signed callback about an MTN payment is only a hint that
MTN's status call confirms. A payment whose receipt the provider never confirmed (`initiated`)
is never the one an unknown reference is taken to mean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order, claim_payment, submit
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.order_events import events_of
from orderpay.store.payments import Payment
from orderpay.store.schema import webhook_events
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn
from tests.ledger_views import seen
from tests.live_server import (
    API_TOKEN,
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

ANOTHER_SENDER_ID = "MP240101.5678.B98765"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PARALLEL = 8


def post(client: TestClient, body: bytes) -> httpx.Response:
    answer: httpx.Response = client.post(CALLBACK_PATH, content=body, headers=signed(body))
    return answer


def copies(body: bytes) -> list[tuple[bytes, Callable[[], dict[str, str]]]]:
    """PARALLEL signed copies of `body`, for post_in_parallel."""
    return [(body, lambda: signed(body))] * PARALLEL


def settled_by_sender(client: TestClient, db: Database) -> Payment:
    """A pending payment the sender's first callback (under SENDER_ID) has settled."""
    payment = a_pending_payment(db)
    first = post(client, sender_body(payment.order_id))
    assert first.json()["status"] == "processed", first.text
    return payment


def outcomes(db: Database) -> list[str]:
    with db.transaction() as conn:
        query = select(webhook_events.c.outcome).order_by(webhook_events.c.id)
        return list(conn.execute(query).scalars())


# 1. A seed-style sender: its own transaction id as the reference


@pytest.mark.slow
def test_a_senders_first_callback_under_its_own_id_settles_the_orders_pending_payment(
    client: TestClient, db: Database
) -> None:
    payment = a_pending_payment(db)

    answer = post(client, sender_body(payment.order_id))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "processed", "payment": str(payment.id)}
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.notifications == 1


def test_the_senders_own_id_is_shown_as_the_payments_provider_transaction_id(
    client: TestClient, db: Database, cli: Cli
) -> None:
    payment = settled_by_sender(client, db)

    shown = cli.ok("payment", "show", str(payment.id))
    order = client.get(f"/api/orders/{payment.order_id}/", headers=AUTH).json()

    assert shown["provider_transaction_id"] == SENDER_ID
    assert [p["provider_transaction_id"] for p in order["payments"]] == [SENDER_ID]
    assert shown["provider_reference"] == str(payment.id)  # what we sent stays ours


def test_replaying_a_senders_callback_answers_200_duplicate_and_changes_nothing(
    client: TestClient, db: Database
) -> None:
    payment = settled_by_sender(client, db)
    before = count_rows(db)

    answer = post(client, sender_body(payment.order_id))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "duplicate", "payment": str(payment.id)}
    assert count_rows(db) == before


@pytest.mark.slow
def test_eight_parallel_copies_of_a_senders_callback_answer_one_processed_and_seven_duplicate(
    pg_url: str, db: Database
) -> None:
    payment = a_pending_payment(db)

    with listener(listener_settings(pg_url)) as server:
        answers = post_in_parallel(server.callback_url, copies(sender_body(payment.order_id)))

    assert [a.status_code for a in answers] == [200] * PARALLEL
    assert Counter(a.json()["status"] for a in answers) == {"processed": 1, "duplicate": 7}
    assert {a.json()["payment"] for a in answers} == {str(payment.id)}


@pytest.mark.slow
def test_eight_parallel_copies_of_a_senders_callback_make_one_notification_and_one_paid_event(
    pg_url: str, db: Database
) -> None:
    payment = a_pending_payment(db)

    with listener(listener_settings(pg_url)) as server:
        post_in_parallel(server.callback_url, copies(sender_body(payment.order_id)))

    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.notifications == 1
    assert Counter(state.events)["order_paid"] == 1
    assert state.transaction_id == SENDER_ID


def test_a_second_success_under_another_sender_id_for_the_paid_order_answers_review(
    client: TestClient, db: Database
) -> None:
    payment = settled_by_sender(client, db)

    answer = post(client, sender_body(payment.order_id, ANOTHER_SENDER_ID))

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "review"
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.transaction_id == SENDER_ID
    assert state.notifications == 1  # never a second one


def test_a_second_success_under_another_sender_id_is_recorded_and_kept_for_review(
    client: TestClient, db: Database
) -> None:
    payment = settled_by_sender(client, db)

    post(client, sender_body(payment.order_id, ANOTHER_SENDER_ID))

    recorded = outcomes(db)
    assert len(recorded) == 2
    assert recorded[0] == "processed"
    assert recorded[1].startswith("review"), recorded
    with db.transaction() as conn:
        last = events_of(conn, [payment.order_id])[payment.order_id][-1]
    assert ANOTHER_SENDER_ID in last.detail
    assert "kept for review" in last.detail


def test_a_failure_naming_the_senders_stored_id_after_its_success_answers_review(
    client: TestClient, db: Database
) -> None:
    payment = settled_by_sender(client, db)

    answer = post(client, sender_body(payment.order_id, SENDER_ID, "failed", reason="EXPIRED"))

    assert answer.status_code == 200, answer.text
    # Matched by the stored id: the answer names the payment the sender's id belongs to.
    assert answer.json() == {"status": "review", "payment": str(payment.id)}
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.notifications == 1


# 2. A signed callback about an MTN payment is a hint, confirmed by MTN's status call


@pytest.fixture
def mtn_client(pg_url: str, mtn: FakeMtn) -> Iterator[TestClient]:
    """The listener in-process with MTN (the fake) configured, and the callback secret."""
    with listener_client(listener_settings(pg_url, **mtn.env())) as in_process:
        yield in_process


def an_mtn_payment(db: Database, mtn: FakeMtn) -> Payment:
    """A 25.00 EUR order charged through MTN (the fake): its payment is pending."""
    order = an_order(db, phone=MTN_SANDBOX_PAYER, currency="EUR")
    with mtn.provider() as provider:
        return charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
        ).payment


def post_and_confirm(client: TestClient, body: bytes) -> httpx.Response:
    """POST a signed callback, then wait for the confirmations it asked for."""
    answer = post(client, body)
    client.app.state.confirmer.wait()  # type: ignore[attr-defined]
    return answer


def test_a_signed_success_about_an_mtn_payment_mtn_has_pending_is_received_and_moves_nothing(
    mtn_client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = an_mtn_payment(db, mtn)
    mtn.set_status(payment.id, "PENDING")
    before, rows = seen(db, payment), count_rows(db)

    answer = post_and_confirm(mtn_client, callback_body(payment, "success"))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "received", "payment": str(payment.id)}
    assert seen(db, payment) == before
    assert (before.payment, before.order) == (PaymentStatus.PENDING, OrderStatus.PENDING)
    assert before.notifications == 0
    # Only the callback itself is recorded.
    assert count_rows(db) == rows | {"webhook_events": rows["webhook_events"] + 1}


def test_a_signed_success_about_an_mtn_payment_is_confirmed_with_mtns_status_call(
    mtn_client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = an_mtn_payment(db, mtn)
    mtn.set_status(payment.id, "PENDING")
    asked = mtn.calls("status")

    post_and_confirm(mtn_client, callback_body(payment, "success"))

    assert mtn.calls("status") == asked + 1
    assert mtn.last("status").path.endswith(str(payment.id))


def test_a_signed_success_about_an_mtn_payment_mtn_reports_successful_settles_it_on_mtns_word(
    mtn_client: TestClient, db: Database, mtn: FakeMtn
) -> None:
    payment = an_mtn_payment(db, mtn)
    mtn.set_status(payment.id, "SUCCESSFUL")

    answer = post_and_confirm(mtn_client, callback_body(payment, "success"))

    assert answer.json()["status"] == "received"
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.notifications == 1
    transfer = mtn.transfer(payment.id)
    assert transfer is not None
    assert state.transaction_id == transfer.financial_transaction_id


# 8. A payment whose receipt the provider never confirmed is not the one a sender means


def an_initiated_payment(db: Database) -> Payment:
    """An order whose charge has claimed its payment but not yet heard from the provider."""
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
    assert claim.payment.status is PaymentStatus.INITIATED
    return claim.payment


def test_a_sender_callback_for_an_order_whose_only_payment_is_initiated_is_404_and_kept_unmatched(
    client: TestClient, db: Database
) -> None:
    payment = an_initiated_payment(db)
    before = count_rows(db)

    answer = post(client, sender_body(payment.order_id))

    assert_error(answer, 404, "payment_not_found")
    # Kept to be matched later (DESIGN.md section 5): the event and its order event, no more.
    assert count_rows(db) == before | {
        "webhook_events": before["webhook_events"] + 1,
        "order_events": before["order_events"] + 1,
    }
    with db.transaction() as conn:
        kept = conn.execute(select(webhook_events.c.outcome, webhook_events.c.order_id)).all()
    assert kept == [("unmatched", payment.order_id)]
    assert seen(db, payment).payment is PaymentStatus.INITIATED


def test_a_404d_sender_callback_is_applied_once_the_payment_is_pending(
    client: TestClient, db: Database
) -> None:
    payment = an_initiated_payment(db)
    body = sender_body(payment.order_id)
    assert post(client, body).status_code == 404
    # The charge hears from the provider.
    pending = submit(db, SimulatorProvider(), payment, resent=False)
    assert pending.status is PaymentStatus.PENDING

    answer = post(client, body)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "processed", "payment": str(payment.id)}
    state = seen(db, payment)
    assert (state.payment, state.order) == (PaymentStatus.SUCCEEDED, OrderStatus.PAID)
    assert state.transaction_id == SENDER_ID
