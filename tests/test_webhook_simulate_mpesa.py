"""`orderpay webhook simulate --provider mpesa`: Daraja's STK callback for an M-Pesa payment,
sent to the listener's `/api/webhooks/daraja/TOKEN/?ref=OUR_REFERENCE` route.

What is sent is checked on a recording server; what it does on orderpay's listener, confirmed
by STK Query against the fake Daraja: a simulated success settles a payment only when M-Pesa
agrees.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from orderpay.config import explicit_settings
from orderpay.domain.states import PaymentStatus
from orderpay.payments.charge import charge_order
from orderpay.providers.mpesa import MpesaProvider
from orderpay.store.db import Database
from orderpay.store.payments import Payment, get_payment
from tests.builders import a_key, an_order
from tests.conftest import Cli
from tests.fake_daraja import FakeDaraja
from tests.http_recorder import recording_server
from tests.live_server import a_pending_payment, listener, listener_settings

PAYER = "+254708374149"
TOKEN = "simulate-path-token-" + "s" * 32


@pytest.fixture
def daraja(fake_daraja: FakeDaraja) -> Iterator[FakeDaraja]:
    fake_daraja.reset()
    fake_daraja.drop_callbacks(1_000)  # only the simulated callbacks reach anyone
    yield fake_daraja
    fake_daraja.wait_until_sent()


def _mpesa_payment(db: Database, daraja: FakeDaraja, amount: str = "150") -> Payment:
    """An M-Pesa payment, pushed to the fake Daraja: pending, the payer not yet answered."""
    order = an_order(db, phone=PAYER, price=amount, currency="KES", quantity=1, product="Chai")
    callback_url = f"http://127.0.0.1:9/api/webhooks/daraja/{TOKEN}/"
    provider = MpesaProvider.from_settings(explicit_settings(**daraja.env(callback_url, TOKEN)))
    try:
        result = charge_order(
            db, provider, order_id=order.id, key=a_key(), default_region="KE", lease_seconds=90
        )
    finally:
        provider.close()
    payment = result.payment
    assert (payment.provider, payment.status) == ("mpesa", PaymentStatus.PENDING)
    assert payment.provider_reference
    assert payment.our_reference
    return payment


def test_a_success_is_daraja_shaped_and_sent_to_the_daraja_route_with_our_reference(
    pg_url: str, db: Database, daraja: FakeDaraja
) -> None:
    payment = _mpesa_payment(db, daraja)
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})

    with recording_server() as recorder:
        outcome = cli(
            "webhook", "simulate", "--provider", "mpesa", str(payment.id), "--url", recorder.url
        )
        [request] = recorder.wait_for(1)

    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.startswith("HTTP 200")
    assert request.method == "POST"
    assert request.path == f"/api/webhooks/daraja/{TOKEN}/?ref={payment.our_reference}"
    assert request.headers["content-type"] == "application/json"
    assert not any(name.startswith(("x-momo", "webhook-")) for name in request.headers)
    body = request.json()
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    when = next(item["Value"] for item in items if item["Name"] == "TransactionDate")
    receipt = next(item["Value"] for item in items if item["Name"] == "MpesaReceiptNumber")
    merchant = body["Body"]["stkCallback"]["MerchantRequestID"]
    assert re.fullmatch(r"20\d{12}", str(when))
    assert re.fullmatch(r"[A-Z0-9]{10}", receipt)
    assert body == {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": merchant,
                "CheckoutRequestID": payment.provider_reference,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 150.0},
                        {"Name": "MpesaReceiptNumber", "Value": receipt},
                        {"Name": "TransactionDate", "Value": when},
                        {"Name": "PhoneNumber", "Value": 254708374149},
                    ]
                },
            }
        }
    }
    assert isinstance(items[0]["Value"], float)  # Daraja's 150.00: a JSON number
    assert isinstance(items[3]["Value"], int)


def test_a_failure_is_result_code_1032_without_metadata(
    pg_url: str, db: Database, daraja: FakeDaraja
) -> None:
    payment = _mpesa_payment(db, daraja)
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})

    with recording_server() as recorder:
        outcome = cli(
            "webhook",
            "simulate",
            "--provider",
            "mpesa",
            str(payment.id)[:8],
            "--status",
            "failed",
            "--url",
            recorder.url + "/api/webhooks/momo/",
            "--json",
        )
        [request] = recorder.wait_for(1)

    assert outcome.exit_code == 0, outcome.stderr
    assert request.path == f"/api/webhooks/daraja/{TOKEN}/?ref={payment.our_reference}"
    callback = request.json()["Body"]["stkCallback"]
    assert {key: value for key, value in callback.items() if key != "MerchantRequestID"} == {
        "CheckoutRequestID": payment.provider_reference,
        "ResultCode": 1032,
        "ResultDesc": "Request cancelled by user",
    }
    shown = outcome.json()
    assert shown["sent"] == request.json()
    assert shown["status_code"] == 200
    assert TOKEN not in outcome.stdout + outcome.stderr  # the path token is a secret
    assert shown["url"].endswith(f"/api/webhooks/daraja/***/?ref={payment.our_reference}")


def test_an_order_id_names_its_latest_payment(
    pg_url: str, db: Database, daraja: FakeDaraja
) -> None:
    payment = _mpesa_payment(db, daraja)
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})

    with recording_server() as recorder:
        outcome = cli(
            "webhook",
            "simulate",
            "--provider",
            "mpesa",
            str(payment.order_id),
            "--url",
            recorder.url,
        )
        [request] = recorder.wait_for(1)

    assert outcome.exit_code == 0, outcome.stderr
    assert request.json()["Body"]["stkCallback"]["CheckoutRequestID"] == (
        payment.provider_reference
    )


def test_a_payment_of_another_provider_is_refused_and_nothing_is_sent(
    pg_url: str, db: Database
) -> None:
    payment = a_pending_payment(db)  # the simulator's
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})

    with recording_server() as recorder:
        outcome = cli(
            "webhook",
            "simulate",
            "--provider",
            "mpesa",
            str(payment.id),
            "--url",
            recorder.url,
            "--json",
        )
        sent = recorder.count()

    assert outcome.exit_code == 4
    error = outcome.error()
    assert error["code"] == "wrong_provider"
    assert "simulator's, not M-Pesa's" in error["message"]
    assert sent == 0


def test_without_the_callback_token_it_is_a_configuration_error(
    pg_url: str, db: Database, daraja: FakeDaraja
) -> None:
    payment = _mpesa_payment(db, daraja)
    cli = Cli({"DATABASE_URL": pg_url})

    with recording_server() as recorder:
        outcome = cli(
            "webhook", "simulate", "--provider", "mpesa", str(payment.id), "--url", recorder.url
        )
        sent = recorder.count()

    assert outcome.exit_code == 2
    assert "MPESA_CALLBACK_TOKEN is not set" in outcome.stderr
    assert sent == 0


def test_reason_and_secret_are_refused_for_mpesa(pg_url: str, db: Database) -> None:
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})

    outcome = cli("webhook", "simulate", "--provider", "mpesa", "abcd", "--reason", "EXPIRED")

    assert outcome.exit_code == 2
    assert "--reason is for momo callbacks" in outcome.stderr


def test_momo_still_requires_status(pg_url: str, db: Database) -> None:
    payment = a_pending_payment(db)
    cli = Cli({"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": "s" * 40})

    outcome = cli("webhook", "simulate", str(payment.order_id))

    assert outcome.exit_code == 2
    assert "Missing option '--status'" in outcome.stderr


def test_momo_refuses_an_mpesa_payment_and_points_at_provider_mpesa(
    pg_url: str, db: Database, daraja: FakeDaraja
) -> None:
    payment = _mpesa_payment(db, daraja)
    cli = Cli({"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": "s" * 40})

    outcome = cli("webhook", "simulate", str(payment.order_id), "--status", "success")

    assert outcome.exit_code == 4
    assert "--provider mpesa" in outcome.stderr


# On orderpay's listener: a hint, confirmed by STK Query against the fake Daraja


def _status_after_confirmation(
    db: Database, daraja: FakeDaraja, payment: Payment, expected: PaymentStatus
) -> PaymentStatus:
    """The payment's status once the listener asked the fake about it and acted on the
    answer (`expected` ends the wait early)."""
    deadline = time.monotonic() + 10
    while daraja.calls("query") == 0:
        assert time.monotonic() < deadline, "the listener never asked STK Query"
        time.sleep(0.02)
    settle_by = time.monotonic() + (5 if expected is not PaymentStatus.PENDING else 0.5)
    while True:
        with db.transaction() as conn:
            status = get_payment(conn, payment.id).status
        pending = expected is PaymentStatus.PENDING  # wait it out: nothing should move
        if (status is expected and not pending) or time.monotonic() > settle_by:
            return status
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("payer_does", "expected"),
    [
        (None, PaymentStatus.PENDING),  # STK Query: "being processed"
        ("payer_accepts", PaymentStatus.SUCCEEDED),
        ("payer_cancels", PaymentStatus.FAILED),  # the simulated success is not believed
    ],
)
def test_a_simulated_success_settles_only_as_mpesa_says(
    pg_url: str,
    db: Database,
    daraja: FakeDaraja,
    payer_does: str | None,
    expected: PaymentStatus,
) -> None:
    payment = _mpesa_payment(db, daraja)
    if payer_does is not None:
        getattr(daraja, payer_does)(payment.provider_reference)  # its callback is dropped
    cli = Cli({"DATABASE_URL": pg_url, "MPESA_CALLBACK_TOKEN": TOKEN})
    settings = listener_settings(pg_url, **daraja.env("https://shop.example.com/cb/x/", TOKEN))

    with listener(settings) as server:
        outcome = cli(
            "webhook", "simulate", "--provider", "mpesa", str(payment.id), "--url", server.url
        )
        status = _status_after_confirmation(db, daraja, payment, expected)

    assert outcome.exit_code == 0, outcome.stderr
    assert status is expected
