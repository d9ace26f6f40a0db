"""MtnProvider against the fake MTN server (tests/fake_mtn.py); nothing here reaches MTN."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from orderpay.config import load_settings
from orderpay.domain.money import Money
from orderpay.errors import ConfigurationError, ProviderUnavailable
from orderpay.providers.base import (
    Accepted,
    CollectionRequest,
    Declined,
    PaymentRef,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.mtn import MtnProvider
from orderpay.providers.mtn_config import MtnEndpoint, MtnKeys, MtnTiming
from orderpay.tls import tls_context
from tests.fake_mtn import FakeMtn

ORDINARY = "+46733123499"  # no special sandbox behaviour: succeeds
SHORT_TIMEOUT = httpx.Timeout(connect=1.0, read=0.5, write=1.0, pool=1.0)
SHORT = MtnTiming(timeout=SHORT_TIMEOUT)
PRODUCTION = "https://proxy.momoapi.mtn.com"
SANDBOX = "https://sandbox.momodeveloper.mtn.com"
KEYS = MtnKeys(subscription_key=SecretStr("s"), api_user="u", api_key=SecretStr("k"))


@pytest.fixture(scope="module")
def mtn_server() -> Iterator[FakeMtn]:
    with FakeMtn() as fake:
        yield fake


@pytest.fixture
def mtn(mtn_server: FakeMtn) -> FakeMtn:
    mtn_server.reset()
    return mtn_server


@pytest.fixture
def provider(mtn: FakeMtn) -> Iterator[MtnProvider]:
    with mtn.provider(timing=SHORT) as p:
        yield p


def a_request(phone: str = ORDINARY, amount: Money | None = None) -> CollectionRequest:
    return CollectionRequest(uuid.uuid4(), uuid.uuid4(), amount or Money(2500, "GHS"), phone)


def ref_of(request: CollectionRequest) -> PaymentRef:
    return PaymentRef(
        reference=request.reference,
        provider_reference=str(request.reference),
        order_id=request.order_id,
        amount=request.amount,
        payer_phone=request.payer_phone,
        created_at=datetime.now(UTC),
    )


def with_api_key(keys: MtnKeys, api_key: str) -> MtnKeys:
    return dataclasses.replace(keys, api_key=SecretStr(api_key))


def charged(provider: MtnProvider, phone: str = ORDINARY) -> PaymentRef:
    request = a_request(phone)
    assert isinstance(provider.request_payment(request), Accepted)
    return ref_of(request)


@contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The token.


def test_token_is_fetched_once_and_reused_across_charges(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    provider.request_payment(a_request())
    assert (mtn.calls("token"), mtn.calls("requesttopay")) == (1, 1)

    provider.request_payment(a_request())
    assert (mtn.calls("token"), mtn.calls("requesttopay")) == (1, 2)


def test_concurrent_first_charges_share_one_token(mtn: FakeMtn, provider: MtnProvider) -> None:
    answers: list[object] = []
    threads = [
        threading.Thread(target=lambda: answers.append(provider.request_payment(a_request())))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 8
    assert all(isinstance(answer, Accepted) for answer in answers)
    assert mtn.calls("token") == 1


def test_token_is_fetched_again_shortly_before_it_expires(mtn: FakeMtn) -> None:
    clock = Clock()
    with mtn.provider(timing=SHORT, clock=clock) as provider:
        provider.request_payment(a_request())
        clock.now += 3600 - 61
        provider.request_payment(a_request())
        assert mtn.calls("token") == 1

        clock.now += 2  # now less than 60 s before expires_in (3600 s)
        provider.request_payment(a_request())

    assert mtn.calls("token") == 2


def test_expired_token_is_refreshed_once_on_401_and_the_call_retried(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    provider.request_payment(a_request())
    mtn.expire_tokens()

    answer = provider.request_payment(a_request())

    assert isinstance(answer, Accepted)
    assert mtn.calls("token") == 2
    assert [r.status for r in mtn.requests if r.kind == "requesttopay"] == [202, 401, 202]


def test_a_second_401_after_a_fresh_token_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    mtn.fail("requesttopay", 401, "UNAUTHORIZED", times=2)

    with pytest.raises(ProviderUnavailable):
        provider.request_payment(a_request())

    assert (mtn.calls("token"), mtn.calls("requesttopay")) == (2, 2)


def test_token_call_sends_content_length_zero_basic_auth_and_subscription_key(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    provider.request_payment(a_request())

    token_call = mtn.last("token")
    assert token_call.headers["content-length"] == "0"
    assert token_call.body == b""
    expected = base64.b64encode(f"{mtn.api_user}:{mtn.api_key}".encode()).decode()
    assert token_call.headers["authorization"] == f"Basic {expected}"
    assert token_call.headers["ocp-apim-subscription-key"] == mtn.subscription_key


def test_fake_answers_411_in_html_to_a_token_call_without_content_length(mtn: FakeMtn) -> None:
    with httpx.Client() as client:
        credentials = base64.b64encode(f"{mtn.api_user}:{mtn.api_key}".encode()).decode()
        request = client.build_request(
            "POST",
            f"{mtn.url}/collection/token/",
            headers={
                "Authorization": f"Basic {credentials}",
                "Ocp-Apim-Subscription-Key": mtn.subscription_key,
            },
        )
        del request.headers["Content-Length"]
        response = client.send(request)

    assert response.status_code == 411
    assert response.headers["content-type"].startswith("text/html")


def test_html_411_from_the_token_endpoint_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    mtn.fail("token", 411, html=True)

    with pytest.raises(ProviderUnavailable, match="HTTP 411"):
        provider.request_payment(a_request())

    assert mtn.calls("requesttopay") == 0


def test_refused_credentials_raise_provider_unavailable_naming_the_variables(
    mtn: FakeMtn,
) -> None:
    with (
        mtn.provider(collection=with_api_key(mtn.keys(), "not-the-key"), timing=SHORT) as provider,
        pytest.raises(ProviderUnavailable, match="MTN_MOMO_API_KEY"),
    ):
        provider.request_payment(a_request())

    assert mtn.calls("requesttopay") == 0


# Request to pay.


def test_request_carries_the_payment_id_as_reference_and_the_required_headers(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    request = a_request()

    answer = provider.request_payment(request)

    assert answer == Accepted(provider_reference=str(request.reference))
    call = mtn.last("requesttopay")
    assert call.headers["x-reference-id"] == str(request.reference)
    assert call.headers["x-target-environment"] == "sandbox"
    assert call.headers["ocp-apim-subscription-key"] == mtn.subscription_key
    assert call.headers["authorization"] == f"Bearer {mtn.issued_tokens[0]}"


@pytest.mark.parametrize(
    ("amount", "sent"),
    [(Money(2500, "GHS"), "25.00"), (Money(5000, "UGX"), "5000"), (Money(1, "EUR"), "0.01")],
)
def test_body_has_a_major_unit_amount_string_the_order_id_and_a_bare_msisdn(
    mtn: FakeMtn, provider: MtnProvider, amount: Money, sent: str
) -> None:
    request = a_request(amount=amount)

    provider.request_payment(request)

    body = mtn.last("requesttopay").json()
    assert body["amount"] == sent
    assert body["currency"] == amount.currency
    assert body["externalId"] == str(request.order_id)
    assert body["payer"] == {"partyIdType": "MSISDN", "partyId": "46733123499"}
    assert isinstance(body["payerMessage"], str)
    assert isinstance(body["payeeNote"], str)


def test_callback_url_is_sent_when_configured(mtn: FakeMtn) -> None:
    with mtn.provider(callback_url="http://127.0.0.1:9/cb", timing=SHORT) as provider:
        provider.request_payment(a_request())

    assert mtn.last("requesttopay").headers["x-callback-url"] == "http://127.0.0.1:9/cb"


def test_no_callback_url_header_without_a_configured_callback(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    provider.request_payment(a_request())

    assert "x-callback-url" not in mtn.last("requesttopay").headers


def test_a_repeated_reference_gets_409_and_maps_to_accepted(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    request = a_request()
    provider.request_payment(request)

    again = provider.request_payment(request)

    assert again == Accepted(provider_reference=str(request.reference))
    assert mtn.last("requesttopay").status == 409


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "PAYER_NOT_FOUND"),
        (400, "NOT_ALLOWED"),
        (400, "INVALID_CURRENCY"),
        (403, "PAYEE_NOT_ALLOWED_TO_RECEIVE"),
        (400, "NOT_ALLOWED_TARGET_ENVIRONMENT"),
        (400, "INVALID_CALLBACK_URL_HOST"),
        (404, "PAYER_NOT_FOUND"),
        (400, "SOME_NEW_CODE"),
    ],
)
def test_a_definite_refusal_maps_to_declined_with_mtns_code(
    mtn: FakeMtn, provider: MtnProvider, status: int, code: str
) -> None:
    mtn.refuse(code, status)

    assert provider.request_payment(a_request()) == Declined(reason=code)


def test_a_payer_refused_by_the_fake_is_declined(mtn: FakeMtn, provider: MtnProvider) -> None:
    mtn.refuse_payer("46733123455", "PAYER_NOT_FOUND")

    assert provider.request_payment(a_request("+46733123455")) == Declined("PAYER_NOT_FOUND")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, None),
        (502, None),
        (503, "SERVICE_UNAVAILABLE"),
        (500, "INTERNAL_PROCESSING_ERROR"),
        (500, "PAYER_NOT_FOUND"),
        (400, "SERVICE_UNAVAILABLE"),
        (400, "INTERNAL_PROCESSING_ERROR"),
        (429, "TOO_MANY_REQUESTS"),
        (409, "SOMETHING_ELSE"),
        (404, None),
    ],
)
def test_server_errors_and_ambiguous_codes_raise_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider, status: int, code: str | None
) -> None:
    mtn.fail("requesttopay", status, code)

    with pytest.raises(ProviderUnavailable):
        provider.request_payment(a_request())


def test_an_html_error_page_is_unknown_not_a_refusal(mtn: FakeMtn, provider: MtnProvider) -> None:
    mtn.fail("requesttopay", 400, html=True)

    with pytest.raises(ProviderUnavailable):
        provider.request_payment(a_request())


@pytest.mark.slow
def test_a_timeout_raises_provider_unavailable_quickly(mtn: FakeMtn, provider: MtnProvider) -> None:
    mtn.hang("requesttopay", 30)
    started = time.monotonic()

    with pytest.raises(ProviderUnavailable, match="in time"):
        provider.request_payment(a_request())

    assert time.monotonic() - started < 10  # the client's 0.5 s read timeout, not MTN's 30 s


@pytest.mark.slow
def test_retrying_a_timed_out_request_with_the_same_reference_is_accepted(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    mtn.hang("requesttopay", 30, process=True)  # MTN took it; the answer is lost
    request = a_request()
    with pytest.raises(ProviderUnavailable):
        provider.request_payment(request)

    assert provider.request_payment(request) == Accepted(str(request.reference))
    assert mtn.transfer(request.reference) is not None


def test_an_unreachable_gateway_raises_provider_unavailable() -> None:
    with (
        socket_closed_port() as port,
        MtnProvider(
            MtnEndpoint(f"http://127.0.0.1:{port}", "sandbox"), KEYS, timing=SHORT
        ) as provider,
        pytest.raises(ProviderUnavailable, match="could not reach"),
    ):
        provider.request_payment(a_request())


# Status.


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        (ORDINARY, StatusAnswer(RemoteState.SUCCEEDED, amount=Money(2500, "GHS"))),
        ("+46733123451", StatusAnswer(RemoteState.FAILED, reason="APPROVAL_REJECTED")),
        ("+46733123452", StatusAnswer(RemoteState.FAILED, reason="EXPIRED")),
        # An error on MTN's side is no definite failure: the collection may yet go through.
        ("+46733123450", StatusAnswer(RemoteState.AMBIGUOUS, reason="INTERNAL_PROCESSING_ERROR")),
        ("+46733123453", StatusAnswer(RemoteState.PENDING)),
        ("+46733123454", StatusAnswer(RemoteState.PENDING)),  # CREATED
    ],
)
def test_sandbox_outcomes_map_to_remote_states(
    provider: MtnProvider, phone: str, expected: StatusAnswer
) -> None:
    payment = charged(provider, phone)

    answer = provider.payment_status(payment)

    assert dataclasses.replace(answer, transaction_id=None) == expected


def test_a_success_carries_mtns_financial_transaction_id(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider)

    answer = provider.payment_status(payment)

    transfer = mtn.transfer(payment.reference)
    assert transfer is not None
    assert answer.transaction_id == transfer.financial_transaction_id


def test_the_ongoing_payer_expires_after_the_approval_window(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider, "+46733123453")
    mtn.advance(301)

    assert provider.payment_status(payment) == StatusAnswer(RemoteState.FAILED, reason="EXPIRED")


def test_the_delayed_payer_succeeds_once_no_longer_created(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider, "+46733123454")
    mtn.advance(46)

    assert provider.payment_status(payment).state is RemoteState.SUCCEEDED


def test_an_unknown_reference_is_unknown(provider: MtnProvider) -> None:
    never_sent = ref_of(a_request())

    assert provider.payment_status(never_sent) == StatusAnswer(RemoteState.UNKNOWN)


def test_a_late_404_is_unknown_until_the_request_becomes_visible(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider)
    mtn.late_404(payment.reference, polls=2)

    states = [provider.payment_status(payment).state for _ in range(3)]

    assert states == [RemoteState.UNKNOWN, RemoteState.UNKNOWN, RemoteState.SUCCEEDED]


def test_a_404_without_mtns_not_found_code_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider)
    mtn.fail("status", 404, html=True)

    with pytest.raises(ProviderUnavailable):
        provider.payment_status(payment)


def test_a_failed_reason_given_as_an_object_is_tolerated() -> None:
    with FakeMtn(reason_as_object=True) as mtn, mtn.provider(timing=SHORT) as provider:
        payment = charged(provider, "+46733123451")

        assert provider.payment_status(payment) == StatusAnswer(
            RemoteState.FAILED, reason="APPROVAL_REJECTED"
        )


def test_an_unknown_status_string_is_pending(mtn: FakeMtn, provider: MtnProvider) -> None:
    payment = charged(provider)
    mtn.set_status(payment.reference, "ONGOING_REVIEW")

    assert provider.payment_status(payment) == StatusAnswer(RemoteState.PENDING)


def test_an_unparseable_amount_is_left_out_of_a_success(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider)
    mtn.patch_body(payment.reference, amount="25.00.1")

    answer = provider.payment_status(payment)

    assert (answer.state, answer.amount) == (RemoteState.SUCCEEDED, None)


@pytest.mark.parametrize("status", [500, 503])
def test_a_status_query_server_error_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider, status: int
) -> None:
    payment = charged(provider)
    mtn.fail("status", status)

    with pytest.raises(ProviderUnavailable):
        provider.payment_status(payment)


@pytest.mark.slow
def test_a_status_query_timeout_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = charged(provider)
    mtn.hang("status", 30)

    with pytest.raises(ProviderUnavailable):
        provider.payment_status(payment)


def test_a_status_query_reuses_the_cached_token(mtn: FakeMtn, provider: MtnProvider) -> None:
    payment = charged(provider)

    provider.payment_status(payment)

    assert (mtn.calls("token"), mtn.calls("status")) == (1, 1)


# Configuration.


def test_from_settings_names_every_missing_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MtnProvider.from_settings(load_settings(MTN_MOMO_BASE_URL=SANDBOX))

    message = caught.value.message
    for name in (
        "MTN_MOMO_SUBSCRIPTION_KEY",
        "MTN_MOMO_API_USER",
        "MTN_MOMO_API_KEY",
        "MTN_MOMO_TARGET_ENVIRONMENT",
    ):
        assert name in message
    assert "MTN_MOMO_BASE_URL" not in message


def test_from_settings_builds_a_provider_that_talks_to_the_configured_gateway(
    mtn: FakeMtn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in mtn.env().items():
        monkeypatch.setenv(name, value)

    with MtnProvider.from_settings(load_settings(), timeout=SHORT_TIMEOUT) as provider:
        assert isinstance(provider.request_payment(a_request()), Accepted)


@pytest.mark.parametrize(
    ("base_url", "target"),
    [
        (PRODUCTION, "sandbox"),
        ("https://momo.example.com", "sandbox"),
        (SANDBOX, "mtnghana"),
        ("https://sandbox.momodeveloper.mtn.com./", "mtnuganda"),
        ("http://127.0.0.1:8080", "mtnghana"),
        ("http://localhost:8080", "mtnuganda"),
        ("http://proxy.momoapi.mtn.com", "mtnghana"),
        ("http://sandbox.momodeveloper.mtn.com", "sandbox"),
        ("https://user:pass@proxy.momoapi.mtn.com", "mtnghana"),
        ("ftp://proxy.momoapi.mtn.com", "mtnghana"),
        (PRODUCTION, "MTN Ghana"),
        ("not a url", "sandbox"),
    ],
)
def test_mismatched_or_unsafe_endpoints_are_refused(base_url: str, target: str) -> None:
    with pytest.raises(ConfigurationError, match="MTN_MOMO_"):
        MtnProvider(MtnEndpoint(base_url, target), KEYS)


@pytest.mark.parametrize(
    ("base_url", "target"),
    [
        (SANDBOX, "sandbox"),
        (PRODUCTION, "mtnghana"),
        ("http://127.0.0.1:8080", "sandbox"),
        ("http://localhost:8080/", "sandbox"),
        ("http://[::1]:8080", "sandbox"),
    ],
)
def test_matching_endpoints_are_accepted(base_url: str, target: str) -> None:
    with MtnProvider(MtnEndpoint(base_url, target), KEYS) as provider:
        assert provider.base_url == base_url.rstrip("/")


def test_tls_certificates_and_host_names_are_always_verified() -> None:
    context = tls_context()

    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_production_target_needs_an_https_callback_url() -> None:
    with pytest.raises(ConfigurationError, match="MTN_MOMO_CALLBACK_URL"):
        MtnProvider(MtnEndpoint(PRODUCTION, "mtnghana", "http://shop.example.com/cb"), KEYS)


def test_from_settings_refuses_a_sandbox_target_on_a_production_host() -> None:
    settings = load_settings(
        MTN_MOMO_BASE_URL=PRODUCTION,
        MTN_MOMO_SUBSCRIPTION_KEY="s",
        MTN_MOMO_API_USER="u",
        MTN_MOMO_API_KEY="k",
        MTN_MOMO_TARGET_ENVIRONMENT="sandbox",
    )

    with pytest.raises(ConfigurationError, match="sandbox"):
        MtnProvider.from_settings(settings)


# Secrets.


def test_repr_shows_no_secret(mtn: FakeMtn, provider: MtnProvider) -> None:
    provider.request_payment(a_request())

    text = repr(provider)

    for secret in (mtn.api_key, mtn.subscription_key, *mtn.issued_tokens):
        assert secret not in text


def test_the_keys_repr_shows_no_secret() -> None:
    keys = MtnKeys(
        subscription_key=SecretStr("sub-secret-123"),
        api_user="u",
        api_key=SecretStr("key-secret-456"),
    )

    text = f"{keys!r} {keys}"

    assert "api_user='u'" in text
    assert "sub-secret-123" not in text
    assert "key-secret-456" not in text


def test_logs_show_no_secret(
    mtn: FakeMtn, provider: MtnProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    payment = charged(provider)
    mtn.expire_tokens()
    provider.payment_status(payment)
    mtn.fail("requesttopay", 500, "INTERNAL_PROCESSING_ERROR")
    with pytest.raises(ProviderUnavailable):
        provider.request_payment(a_request())

    assert "MTN" in caplog.text
    for secret in (mtn.api_key, mtn.subscription_key, *mtn.issued_tokens):
        assert secret not in caplog.text


def test_error_messages_show_no_secret(mtn: FakeMtn) -> None:
    errors: list[Exception] = []
    with mtn.provider(timing=SHORT) as provider:
        provider.request_payment(a_request())
        mtn.fail("requesttopay", 500, "INTERNAL_PROCESSING_ERROR")
        mtn.fail("requesttopay", 401, "UNAUTHORIZED", times=2)
        mtn.fail("status", 503, "SERVICE_UNAVAILABLE")
        for call in (
            lambda: provider.request_payment(a_request()),
            lambda: provider.request_payment(a_request()),
            lambda: provider.payment_status(ref_of(a_request())),
        ):
            with pytest.raises(ProviderUnavailable) as caught:
                call()
            errors.append(caught.value)
    with mtn.provider(
        collection=with_api_key(mtn.keys(), mtn.api_key + "x"), timing=SHORT
    ) as wrong:
        with pytest.raises(ProviderUnavailable) as caught:
            wrong.request_payment(a_request())
        errors.append(caught.value)

    for error in errors:
        text = f"{error} {error!r} {getattr(error, 'details', '')}"
        for secret in (mtn.api_key, mtn.subscription_key, *mtn.issued_tokens):
            assert secret not in text


def test_configuration_errors_show_no_secret() -> None:
    settings = load_settings(
        MTN_MOMO_BASE_URL=PRODUCTION,
        MTN_MOMO_SUBSCRIPTION_KEY="sub-secret-123",
        MTN_MOMO_API_USER="u",
        MTN_MOMO_API_KEY="key-secret-456",
        MTN_MOMO_TARGET_ENVIRONMENT="sandbox",
    )

    with pytest.raises(ConfigurationError) as caught:
        MtnProvider.from_settings(settings)

    assert "sub-secret-123" not in str(caught.value)
    assert "key-secret-456" not in str(caught.value)


# The fake's callbacks (other tests rely on them).


@dataclass(frozen=True)
class Received:
    method: str
    headers: dict[str, str]
    body: dict[str, Any]


class CallbackSink:
    """A minimal listener on loopback that records the callbacks it gets."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                headers = {name.lower(): value for name, value in self.headers.items()}
                received.append(Received(self.command, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/momo/"
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    listener = CallbackSink()
    yield listener
    listener.close()


def charge_with_callback(mtn: FakeMtn, sink: CallbackSink, phone: str = ORDINARY) -> PaymentRef:
    with mtn.provider(callback_url=sink.url, timing=SHORT) as provider:
        return charged(provider, phone)


def test_fake_posts_the_status_body_unsigned_to_the_callback_url(
    mtn: FakeMtn, sink: CallbackSink
) -> None:
    payment = charge_with_callback(mtn, sink)

    [delivery] = mtn.wait_for_deliveries(1)

    assert delivery.status == 200
    [callback] = sink.received
    assert callback.method == "POST"
    assert callback.body == mtn.status_body(payment.reference)
    assert callback.body["status"] == "SUCCESSFUL"
    assert callback.body["externalId"] == str(payment.order_id)
    assert "financialTransactionId" in callback.body
    assert "referenceId" not in callback.body
    assert callback.headers["user-agent"] == "LWAC Http Client 1.0"
    assert "authorization" not in callback.headers


def test_fake_can_call_back_twice_with_post_and_put(mtn: FakeMtn, sink: CallbackSink) -> None:
    mtn.callback_methods = ("POST", "PUT")
    mtn.callback_copies = 2
    charge_with_callback(mtn, sink, "+46733123451")
    mtn.wait_for_deliveries(2)

    mtn.advance(mtn.callback_gap)

    deliveries = mtn.wait_for_deliveries(4)
    assert [d.method for d in deliveries] == ["POST", "PUT", "POST", "PUT"]
    assert all(r.body["reason"] == "APPROVAL_REJECTED" for r in sink.received)


def test_fake_calls_back_only_once_a_delayed_payment_settles(
    mtn: FakeMtn, sink: CallbackSink
) -> None:
    charge_with_callback(mtn, sink, "+46733123454")
    assert mtn.deliveries == []

    mtn.advance(mtn.created_for)

    [delivery] = mtn.wait_for_deliveries(1)
    assert delivery.body["status"] == "SUCCESSFUL"
