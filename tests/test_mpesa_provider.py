"""The M-Pesa client against the fake Daraja: what each of Daraja's answers means, and
whether a request that failed may have reached it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from orderpay.config import load_settings
from orderpay.domain.answers import RemoteState
from orderpay.domain.money import Money
from orderpay.errors import ConfigurationError, ProviderBusy, ProviderUnavailable
from orderpay.providers.base import Accepted, CollectionRequest, Declined, PaymentRef
from orderpay.providers.mpesa import NOT_A_SUBSCRIBER, MpesaProvider
from tests.fake_daraja import FakeDaraja

PAYER = "+254708374149"
CALLBACK = "https://payments.example.com/api/webhooks/daraja/" + "t" * 40 + "/"


@pytest.fixture
def daraja(fake_daraja: FakeDaraja) -> FakeDaraja:
    fake_daraja.reset()
    fake_daraja.hold_callbacks()  # nobody listens at CALLBACK
    return fake_daraja


def provider(daraja: FakeDaraja, **env: str) -> MpesaProvider:
    return MpesaProvider.from_settings(load_settings(**{**daraja.env(CALLBACK, "t" * 40), **env}))


@pytest.fixture
def mpesa(daraja: FakeDaraja) -> Iterator[MpesaProvider]:
    made = provider(daraja)
    yield made
    made.close()


def push(mpesa: MpesaProvider, phone: str = PAYER, shillings: int = 100) -> object:
    return mpesa.request_payment(
        CollectionRequest(
            uuid.uuid4(), uuid.uuid4(), Money(shillings * 100, "KES"), phone, "OP12345678AB"
        )
    )


def ref(checkout: str | None) -> PaymentRef:
    return PaymentRef(
        uuid.uuid4(), checkout, uuid.uuid4(), Money(10000, "KES"), PAYER, datetime.now(UTC)
    )


def test_an_accepted_push_is_its_checkout_request_id(
    mpesa: MpesaProvider, daraja: FakeDaraja
) -> None:
    answer = push(mpesa)

    assert answer == Accepted(daraja.checkout_ids()[0])
    assert daraja.last("stkpush").json()["CallBackURL"] == CALLBACK + "?ref=OP12345678AB"


def test_a_till_asks_buy_goods_paid_to_the_till(daraja: FakeDaraja) -> None:
    till = provider(daraja, MPESA_TILL_NUMBER="5123456")
    try:
        push(till)
    finally:
        till.close()

    sent = daraja.last("stkpush").json()
    assert (sent["TransactionType"], sent["PartyB"]) == ("CustomerBuyGoodsOnline", "5123456")


def test_a_payer_with_a_prompt_open_is_busy_and_was_not_prompted_again(
    mpesa: MpesaProvider, daraja: FakeDaraja
) -> None:
    push(mpesa)

    with pytest.raises(ProviderBusy, match="prompt open") as busy:
        push(mpesa, shillings=250)

    assert (busy.value.reached, busy.value.retry_after) == (False, 60)
    assert daraja.prompts(PAYER[1:]) == 1


def test_a_spike_arrest_is_busy_for_a_few_seconds(mpesa: MpesaProvider, daraja: FakeDaraja) -> None:
    daraja.spike_arrest("stkpush")

    with pytest.raises(ProviderBusy, match="spike arrest") as busy:
        push(mpesa)

    assert busy.value.reached is False
    assert daraja.prompts(PAYER[1:]) == 0


def test_a_server_error_may_have_prompted_the_payer(
    mpesa: MpesaProvider, daraja: FakeDaraja
) -> None:
    daraja.fail("stkpush", 500)

    with pytest.raises(ProviderUnavailable, match="not sent again") as lost:
        push(mpesa)

    assert lost.value.reached is True


def test_a_number_mpesa_refuses_is_declined_naming_the_provider_flag(
    mpesa: MpesaProvider,
) -> None:
    assert push(mpesa, phone="+254201234567") == Declined(NOT_A_SUBSCRIBER)


def test_an_expired_token_is_fetched_again_once(mpesa: MpesaProvider, daraja: FakeDaraja) -> None:
    push(mpesa)
    daraja.payer_cancels(daraja.checkout_ids()[0])
    daraja.expire_tokens()

    assert mpesa.payment_status(ref(daraja.checkout_ids()[0])).state is RemoteState.FAILED
    assert daraja.calls("token") == 2


def test_refused_credentials_never_reach_the_push_and_name_the_settings(daraja: FakeDaraja) -> None:
    wrong = provider(daraja, MPESA_CONSUMER_SECRET="not-the-secret")
    try:
        with pytest.raises(ProviderUnavailable, match="MPESA_CONSUMER_SECRET") as refused:
            push(wrong)
    finally:
        wrong.close()

    assert refused.value.reached is False
    assert daraja.calls("stkpush") == 0


def test_a_payer_who_has_not_answered_is_pending(mpesa: MpesaProvider, daraja: FakeDaraja) -> None:
    push(mpesa)

    assert mpesa.payment_status(ref(daraja.checkout_ids()[0])).state is RemoteState.PENDING


def test_a_checkout_mpesa_does_not_know_is_unknown(mpesa: MpesaProvider) -> None:
    assert mpesa.payment_status(ref("ws_CO_000")).state is RemoteState.UNKNOWN


def test_a_payment_whose_checkout_never_arrived_cannot_be_asked_about(
    mpesa: MpesaProvider, daraja: FakeDaraja
) -> None:
    with pytest.raises(ProviderUnavailable, match="never arrived"):
        mpesa.payment_status(ref(None))

    assert daraja.calls("query") == 0


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://pay.example.com/api/webhooks/mpesa/" + "t" * 40 + "/", "'mpesa'"),
        ("http://pay.example.com/api/webhooks/daraja/" + "t" * 40 + "/", "https"),
    ],
)
def test_a_callback_url_daraja_would_refuse_is_a_configuration_error(
    daraja: FakeDaraja, url: str, said: str
) -> None:
    with pytest.raises(ConfigurationError, match="MPESA_CALLBACK_URL") as refused:
        provider(daraja, MPESA_CALLBACK_URL=url)

    assert said in refused.value.message


def test_missing_settings_are_named(daraja: FakeDaraja) -> None:
    with pytest.raises(ConfigurationError, match="MPESA_PASSKEY"):
        provider(daraja, MPESA_PASSKEY="")


def test_an_unreadable_certificate_is_a_configuration_error(daraja: FakeDaraja) -> None:
    with pytest.raises(ConfigurationError, match="MPESA_CERTIFICATE"):
        provider(daraja, MPESA_CERTIFICATE="/nonexistent/cert.pem")


def test_a_real_daraja_never_calls_back_over_plain_http(daraja: FakeDaraja) -> None:
    settings = load_settings(
        **{
            **daraja.env(CALLBACK, "t" * 40),
            "MPESA_BASE_URL": "https://sandbox.safaricom.co.ke",
            "MPESA_CALLBACK_URL": "http://127.0.0.1:8000/api/webhooks/daraja/" + "t" * 40 + "/",
        }
    )

    with pytest.raises(ConfigurationError, match="https"):
        MpesaProvider.from_settings(settings)


def test_config_show_never_prints_the_callback_url_that_holds_the_path_token() -> None:
    view = load_settings(MPESA_CALLBACK_URL=CALLBACK).public_view()

    assert view["MPESA_CALLBACK_URL"]["value"] == "********"
