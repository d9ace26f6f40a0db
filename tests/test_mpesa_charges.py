"""Charging a Kenyan payer through M-Pesa's STK Push, against the fake Daraja.

Tried as a merchant would: the payer accepts, cancels, enters a wrong PIN, never answers; the
callback is lost, copied, forged; the push's own answer is lost and the key is run again. In
every case orderpay's records match the money the fake holds, and no payer is prompted twice.
"""

from __future__ import annotations

import httpx
import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.errors import InvalidAmount, PaymentUnconfirmed, ProviderBusy, ProviderUnavailable
from tests.conftest import count_rows
from tests.ledger_views import current, order_status, seen
from tests.mpesa_harness import PAYER_DIGITS, Kenya, money_matches


def test_a_safaricom_payer_is_charged_through_mpesa_without_naming_it(place: Kenya) -> None:
    order = place.order("100")

    payment = place.charge(order).payment

    push = place.daraja.last("stkpush").json()
    assert (payment.provider, payment.status) == ("mpesa", PaymentStatus.PENDING)
    assert (push["Amount"], push["PhoneNumber"]) == (100, PAYER_DIGITS)
    assert push["AccountReference"] == payment.our_reference
    assert len(push["AccountReference"]) <= 12
    assert payment.provider_reference == place.checkout_of(payment)


def test_a_payer_who_accepts_pays_the_order_once_and_its_receipt_is_kept(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment

    receipt = place.daraja.payer_accepts(place.checkout_of(payment))
    place.settle()

    after = seen(place.db, payment)
    assert (after.payment, after.order, after.transaction_id) == (
        PaymentStatus.SUCCEEDED,
        OrderStatus.PAID,
        receipt,
    )
    assert after.notifications == 1
    assert place.daraja.calls("query") == 1  # the callback was confirmed before it counted
    money_matches(place)


@pytest.mark.parametrize(
    ("act", "reason"),
    [
        ("payer_cancels", "1032: the payer cancelled the prompt"),
        ("payer_enters_wrong_pin", "2001: the payer entered a wrong PIN"),
        ("payer_has_no_funds", "1: the payer's M-Pesa balance is insufficient"),
    ],
)
def test_a_payer_who_refuses_fails_the_payment_with_the_reason(
    place: Kenya, act: str, reason: str
) -> None:
    payment = place.charge(place.order("100")).payment

    getattr(place.daraja, act)(place.checkout_of(payment))
    place.settle()

    after = seen(place.db, payment)
    assert (after.payment, after.reason, after.order) == (
        PaymentStatus.FAILED,
        reason,
        OrderStatus.PENDING,
    )
    assert after.notifications == 0
    money_matches(place)


def test_a_payer_who_has_not_answered_yet_stays_pending_when_asked(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment

    checked = place.catch_up().reconcile(
        older_than=__import__("datetime").timedelta(0), limit=10, dry_run=False
    )

    assert [c.remote for c in checked.checked] == ["pending"]
    assert current(place.db, payment).status is PaymentStatus.PENDING


def test_a_prompt_nobody_answers_fails_when_it_times_out(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment

    place.daraja.advance(61)
    place.settle()

    assert current(place.db, payment).status is PaymentStatus.FAILED
    assert "could not be reached" in (current(place.db, payment).failure_reason or "")


def test_a_lost_callback_is_settled_by_the_catch_up(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment
    place.daraja.drop_callbacks(1)

    place.daraja.payer_accepts(place.checkout_of(payment))
    place.settle()
    assert current(place.db, payment).status is PaymentStatus.PENDING
    checked = place.catch_up().reconcile(
        older_than=__import__("datetime").timedelta(0), limit=10, dry_run=False
    )

    assert [c.after for c in checked.checked] == ["succeeded"]
    assert order_status(place.db, payment) is OrderStatus.PAID
    money_matches(place)


def test_copies_of_a_callback_settle_the_payment_once(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment
    place.daraja.duplicate_callbacks(4)

    place.daraja.payer_accepts(place.checkout_of(payment))
    place.settle()

    after = seen(place.db, payment)
    assert after.payment is PaymentStatus.SUCCEEDED
    assert (after.notifications, after.events.count("payment_succeeded")) == (1, 1)
    assert place.daraja.calls("query") == 1
    assert [d.status for d in place.daraja.deliveries()] == [200] * 4


def test_a_forged_success_callback_does_not_pay_the_order(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment
    forged = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "forged",
                "CheckoutRequestID": payment.provider_reference,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 100.0},
                        {"Name": "MpesaReceiptNumber", "Value": "FORGED0001"},
                    ]
                },
            }
        }
    }

    answer = httpx.post(place.callback_url, json=forged, timeout=5)
    place.settle()

    assert answer.status_code == 200
    assert (current(place.db, payment).status, order_status(place.db, payment)) == (
        PaymentStatus.PENDING,
        OrderStatus.PENDING,
    )
    assert place.daraja.calls("query") == 1  # asked, and M-Pesa said the payer had not paid


def test_a_callback_to_a_wrong_path_token_is_not_found_and_changes_nothing(place: Kenya) -> None:
    payment = place.charge(place.order("100")).payment
    before = count_rows(place.db)

    answer = httpx.post(
        place.callback_url.replace("path-token", "guessed-token"), json={"Body": {}}, timeout=5
    )

    assert answer.status_code == 404
    assert count_rows(place.db) == before
    assert current(place.db, payment).status is PaymentStatus.PENDING


def test_a_lost_push_answer_is_never_pushed_again_and_its_callback_settles_it(
    place: Kenya,
) -> None:
    order = place.order("100")
    place.daraja.lose_next_answer("stkpush")

    with pytest.raises(ProviderUnavailable, match="not sent again"):
        place.charge(order, key="kenya-1")
    with pytest.raises(PaymentUnconfirmed, match="prompt the payer a second time"):
        place.charge(order, key="kenya-1")
    place.catch_up().reconcile(
        older_than=__import__("datetime").timedelta(0), limit=10, dry_run=False
    )
    [checkout] = place.daraja.checkout_ids()
    place.daraja.payer_accepts(checkout)
    place.settle()

    assert place.daraja.prompts(PAYER_DIGITS) == 1
    assert place.daraja.calls("stkpush") == 1
    with place.db.transaction() as conn:
        from orderpay.store.payments import find_by_key

        payment = find_by_key(conn, "kenya-1")
    assert payment is not None
    assert (payment.status, payment.provider_reference) == (PaymentStatus.SUCCEEDED, checkout)
    money_matches(place)


def test_a_second_order_for_a_payer_with_a_prompt_open_waits_and_stores_nothing(
    place: Kenya,
) -> None:
    place.charge(place.order("100"))
    second = place.order("250")
    before = count_rows(place.db)

    with pytest.raises(ProviderBusy, match="has a prompt open") as refused:
        place.charge(second)

    assert refused.value.retry_after > 0
    assert count_rows(place.db) == before
    assert place.daraja.prompts(PAYER_DIGITS) == 1


def test_the_same_amount_again_within_two_minutes_waits_instead_of_meeting_rule_17(
    place: Kenya,
) -> None:
    first = place.charge(place.order("100")).payment
    place.daraja.payer_accepts(place.checkout_of(first))
    place.settle()
    again = place.order("100")
    before = count_rows(place.db)

    with pytest.raises(ProviderBusy, match="less than 120 s ago"):
        place.charge(again)

    assert count_rows(place.db) == before
    assert place.daraja.calls("stkpush") == 1


def test_an_amount_with_cents_is_refused_before_anything_is_stored(place: Kenya) -> None:
    order = place.order("99.50")
    before = count_rows(place.db)

    with pytest.raises(InvalidAmount, match="whole KES only"):
        place.charge(order)

    assert count_rows(place.db) == before
    assert place.daraja.calls("stkpush") == 0


def test_replaying_a_callback_whose_confirmation_lagged_settles_the_payment(place: Kenya) -> None:
    from sqlalchemy import select

    from orderpay.payments.replay import replay_event
    from orderpay.store.schema import webhook_events
    from tests.mpesa_harness import LEASE, NOTIFY

    payment = place.charge(place.order("100")).payment
    checkout = place.checkout_of(payment)
    place.daraja.query_not_found_for(checkout, 1)  # STK Query has not caught up yet
    receipt = place.daraja.payer_accepts(checkout)
    place.settle()
    assert current(place.db, payment).status is PaymentStatus.PENDING
    with place.db.transaction() as conn:
        [event_id] = conn.execute(select(webhook_events.c.id)).scalars()

    replay_event(place.db, event_id, notify=NOTIFY, provider_for=place.provider_for, lease=LEASE)

    settled = current(place.db, payment)
    assert (settled.status, settled.provider_transaction_id) == (PaymentStatus.SUCCEEDED, receipt)
    money_matches(place)


def test_a_success_whose_confirmation_lagged_keeps_its_receipt_when_the_catch_up_settles_it(
    place: Kenya,
) -> None:
    payment = place.charge(place.order("100")).payment
    checkout = place.checkout_of(payment)
    place.daraja.query_not_found_for(checkout, 1)  # STK Query has not caught up yet
    receipt = place.daraja.payer_accepts(checkout)
    place.settle()
    assert current(place.db, payment).status is PaymentStatus.PENDING

    place.reconcile()

    settled = current(place.db, payment)
    assert (settled.status, settled.provider_transaction_id) == (PaymentStatus.SUCCEEDED, receipt)
    money_matches(place)
