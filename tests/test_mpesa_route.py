"""Who may post to the M-Pesa route, and what a C2B confirmation of an STK payment counts for.

Daraja signs nothing: a callback passes the path token, then the source allow-list (the
caller's address, read from X-Forwarded-For only when a trusted proxy sent it), and is still
only a hint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import httpx
import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.http.mpesa_route import caller_address
from orderpay.store.db import Database
from tests.conftest import count_rows
from tests.fake_daraja import FakeDaraja
from tests.ledger_views import current, seen
from tests.mpesa_harness import Kenya, kenya, money_matches

PROXY = [ipaddress.ip_network("10.0.0.0/8")]
SAFARICOM = "196.201.214.200"


@pytest.fixture
def guarded(db: Database, pg_url: str, fake_daraja: FakeDaraja) -> Iterator[Kenya]:
    """A listener that takes M-Pesa callbacks from Safaricom's range only, behind a proxy on
    loopback."""
    fake_daraja.reset()
    with kenya(
        db,
        pg_url,
        fake_daraja,
        MPESA_ALLOWED_IPS="196.201.214.0/24",
        MPESA_TRUSTED_PROXIES="127.0.0.1",
    ) as ready:
        yield ready
    fake_daraja.wait_until_sent()


def test_the_peer_is_the_caller_when_it_is_not_a_trusted_proxy() -> None:
    assert caller_address("203.0.113.9", SAFARICOM, PROXY) == "203.0.113.9"


def test_a_trusted_proxy_forwards_the_right_most_untrusted_address() -> None:
    forwarded = f"{SAFARICOM}, 203.0.113.9, 10.1.1.1"  # a caller may prepend, not append
    assert caller_address("10.0.0.1", forwarded, PROXY) == "203.0.113.9"


def test_a_callback_forwarded_from_the_allowed_range_is_applied(guarded: Kenya) -> None:
    payment = guarded.charge(guarded.order("100")).payment
    guarded.daraja.callback_headers({"X-Forwarded-For": SAFARICOM})

    guarded.daraja.payer_accepts(guarded.checkout_of(payment))
    guarded.settle()

    assert current(guarded.db, payment).status is PaymentStatus.SUCCEEDED
    assert [d.status for d in guarded.daraja.deliveries()] == [200]


def test_a_callback_from_outside_the_allowed_range_is_forbidden_and_changes_nothing(
    guarded: Kenya,
) -> None:
    payment = guarded.charge(guarded.order("100")).payment
    guarded.daraja.callback_headers({"X-Forwarded-For": "203.0.113.9"})
    before = count_rows(guarded.db)

    guarded.daraja.payer_accepts(guarded.checkout_of(payment))
    guarded.settle()

    assert [d.status for d in guarded.daraja.deliveries()] == [403]
    assert count_rows(guarded.db) == before
    assert current(guarded.db, payment).status is PaymentStatus.PENDING
    assert guarded.daraja.calls("query") == 0


def test_a_c2b_confirmation_of_an_stk_payment_is_recognised_not_counted_twice(
    place: Kenya,
) -> None:
    place.daraja.register_c2b(place.callback_url)
    payment = place.charge(place.order("100")).payment

    place.daraja.payer_accepts(place.checkout_of(payment))
    place.settle()

    after = seen(place.db, payment)
    assert (after.payment, after.order, after.notifications) == (
        PaymentStatus.SUCCEEDED,
        OrderStatus.PAID,
        1,
    )
    assert sorted(d.kind for d in place.daraja.deliveries()) == ["c2b", "stk"]
    money_matches(place)


def test_a_body_that_is_no_mpesa_callback_is_refused_and_changes_nothing(place: Kenya) -> None:
    before = count_rows(place.db)

    answer = httpx.post(place.callback_url, json={"hello": "world"}, timeout=5)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_payload"
    assert count_rows(place.db) == before
