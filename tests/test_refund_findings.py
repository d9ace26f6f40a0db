"""Refunds and the review queue: money the provider took that our records do not count as paid
can be given back, and money it may not have taken cannot, until an operator decides.

The review queue suggests "refund 25.00 GHS" for a success after a forced cancel and for a
second payment of a paid order; those payments are not `succeeded` in our records (the order
was never marked paid on them), yet their provider reported the money taken. A succeeded
payment whose provider then reports it failed is held until its item is resolved. On Postgres;
the provider is the simulator, its reports are settled as a callback settles them.
"""

from __future__ import annotations

import uuid

import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus, RefundStatus
from orderpay.errors import PaymentNotRefundable, ProviderUnavailable
from orderpay.payments import review, settlement
from orderpay.payments.cancel import cancel_payment
from orderpay.payments.charge import charge_order
from orderpay.providers.base import Provider
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.locks import lock_payment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.orders import get_order
from orderpay.store.payments import Payment
from orderpay.store.reviews import items_about
from tests.builders import a_key, an_order
from tests.conftest import count_rows
from tests.refund_helpers import LEASE_SECONDS, RecordingProvider, a_paid_payment, refund


def report(db: Database, payment_id: uuid.UUID, outcome: PaymentStatus) -> settlement.Settled:
    """The provider reports an outcome for the payment, settled as a callback is."""
    with db.transaction() as conn:
        locked = lock_payment(conn, payment_id)
        assert locked is not None
        return settlement.settle(
            conn, locked, settlement.Report(outcome, "test callback"), NotifyTarget()
        )


def charged(db: Database, order_id: uuid.UUID) -> Payment:
    return charge_order(
        db,
        SimulatorProvider(),
        order_id=order_id,
        key=a_key(),
        default_region="GH",
        lease_seconds=LEASE_SECONDS,
    ).payment


def unreachable(name: str) -> Provider:
    raise ProviderUnavailable(f"{name} cannot be reached")


def a_payment_taken_after_a_forced_cancel(db: Database) -> Payment:
    payment = charged(db, an_order(db).id)
    cancel_payment(
        db,
        unreachable,
        payment.id,
        reason="customer gave up",
        force=True,
        notify=NotifyTarget(),
        operator="akosua",
    )
    assert report(db, payment.id, PaymentStatus.SUCCEEDED) is settlement.Settled.CONFLICT
    return payment


def order_status(db: Database, order_id: uuid.UUID) -> OrderStatus:
    with db.transaction() as conn:
        return get_order(conn, order_id).status


def open_item_ids(db: Database, payment_id: uuid.UUID) -> list[int]:
    with db.transaction() as conn:
        about = items_about(conn, review.outcome_subject(payment_id))
    return [item.id for item in about if item.is_open]


def test_a_payment_taken_after_a_forced_cancel_can_be_refunded(db: Database) -> None:
    payment = a_payment_taken_after_a_forced_cancel(db)
    provider = RecordingProvider()

    given = refund(db, provider, payment.id).refund

    assert (given.status, given.amount) == (RefundStatus.SUCCEEDED, payment.amount)
    assert provider.references() == [given.id]


def test_refunding_a_payment_taken_after_a_forced_cancel_leaves_the_order_unpaid(
    db: Database,
) -> None:
    payment = a_payment_taken_after_a_forced_cancel(db)

    refund(db, RecordingProvider(), payment.id)

    assert order_status(db, payment.order_id) is OrderStatus.PENDING


def test_a_second_payment_of_a_paid_order_can_be_refunded_and_the_order_stays_paid(
    db: Database,
) -> None:
    order = an_order(db)
    first = charged(db, order.id)
    report(db, first.id, PaymentStatus.FAILED)
    second = charged(db, order.id)
    report(db, second.id, PaymentStatus.SUCCEEDED)  # the order is paid by the second
    assert report(db, first.id, PaymentStatus.SUCCEEDED) is settlement.Settled.CONFLICT

    given = refund(db, RecordingProvider(), first.id).refund

    assert given.status is RefundStatus.SUCCEEDED
    assert order_status(db, order.id) is OrderStatus.PAID


def test_a_failed_payment_its_provider_never_reported_taken_is_not_refundable(
    db: Database,
) -> None:
    payment = charged(db, an_order(db).id)
    report(db, payment.id, PaymentStatus.FAILED)
    provider = RecordingProvider()
    before = count_rows(db)

    with pytest.raises(PaymentNotRefundable):
        refund(db, provider, payment.id)

    assert count_rows(db) == before
    assert provider.references() == []


def test_a_succeeded_payment_its_provider_reports_failed_is_held_until_the_item_is_resolved(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    assert report(db, payment.id, PaymentStatus.FAILED) is settlement.Settled.CONFLICT
    [item] = open_item_ids(db, payment.id)
    provider = RecordingProvider()
    before = count_rows(db)

    with pytest.raises(PaymentNotRefundable) as held:
        refund(db, provider, payment.id)

    assert f"review item {item}" in held.value.message
    assert count_rows(db) == before
    assert provider.references() == []


def test_once_its_item_is_resolved_a_disputed_payment_can_be_refunded(db: Database) -> None:
    payment = a_paid_payment(db)
    report(db, payment.id, PaymentStatus.FAILED)
    [item] = open_item_ids(db, payment.id)
    review.resolve(db, item, note="MTN statement shows the money taken", operator="akosua")

    given = refund(db, RecordingProvider(), payment.id).refund

    assert given.status is RefundStatus.SUCCEEDED
    assert order_status(db, payment.order_id) is OrderStatus.REFUNDED
