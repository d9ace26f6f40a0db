"""A provider that cannot take a request twice (M-Pesa: a second push prompts the payer
again) is sent one again only when the first certainly never arrived."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from orderpay import clock
from orderpay.domain.answers import RemoteState
from orderpay.domain.schedule import CatchUpSchedule
from orderpay.domain.states import PaymentStatus
from orderpay.errors import PaymentUnconfirmed, ProviderUnavailable
from orderpay.payments.catch_up import CatchUp
from orderpay.payments.charge import charge_order
from orderpay.providers.base import (
    Accepted,
    CollectionRequest,
    PaymentRef,
    ProviderAnswer,
    StatusAnswer,
)
from orderpay.providers.capabilities import MPESA
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import find_by_key
from orderpay.store.reviews import open_items_of_payment
from tests.builders import an_order
from tests.ledger_views import current

KENYAN = "+254708374149"


class OneShot(SimulatorProvider):
    """Plays M-Pesa: each request either arrives and its answer is lost, or certainly does
    not arrive (`reached`), then is accepted; its status knows nothing."""

    name = "mpesa"
    capabilities = MPESA
    refund_modes = MPESA.refund_modes

    def __init__(self, *, reached: bool) -> None:
        super().__init__()
        self.reached = reached
        self.requests: list[CollectionRequest] = []
        self.lock = threading.Lock()

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        with self.lock:
            self.requests.append(request)
            first = len(self.requests) == 1
        if first:
            raise ProviderUnavailable("the answer is lost", reached=self.reached)
        return Accepted("ws_CO_1")

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        return StatusAnswer(RemoteState.UNKNOWN)


def charge(db: Database, provider: OneShot, order_id: object, key: str = "key-1") -> None:
    charge_order(
        db,
        provider,
        order_id=order_id,
        key=key,
        default_region="KE",
        lease_seconds=0,  # type: ignore[arg-type]
    )


def test_a_request_that_may_have_arrived_is_not_sent_again_by_its_key(db: Database) -> None:
    order = an_order(db, phone=KENYAN, price="100", currency="KES", quantity=1)
    provider = OneShot(reached=True)
    with pytest.raises(ProviderUnavailable):
        charge(db, provider, order.id)

    with pytest.raises(PaymentUnconfirmed, match="not re-sent"):
        charge(db, provider, order.id)

    assert len(provider.requests) == 1


def test_a_request_that_may_have_arrived_is_not_sent_again_by_the_catch_up(db: Database) -> None:
    order = an_order(db, phone=KENYAN, price="100", currency="KES", quantity=1)
    provider = OneShot(reached=True)
    with pytest.raises(ProviderUnavailable):
        charge(db, provider, order.id)
    catch_up = CatchUp(
        db, lambda _name: provider, NotifyTarget("log", None), CatchUpSchedule.parse(), timedelta(0)
    )

    asked = catch_up.reconcile(timedelta(0), 10, dry_run=False)

    assert len(provider.requests) == 1
    [why] = [s.why for s in asked.skipped] + [c.note for c in asked.checked]
    assert "not re-sent" in why


def test_a_request_that_certainly_never_arrived_is_sent_again_by_its_key(db: Database) -> None:
    order = an_order(db, phone=KENYAN, price="100", currency="KES", quantity=1)
    provider = OneShot(reached=False)
    with pytest.raises(ProviderUnavailable):
        charge(db, provider, order.id)

    charge(db, provider, order.id)

    assert len(provider.requests) == 2
    with db.transaction() as conn:
        payment = find_by_key(conn, "key-1")
    assert payment is not None
    assert current(db, payment).status is PaymentStatus.PENDING


def test_a_lost_answer_goes_to_an_operator_once_its_callback_is_overdue(db: Database) -> None:
    order = an_order(db, phone=KENYAN, price="100", currency="KES", quantity=1)
    provider = OneShot(reached=True)
    with pytest.raises(ProviderUnavailable):
        charge(db, provider, order.id)
    catch_up = CatchUp(
        db, lambda _name: provider, NotifyTarget("log", None), CatchUpSchedule.parse(), timedelta(0)
    )
    clock.advance(timedelta(minutes=5))
    assert catch_up.run_due().overdue == []  # its callback may still come

    clock.advance(timedelta(minutes=6))
    given = catch_up.run_due()

    assert len(given.overdue) == 1
    with db.transaction() as conn:
        payment = find_by_key(conn, "key-1")
        assert payment is not None
        [item] = open_items_of_payment(conn, payment.id)
    assert item.reason == "no_final_answer"
    assert "answer was lost" in item.reported
    assert len(provider.requests) == 1
