"""Refunding M-Pesa payments against the fake Daraja: a whole payment is reversed by its
receipt, part of one is paid out through B2C; both results arrive at the result URL.

Whatever the order of the answer and the result, the copies, or a lost answer, orderpay's
refunds match the money the fake gave back, and nothing is paid out twice.
"""

from __future__ import annotations

import httpx
import pytest

from orderpay.domain.states import OrderStatus, RefundStatus
from orderpay.errors import (
    ConfigurationError,
    ProviderUnavailable,
    RefundNotSupported,
    RefundUnconfirmed,
)
from orderpay.payments.mpesa_callbacks import apply_early_result, record_callback
from orderpay.payments.refund import RefundResult, ask_for, claim_refund, refund_payment
from orderpay.payments.refund_cycle import RefundCycle
from orderpay.providers import mpesa_messages
from orderpay.providers.base import Accepted
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from orderpay.store.refund_rows import Refund
from orderpay.store.refunds import get_refund
from tests.conftest import count_rows
from tests.fake_daraja import FakeDaraja
from tests.ledger_views import current, order_status
from tests.mpesa_harness import LEASE, NOTIFY, PAYER_DIGITS, Kenya, kenya, money_matches


def paid(place: Kenya, amount: str = "100") -> Payment:
    payment = place.charge(place.order(amount)).payment
    place.daraja.payer_accepts(place.checkout_of(payment))
    place.settle()
    return current(place.db, payment)


def refund(
    place: Kenya, payment: Payment, amount: str | None = None, key: str = "r-1"
) -> RefundResult:
    result = refund_payment(
        place.db,
        place.provider_for,
        ask_for(
            payment.id, key=key, amount=amount, currency=None, reason="returned", operator="amina"
        ),
        lease_seconds=90,
        notify=NOTIFY,
    )
    place.settle()
    return result


def refund_status(place: Kenya, result: RefundResult) -> RefundStatus:
    with place.db.transaction() as conn:
        return get_refund(conn, result.refund.id).status


def test_a_whole_payment_is_reversed_by_its_receipt(place: Kenya) -> None:
    payment = paid(place)

    result = refund(place, payment)

    assert refund_status(place, result) is RefundStatus.SUCCEEDED
    assert place.daraja.reversed().keys() == {payment.provider_transaction_id}
    assert place.daraja.paid_out() == []
    assert order_status(place.db, payment) is OrderStatus.REFUNDED
    money_matches(place)


def test_part_of_a_payment_is_paid_back_through_b2c(place: Kenya) -> None:
    payment = paid(place, "250")

    result = refund(place, payment, amount="100")

    assert refund_status(place, result) is RefundStatus.SUCCEEDED
    [payout] = place.daraja.paid_out()
    assert (payout.phone, payout.amount) == (PAYER_DIGITS, 100)
    assert place.daraja.reversed() == {}
    assert order_status(place.db, payment) is OrderStatus.PARTIALLY_REFUNDED
    money_matches(place)


def test_a_result_that_arrives_before_the_answer_settles_the_refund_once(place: Kenya) -> None:
    payment = paid(place)
    place.daraja.duplicate_callbacks(3)

    result = refund(place, payment)

    assert refund_status(place, result) is RefundStatus.SUCCEEDED
    with place.db.transaction() as conn:
        from orderpay.store.notifications import notifications_of

        kinds = [n.kind for n in notifications_of(conn, [payment.order_id])]
    assert kinds.count("refund_sent") == 1
    money_matches(place)


def test_a_result_naming_another_conversation_moves_nothing(place: Kenya) -> None:
    payment = paid(place)
    place.daraja.hold_callbacks()
    result = refund(place, payment)
    forged = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": "forged",
            "ConversationID": "AG_FORGED",
            "TransactionID": "FORGED0001",
        }
    }

    answer = httpx.post(
        f"{place.callback_url}?refund={result.refund.our_reference}", json=forged, timeout=5
    )

    assert answer.status_code == 200
    assert refund_status(place, result) is RefundStatus.PENDING
    place.daraja.release_callbacks()
    place.settle()
    assert refund_status(place, result) is RefundStatus.SUCCEEDED
    money_matches(place)


def test_a_partial_refund_without_b2c_is_refused_before_anything_is_stored(
    db: Database, pg_url: str, fake_daraja: FakeDaraja
) -> None:
    fake_daraja.reset()
    with kenya(db, pg_url, fake_daraja, MPESA_B2C_SHORTCODE="") as place:
        payment = paid(place, "250")
        before = count_rows(db)

        with pytest.raises(RefundNotSupported, match="only a whole payment"):
            refund(place, payment, amount="100")

        assert count_rows(db) == before
        assert place.daraja.calls("b2c") + place.daraja.calls("reversal") == 0


def test_refunds_without_an_initiator_are_refused_naming_the_settings(
    db: Database, pg_url: str, fake_daraja: FakeDaraja
) -> None:
    fake_daraja.reset()
    with kenya(
        db,
        pg_url,
        fake_daraja,
        MPESA_INITIATOR_NAME="",
        MPESA_INITIATOR_PASSWORD="",
        MPESA_CERTIFICATE="",
    ) as place:
        payment = paid(place)
        before = count_rows(db)

        with pytest.raises(ConfigurationError, match="MPESA_INITIATOR_NAME"):
            refund(place, payment)

        assert count_rows(db) == before


def test_a_lost_reversal_answer_is_never_sent_again(place: Kenya) -> None:
    payment = paid(place)
    place.daraja.lose_next_answer("reversal")

    with pytest.raises(ProviderUnavailable, match="not sent again"):
        refund(place, payment, key="r-lost")
    with pytest.raises(RefundUnconfirmed, match="not re-sent"):
        refund(place, payment, key="r-lost")
    place.reconcile()

    assert place.daraja.calls("reversal") == 1
    assert len(place.daraja.reversed()) == 1


def early_result(place: Kenya, payment: Payment, conversation: str) -> Refund:
    """A refund whose result (naming `conversation`) arrived before its request's answer."""
    asked = ask_for(
        payment.id, key="r-early", amount=None, currency=None, reason="returned", operator="amina"
    )
    with place.db.transaction() as conn:
        claimed = claim_refund(conn, asked, modes=place.provider.refund_modes, lease=LEASE).refund
        came = mpesa_messages.RefundResult(
            conversation, "0", "processed", claimed.our_reference, "RVS0000001"
        )
        assert record_callback(conn, came, NOTIFY).outcome == "early"
    return claimed


def test_a_result_recorded_before_the_answer_settles_the_refund_the_answer_names(
    place: Kenya,
) -> None:
    payment = paid(place)
    claimed = early_result(place, payment, "AG_EARLY")

    with place.db.transaction() as conn:
        pending = RefundCycle(claimed, payment).record(conn, Accepted("AG_EARLY")).refund
        assert apply_early_result(conn, pending, NOTIFY)

    with place.db.transaction() as conn:
        settled = get_refund(conn, claimed.id)
    assert (settled.status, settled.provider_transaction_id) == (
        RefundStatus.SUCCEEDED,
        "RVS0000001",
    )


def test_a_result_recorded_before_an_answer_naming_another_conversation_moves_nothing(
    place: Kenya,
) -> None:
    payment = paid(place)
    claimed = early_result(place, payment, "AG_EARLY")

    with place.db.transaction() as conn:
        pending = RefundCycle(claimed, payment).record(conn, Accepted("AG_OTHER")).refund
        assert not apply_early_result(conn, pending, NOTIFY)

    with place.db.transaction() as conn:
        assert get_refund(conn, claimed.id).status is RefundStatus.PENDING


def test_a_lost_payout_result_is_settled_by_the_catch_up_asking_transaction_status(
    place: Kenya,
) -> None:
    payment = paid(place, "250")
    place.daraja.drop_callbacks(1)
    result = refund(place, payment, amount="100")
    assert refund_status(place, result) is RefundStatus.PENDING

    place.reconcile()
    place.settle()

    assert place.daraja.calls("status") == 1
    assert refund_status(place, result) is RefundStatus.SUCCEEDED
    money_matches(place)


def test_a_refund_whose_answer_was_lost_goes_to_an_operator_ten_minutes_on(place: Kenya) -> None:
    from datetime import timedelta

    from orderpay import clock
    from orderpay.store.reviews import open_items_of_payment

    payment = paid(place)
    place.daraja.lose_next_answer("reversal")
    with pytest.raises(ProviderUnavailable):
        refund(place, payment, key="r-lost")

    clock.advance(timedelta(minutes=11))
    given = place.catch_up().run_due()

    assert len(given.overdue) == 1
    with place.db.transaction() as conn:
        [item] = open_items_of_payment(conn, payment.id)
    assert (item.reason, item.refund_id is not None) == ("no_final_answer", True)
    assert place.daraja.calls("reversal") == 1


def test_a_payout_whose_answer_was_lost_is_settled_by_transaction_status_never_paid_twice(
    place: Kenya,
) -> None:
    payment = paid(place, "250")
    place.daraja.lose_next_answer("b2c")
    with pytest.raises(ProviderUnavailable):
        refund(place, payment, amount="100", key="r-lost")

    place.reconcile()
    place.settle()

    with place.db.transaction() as conn:
        from orderpay.store.refunds import find_by_key

        lost = find_by_key(conn, "r-lost")
    assert lost is not None
    assert lost.status is RefundStatus.SUCCEEDED
    assert len(place.daraja.paid_out()) == 1
    money_matches(place)
