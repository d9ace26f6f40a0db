"""What refund tests share: a paid payment, and the simulator with a record of what it was asked.

The simulator is the provider's side of the network edge (refunds make no HTTP call on it), so
`RecordingProvider` wraps it and keeps every refund request and status call it answered: the
far side's view, which a test checks besides our rows.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

from orderpay.domain.states import PaymentStatus
from orderpay.payments import settlement
from orderpay.payments.charge import charge_order
from orderpay.payments.refund import RefundResult, ask_for, refund_payment
from orderpay.providers.base import (
    CollectionRequest,
    PaymentRef,
    Provider,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.capabilities import SIMULATOR, Capabilities, RefundMode
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.locks import lock_payment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.order_events import OrderEvent, events_of
from orderpay.store.payments import Payment, get_payment
from orderpay.store.refund_rows import Refund
from orderpay.store.refunds import refunds_of_payment
from tests.builders import AMA, a_key, an_order

# The simulator's refund numbers (README, "Providers"): their charges succeed.
REFUSING_PAYER = "+46733123470"  # refund declined at once: NOT_ENOUGH_FUNDS
OUTAGE_PAYER = "+46733123471"  # refund request unanswered: SERVICE_UNAVAILABLE
FAILING_PAYER = "+46733123472"  # refund accepted, then failed: PAYEE_NOT_FOUND
DELAYED_PAYER = "+46733123473"  # refund pending for 45 s, then succeeded
# The simulator's charge numbers that never succeed on their own.
CHARGE_REFUSED_PAYER = "+46733123457"  # NOT_ALLOWED when the charge is asked

LEASE_SECONDS = 90.0


def a_paid_payment(
    db: Database,
    *,
    phone: str = AMA,
    price: str = "12.50",
    quantity: int = 2,
    currency: str = "GHS",
    notify: NotifyTarget | None = None,
) -> Payment:
    """A succeeded payment of a new order (2 x 12.50 = 25.00 GHS by default), settled as a
    signed callback settles it; its `payment_received` notification is queued."""
    order = an_order(db, phone=phone, price=price, quantity=quantity, currency=currency)
    charged = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=LEASE_SECONDS,
    )
    with db.transaction() as conn:
        locked = lock_payment(conn, charged.payment.id)
        assert locked is not None
        report = settlement.Report(PaymentStatus.SUCCEEDED, "test")
        verdict = settlement.settle(conn, locked, report, notify or NotifyTarget())
        assert verdict is settlement.Settled.APPLIED
        return get_payment(conn, charged.payment.id)


@dataclass
class RecordingProvider:
    """The simulator, keeping what it was asked (thread-safe: races call it at once); like a
    real provider, it holds no refund it was not asked for (status: unknown)."""

    inner: SimulatorProvider = field(default_factory=SimulatorProvider)
    refund_requests: list[RefundRequest] = field(default_factory=list)
    status_calls: list[RefundRef] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    name: str = "simulator"
    capabilities: Capabilities = SIMULATOR
    refund_modes: frozenset[RefundMode] = SIMULATOR.refund_modes

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        return self.inner.request_payment(request)

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        return self.inner.payment_status(payment)

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        with self.lock:
            self.refund_requests.append(request)
        return self.inner.request_refund(request)

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        with self.lock:
            self.status_calls.append(refund)
            if refund.reference not in {request.reference for request in self.refund_requests}:
                return StatusAnswer(RemoteState.UNKNOWN)
        return self.inner.refund_status(refund)

    def check_refunds_configured(self) -> None:
        self.inner.check_refunds_configured()

    def references(self) -> list[uuid.UUID]:
        with self.lock:
            return [request.reference for request in self.refund_requests]

    def close(self) -> None:
        pass


def refund(
    db: Database,
    provider: Provider,
    payment_id: uuid.UUID,
    *,
    key: str | None = None,
    amount: str | None = None,
    reason: str = "customer returned the goods",
    operator: str = "tester",
    notify: NotifyTarget | None = None,
) -> RefundResult:
    """The refund service, as the CLI and the REST route call it, against `provider`."""
    ask = ask_for(
        payment_id,
        key=key or a_key(),
        amount=amount,
        currency=None,
        reason=reason,
        operator=operator,
    )
    return refund_payment(
        db,
        lambda _name: provider,
        ask,
        lease_seconds=LEASE_SECONDS,
        notify=notify or NotifyTarget(),
    )


def refunds_of(db: Database, payment_id: uuid.UUID) -> list[Refund]:
    with db.transaction() as conn:
        return refunds_of_payment(conn, payment_id)


def timeline_of(db: Database, order_id: uuid.UUID) -> list[OrderEvent]:
    with db.transaction() as conn:
        return events_of(conn, [order_id]).get(order_id, [])
