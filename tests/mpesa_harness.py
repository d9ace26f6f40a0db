"""A Kenyan merchant's set-up for tests: the fake Daraja, orderpay's listener serving the M-Pesa
route on loopback, and the M-Pesa provider as a charging process builds it.

Daraja posts its callbacks to the listener (through the `/api/webhooks/daraja/TOKEN/` route:
Daraja refuses a URL with "mpesa" in it), which confirms them with STK Query against the same
fake. `settle()` waits until every callback the fake sent was answered and every confirmation
the listener started is over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orderpay.config import Settings, load_settings
from orderpay.domain.schedule import CatchUpSchedule
from orderpay.payments.catch_up import CatchUp, Round
from orderpay.payments.charge import ChargeResult, ProviderChoice, charge_order
from orderpay.providers.mpesa import MpesaProvider
from orderpay.server import Listener, create_app
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.orders import Order
from orderpay.store.payments import Payment
from tests.builders import a_customer, a_key, a_product
from tests.fake_daraja import FakeDaraja
from tests.live_server import LiveServer, live_server

PAYER = "+254708374149"  # Safaricom (phonenumbers' carrier data), the sandbox's test MSISDN
PAYER_DIGITS = PAYER[1:]
TOKEN = "path-token-" + "k" * 32
NOTIFY = NotifyTarget("log", None)
LEASE = timedelta(seconds=90)


def env_for(daraja: FakeDaraja, callback_url: str, **extra: str) -> dict[str, str]:
    return {
        **daraja.env(callback_url, TOKEN),
        "ORDERPAY_DEFAULT_REGION": "KE",
        "ORDERPAY_PROVIDER_ROUTES": "Safaricom=mpesa",
        **extra,
    }


@dataclass
class Kenya:
    db: Database
    daraja: FakeDaraja
    listener: LiveServer
    app: Listener
    settings: Settings  # the charging process's
    provider: MpesaProvider

    @property
    def callback_url(self) -> str:
        return f"{self.listener.url}/api/webhooks/daraja/{TOKEN}/"

    def order(self, amount: str = "100", phone: str = PAYER) -> Order:
        from orderpay.shop.orders import create_order

        customer = a_customer(self.db, name="Wanjiru Kamau", phone=phone)
        product = a_product(self.db, name="Nyama choma", price=amount, currency="KES")
        with self.db.transaction() as conn:
            return create_order(conn, customer_id=customer.id, items=[(product.id, 1)])

    def charge(self, order: Order, key: str | None = None, **options: Any) -> ChargeResult:
        """Charge as `orderpay charge` does: routed by the payer's network."""
        choice = ProviderChoice(
            self.provider_for,
            self.settings.route_table,
            self.settings.provider,
            options.pop("provider", None),
        )
        return charge_order(
            self.db,
            choice,
            order_id=order.id,
            key=key or a_key(),
            default_region="KE",
            lease_seconds=90,
            **options,
        )

    def provider_for(self, name: str) -> MpesaProvider:
        assert name == "mpesa", name
        return self.provider

    def settle(self) -> None:
        self.daraja.wait_until_sent()
        self.app.app.state.confirmer.wait()

    def catch_up(self) -> CatchUp:
        return CatchUp(self.db, self.provider_for, NOTIFY, CatchUpSchedule.parse(), LEASE)

    def reconcile(self) -> Round:
        """`orderpay reconcile`: ask about every open payment and refund now."""
        return self.catch_up().reconcile(timedelta(0), 100, dry_run=False)

    def checkout_of(self, payment: Payment) -> str:
        [checkout] = [
            c
            for c in self.daraja.checkout_ids()
            if self.daraja.checkout(c).body["AccountReference"] == payment.our_reference
        ]
        return checkout


@contextmanager
def kenya(db: Database, pg_url: str, daraja: FakeDaraja, **extra: str) -> Iterator[Kenya]:
    # The listener asks STK Query only; the URL it would give Daraja is not used.
    listener_env = env_for(daraja, f"http://127.0.0.1:9/api/webhooks/daraja/{TOKEN}/", **extra)
    app = create_app(load_settings(DATABASE_URL=pg_url, **listener_env))
    with live_server(app) as running:
        callback_url = f"{running.url}/api/webhooks/daraja/{TOKEN}/"
        settings = load_settings(DATABASE_URL=pg_url, **env_for(daraja, callback_url, **extra))
        provider = MpesaProvider.from_settings(settings)
        try:
            yield Kenya(db, daraja, running, app, settings, provider)
        finally:
            provider.close()


def money_matches(place: Kenya) -> None:
    """What the fake collected and gave back is what orderpay recorded as succeeded."""
    from sqlalchemy import select

    from orderpay.store.schema import payments, refunds

    with place.db.transaction() as conn:
        ours = {
            row.provider_transaction_id: row.amount
            for row in conn.execute(
                select(payments.c.provider_transaction_id, payments.c.amount).where(
                    payments.c.provider == "mpesa", payments.c.status == "succeeded"
                )
            )
        }
        refunded = sum(
            conn.execute(
                select(refunds.c.amount).where(
                    refunds.c.provider == "mpesa", refunds.c.status == "succeeded"
                )
            ).scalars()
        )
    theirs = {receipt: c.amount * 100 for receipt, c in place.daraja.collected().items()}
    assert sorted(ours.values()) == sorted(theirs.values())
    assert set(ours) <= set(theirs) | {None}
    given_back = sum(theirs[receipt] for receipt in place.daraja.reversed()) + sum(
        p.amount * 100 for p in place.daraja.paid_out()
    )
    assert refunded == given_back
