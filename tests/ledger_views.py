"""What a test reads back about a payment and its order: one fresh read per call."""

from __future__ import annotations

from dataclasses import dataclass

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.db import Database
from orderpay.store.notifications import notifications_of
from orderpay.store.order_events import events_of
from orderpay.store.orders import get_order
from orderpay.store.payments import Payment, get_payment


@dataclass(frozen=True)
class Seen:
    """What a callback, a confirmation or a cancel may have changed about one payment and its
    order (compare two of them to show that nothing changed)."""

    payment: PaymentStatus
    reason: str | None
    transaction_id: str | None
    order: OrderStatus
    notifications: int
    events: list[str]


def seen(db: Database, payment: Payment) -> Seen:
    with db.transaction() as conn:
        now = get_payment(conn, payment.id)
        return Seen(
            payment=now.status,
            reason=now.failure_reason,
            transaction_id=now.provider_transaction_id,
            order=get_order(conn, payment.order_id).status,
            notifications=len(notifications_of(conn, [payment.order_id])),
            events=[e.event for e in events_of(conn, [payment.order_id])[payment.order_id]],
        )


def current(db: Database, payment: Payment) -> Payment:
    with db.transaction() as conn:
        return get_payment(conn, payment.id)


def order_status(db: Database, payment: Payment) -> OrderStatus:
    with db.transaction() as conn:
        return get_order(conn, payment.order_id).status


def events(db: Database, payment: Payment) -> list[str]:
    with db.transaction() as conn:
        return [e.event for e in events_of(conn, [payment.order_id])[payment.order_id]]


def notification_count(db: Database, payment: Payment) -> int:
    with db.transaction() as conn:
        return len(notifications_of(conn, [payment.order_id]))
