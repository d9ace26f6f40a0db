"""MtnProvider's refunds (MTN's Disbursement product) against the fake MTN server
(tests/fake_mtn.py + tests/fake_mtn_disbursement.py); nothing here reaches MTN."""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
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
    RefundRef,
    RefundRequest,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.mtn import MtnProvider
from orderpay.providers.mtn_config import MtnEndpoint, MtnKeys, MtnTiming
from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from tests.fake_mtn import FakeMtn
from tests.user_shell import orderpay

ORDINARY = "+46733123499"  # no special sandbox behaviour: the payment succeeds
REJECTS = "+46733123451"  # the payment fails (APPROVAL_REJECTED)
# Short enough for the tests of a hanging MTN, long enough for the fake's answer on a loaded
# 2-core machine.
SHORT_TIMEOUT = httpx.Timeout(connect=1.0, read=3.0, write=1.0, pool=1.0)
SHORT = MtnTiming(timeout=SHORT_TIMEOUT)
DISBURSEMENT_VARIABLES = (
    "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY",
    "MTN_MOMO_DISBURSEMENT_API_USER",
    "MTN_MOMO_DISBURSEMENT_API_KEY",
)
NO_REFUNDS = MtnKeys()


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


def with_api_key(keys: MtnKeys, api_key: str) -> MtnKeys:
    return dataclasses.replace(keys, api_key=SecretStr(api_key))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def paid(provider: MtnProvider, phone: str = ORDINARY, amount: Money | None = None) -> PaymentRef:
    """A payment MTN took (and, for an ordinary payer, reports SUCCESSFUL at once)."""
    request = CollectionRequest(uuid.uuid4(), uuid.uuid4(), amount or Money(2500, "GHS"), phone)
    assert isinstance(provider.request_payment(request), Accepted)
    return PaymentRef(
        reference=request.reference,
        provider_reference=str(request.reference),
        order_id=request.order_id,
        amount=request.amount,
        payer_phone=phone,
        created_at=datetime.now(UTC),
    )


def a_refund(
    payment: PaymentRef, amount: Money | None = None, reason: str = "customer returned the goods"
) -> RefundRequest:
    return RefundRequest(uuid.uuid4(), payment, amount or payment.amount, reason)


def ref_of(refund: RefundRequest) -> RefundRef:
    return RefundRef(
        reference=refund.reference,
        provider_reference=str(refund.reference),
        payment=refund.payment,
        amount=refund.amount,
        created_at=datetime.now(UTC),
    )


def refunded(provider: MtnProvider, payment: PaymentRef | None = None) -> RefundRef:
    refund = a_refund(payment or paid(provider))
    assert isinstance(provider.request_refund(refund), Accepted)
    return ref_of(refund)


def statuses(mtn: FakeMtn, kind: str = "refund") -> list[int]:
    return [r.status for r in mtn.requests if r.kind == kind]


# The Disbursement token.


def test_the_first_refund_fetches_a_token_with_the_disbursement_credentials(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)

    provider.request_refund(a_refund(payment))

    call = mtn.last("disbursement_token")
    assert call.path == "/disbursement/token/"
    assert (call.headers["content-length"], call.body) == ("0", b"")
    disbursement = mtn.disbursement
    basic = base64.b64encode(f"{disbursement.api_user}:{disbursement.api_key}".encode()).decode()
    assert call.headers["authorization"] == f"Basic {basic}"
    assert call.headers["ocp-apim-subscription-key"] == disbursement.subscription_key


def test_refunds_and_their_status_queries_share_one_cached_token(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider, amount=Money(9000, "GHS"))
    refunds = [a_refund(payment, Money(3000, "GHS")) for _ in range(3)]

    for refund in refunds:
        provider.request_refund(refund)
        provider.refund_status(ref_of(refund))

    assert (mtn.calls("disbursement_token"), mtn.calls("refund")) == (1, 3)
    assert mtn.calls("refund_status") == 3


def test_charges_and_refunds_each_use_their_own_products_token(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)

    provider.request_refund(a_refund(payment))

    assert (mtn.calls("token"), mtn.calls("disbursement_token")) == (1, 1)
    [disbursement_token] = mtn.disbursement.issued_tokens
    assert mtn.last("refund").headers["authorization"] == f"Bearer {disbursement_token}"
    assert mtn.last("requesttopay").headers["authorization"] == f"Bearer {mtn.issued_tokens[0]}"


def test_the_disbursement_token_is_fetched_again_shortly_before_it_expires(mtn: FakeMtn) -> None:
    clock = Clock()
    with mtn.provider(timing=SHORT, clock=clock) as provider:
        refund = refunded(provider)
        clock.now += 3600 - 61
        provider.refund_status(refund)
        assert mtn.calls("disbursement_token") == 1

        clock.now += 2  # now less than 60 s before expires_in (3600 s)
        provider.refund_status(refund)

    assert mtn.calls("disbursement_token") == 2


def test_an_expired_disbursement_token_is_refreshed_once_on_401_and_the_refund_retried(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refunded(provider)
    mtn.expire_tokens()

    answer = provider.request_refund(a_refund(paid(provider)))

    assert isinstance(answer, Accepted)
    assert mtn.calls("disbursement_token") == 2
    assert statuses(mtn) == [202, 401, 202]


def test_a_second_401_after_a_fresh_token_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)
    mtn.fail("refund", 401, "UNAUTHORIZED", times=2)

    with pytest.raises(ProviderUnavailable):
        provider.request_refund(a_refund(payment))

    assert (mtn.calls("disbursement_token"), mtn.calls("refund")) == (2, 2)
    assert mtn.disbursement.refunds == []


def test_refused_disbursement_credentials_raise_provider_unavailable_naming_their_variables(
    mtn: FakeMtn,
) -> None:
    with mtn.provider(
        disbursement=with_api_key(mtn.disbursement.keys(), "not-the-key"), timing=SHORT
    ) as provider:
        payment = paid(provider)
        with pytest.raises(ProviderUnavailable, match="MTN_MOMO_DISBURSEMENT_API_KEY"):
            provider.request_refund(a_refund(payment))

    assert mtn.calls("refund") == 0


def test_the_collection_credentials_cannot_fetch_a_disbursement_token(mtn: FakeMtn) -> None:
    with mtn.provider(disbursement=mtn.keys(), timing=SHORT) as provider:
        payment = paid(provider)
        with pytest.raises(ProviderUnavailable, match="credentials"):
            provider.request_refund(a_refund(payment))

    assert statuses(mtn, "disbursement_token") == [401]
    assert mtn.calls("refund") == 0


def test_the_fake_refuses_a_refund_made_with_a_collection_token(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)
    [collection_token] = mtn.issued_tokens

    response = httpx.post(
        f"{mtn.url}/disbursement/v1_0/refund",
        headers={
            "Authorization": f"Bearer {collection_token}",
            "X-Reference-Id": str(uuid.uuid4()),
            "X-Target-Environment": "sandbox",
            "Ocp-Apim-Subscription-Key": mtn.disbursement.subscription_key,
        },
        json={
            "amount": "25.00",
            "currency": "GHS",
            "externalId": "x",
            "payerMessage": "m",
            "payeeNote": "n",
            "referenceIdToRefund": str(payment.reference),
        },
    )

    assert response.status_code == 401
    assert mtn.disbursement.refunds == []


# The refund request.


def test_a_refund_carries_its_id_as_reference_and_the_required_headers(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = a_refund(paid(provider))

    answer = provider.request_refund(refund)

    assert answer == Accepted(provider_reference=str(refund.reference))
    call = mtn.last("refund")
    assert (call.method, call.path) == ("POST", "/disbursement/v1_0/refund")
    assert call.headers["x-reference-id"] == str(refund.reference)
    assert call.headers["x-target-environment"] == "sandbox"
    assert call.headers["ocp-apim-subscription-key"] == mtn.disbursement.subscription_key
    assert call.headers["authorization"] == f"Bearer {mtn.disbursement.issued_tokens[0]}"


@pytest.mark.parametrize(
    ("paid_amount", "refund_amount", "sent"),
    [
        (Money(2500, "GHS"), Money(2500, "GHS"), "25.00"),
        (Money(2500, "GHS"), Money(1050, "GHS"), "10.50"),
        (Money(5000, "UGX"), Money(1200, "UGX"), "1200"),
        (Money(100, "EUR"), Money(1, "EUR"), "0.01"),
    ],
)
def test_the_body_names_the_payment_refunded_and_the_refunds_own_amount(
    mtn: FakeMtn, provider: MtnProvider, paid_amount: Money, refund_amount: Money, sent: str
) -> None:
    payment = paid(provider, amount=paid_amount)
    refund = a_refund(payment, refund_amount)

    provider.request_refund(refund)

    body = mtn.last("refund").json()
    assert body["referenceIdToRefund"] == str(payment.reference)
    assert (body["amount"], body["currency"]) == (sent, refund_amount.currency)
    assert body["externalId"] == str(payment.order_id)
    stored = mtn.disbursement.refund(refund.reference)
    assert stored is not None
    assert (stored.reference_to_refund, stored.amount) == (str(payment.reference), sent)
    assert stored.payee == "46733123499"  # the payer of the payment gets the money back


def test_the_operators_reason_reaches_the_transaction_history_on_one_bounded_line(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)

    provider.request_refund(a_refund(payment, reason="damaged\n\tin transit\x00 " + "x" * 300))

    body = mtn.last("refund").json()
    for name in ("payerMessage", "payeeNote"):
        assert body[name].startswith(f"Refund for order {str(payment.order_id)[:8]}: damaged in")
        assert body[name].isprintable()
        assert len(body[name]) <= 160


def test_a_refund_asks_for_no_callback_even_when_charges_do(mtn: FakeMtn) -> None:
    with mtn.provider(callback_url="http://127.0.0.1:9/cb", timing=SHORT) as provider:
        provider.request_refund(a_refund(paid(provider)))

    assert "x-callback-url" in mtn.last("requesttopay").headers
    assert "x-callback-url" not in mtn.last("refund").headers


def test_a_repeated_refund_reference_gets_409_and_is_accepted_with_one_refund_at_mtn(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = a_refund(paid(provider))
    provider.request_refund(refund)

    again = provider.request_refund(refund)

    assert again == Accepted(provider_reference=str(refund.reference))
    assert statuses(mtn) == [202, 409]
    assert len(mtn.disbursement.refunds) == 1


@pytest.mark.slow
def test_retrying_a_timed_out_refund_with_the_same_reference_is_accepted_once_at_mtn(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = a_refund(paid(provider))
    mtn.hang("refund", 30, process=True)  # MTN took it; the answer is lost
    with pytest.raises(ProviderUnavailable, match="in time"):
        provider.request_refund(refund)

    assert provider.request_refund(refund) == Accepted(str(refund.reference))
    assert [r.reference for r in mtn.disbursement.refunds] == [str(refund.reference)]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_CURRENCY"),
        (400, "PAYEE_NOT_FOUND"),
        (400, "NOT_ALLOWED"),
        (404, "RESOURCE_NOT_FOUND"),
        (404, "PAYEE_NOT_FOUND"),
        (403, "NOT_ALLOWED_TARGET_ENVIRONMENT"),
        (400, "NOT_ENOUGH_FUNDS"),
        (400, "SOME_NEW_CODE"),
    ],
)
@pytest.mark.slow
def test_a_definite_refusal_is_declined_with_mtns_code(
    mtn: FakeMtn, provider: MtnProvider, status: int, code: str
) -> None:
    payment = paid(provider)
    mtn.fail("refund", status, code)

    assert provider.request_refund(a_refund(payment)) == Declined(reason=code)


def test_refunding_a_payment_mtn_does_not_hold_is_declined_resource_not_found(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    never_sent = dataclasses.replace(
        paid(provider), reference=uuid.uuid4(), provider_reference=None
    )

    answer = provider.request_refund(a_refund(never_sent))

    assert answer == Declined("RESOURCE_NOT_FOUND")
    assert statuses(mtn) == [404]
    assert mtn.disbursement.refunds == []


def test_refunding_a_payment_that_failed_at_mtn_is_declined(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider, REJECTS)

    assert provider.request_refund(a_refund(payment)) == Declined("NOT_ALLOWED")
    assert mtn.disbursement.refunds == []


def test_refunding_more_than_is_left_of_the_payment_is_declined(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider, amount=Money(2500, "GHS"))
    provider.request_refund(a_refund(payment, Money(2000, "GHS")))

    answer = provider.request_refund(a_refund(payment, Money(501, "GHS")))

    assert answer == Declined("NOT_ALLOWED")
    assert [r.amount for r in mtn.disbursement.refunds] == ["20.00"]


def test_a_failed_refund_leaves_its_amount_refundable_at_mtn(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider)
    first = refunded(provider, payment)
    mtn.disbursement.set_status(first.reference, "FAILED", "PAYEE_NOT_FOUND")

    assert isinstance(provider.request_refund(a_refund(payment)), Accepted)


def test_refunding_in_another_currency_is_declined_invalid_currency(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    payment = paid(provider, amount=Money(2500, "GHS"))

    assert provider.request_refund(a_refund(payment, Money(2500, "EUR"))) == Declined(
        "INVALID_CURRENCY"
    )


@pytest.mark.parametrize(
    ("status", "code", "html"),
    [
        (500, None, False),
        (502, None, False),
        (503, "SERVICE_UNAVAILABLE", False),
        (500, "INTERNAL_PROCESSING_ERROR", False),
        (400, "SERVICE_UNAVAILABLE", False),
        (500, "PAYEE_NOT_FOUND", False),
        (429, "TOO_MANY_REQUESTS", False),
        (409, "SOMETHING_ELSE", False),
        (404, None, False),
        (400, None, True),
    ],
)
@pytest.mark.slow
def test_server_errors_and_ambiguous_answers_raise_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider, status: int, code: str | None, html: bool
) -> None:
    payment = paid(provider)
    mtn.fail("refund", status, code, html=html)

    with pytest.raises(ProviderUnavailable):
        provider.request_refund(a_refund(payment))


def test_a_refund_path_the_gateway_does_not_know_raises_unavailable_never_declined(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    # The gateway's own 404 carries no MTN code: a wrong path must not read as "no such payment".
    payment = paid(provider)
    mtn.unroute("refund")

    with pytest.raises(ProviderUnavailable):
        provider.request_refund(a_refund(payment))

    assert statuses(mtn) == [404]
    assert mtn.disbursement.refunds == []


def test_a_refund_status_path_the_gateway_does_not_know_raises_unavailable_never_unknown(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)
    mtn.unroute("refund_status")

    with pytest.raises(ProviderUnavailable):
        provider.refund_status(refund)

    assert statuses(mtn, "refund_status") == [404]


def test_an_unreachable_gateway_raises_provider_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    payment = PaymentRef(
        uuid.uuid4(), None, uuid.uuid4(), Money(100, "GHS"), ORDINARY, datetime.now(UTC)
    )
    with (
        MtnProvider(
            MtnEndpoint(f"http://127.0.0.1:{port}", "sandbox"),
            MtnKeys(subscription_key=SecretStr("s"), api_user="u", api_key=SecretStr("k")),
            disbursement=MtnKeys(
                subscription_key=SecretStr("ds"), api_user="du", api_key=SecretStr("dk")
            ),
            timing=SHORT,
        ) as provider,
        pytest.raises(ProviderUnavailable, match="could not reach"),
    ):
        provider.request_refund(a_refund(payment))


# The refund's status.


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (None, StatusAnswer(RemoteState.SUCCEEDED, amount=Money(2500, "GHS"))),
        (("FAILED", "PAYEE_NOT_FOUND"), StatusAnswer(RemoteState.FAILED, "PAYEE_NOT_FOUND")),
        (("FAILED", "NOT_ENOUGH_FUNDS"), StatusAnswer(RemoteState.FAILED, "NOT_ENOUGH_FUNDS")),
        (("PENDING", None), StatusAnswer(RemoteState.PENDING)),
        (("CREATED", None), StatusAnswer(RemoteState.PENDING)),
        (("ONGOING_REVIEW", None), StatusAnswer(RemoteState.PENDING)),  # unknown: never failed
    ],
)
@pytest.mark.slow
def test_refund_outcomes_scripted_per_payee_map_to_remote_states(
    mtn: FakeMtn,
    provider: MtnProvider,
    script: tuple[str, str | None] | None,
    expected: StatusAnswer,
) -> None:
    if script is not None:
        mtn.disbursement.script_payee(ORDINARY, *script)
    refund = refunded(provider)

    answer = provider.refund_status(refund)

    assert dataclasses.replace(answer, transaction_id=None) == expected


def test_the_status_query_asks_the_disbursement_api_for_the_refund_id(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)

    provider.refund_status(refund)

    call = mtn.last("refund_status")
    assert (call.method, call.path) == ("GET", f"/disbursement/v1_0/refund/{refund.reference}")
    assert call.headers["authorization"] == f"Bearer {mtn.disbursement.issued_tokens[0]}"
    assert mtn.calls("status") == 0  # never the payment's status


def test_a_successful_refund_carries_mtns_financial_transaction_id(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)

    answer = provider.refund_status(refund)

    stored, payment = (
        mtn.disbursement.refund(refund.reference),
        mtn.transfer(refund.payment.reference),
    )
    assert stored is not None
    assert payment is not None
    assert answer.transaction_id == stored.financial_transaction_id
    assert answer.transaction_id != payment.financial_transaction_id


def test_a_failed_refund_carries_mtns_reason(mtn: FakeMtn, provider: MtnProvider) -> None:
    refund = refunded(provider)
    mtn.disbursement.set_status(refund.reference, "FAILED", "PAYEE_NOT_FOUND")

    assert provider.refund_status(refund) == StatusAnswer(RemoteState.FAILED, "PAYEE_NOT_FOUND")


@pytest.mark.parametrize("reason", ["INTERNAL_PROCESSING_ERROR", "SERVICE_UNAVAILABLE"])
def test_a_refund_failed_with_an_ambiguous_reason_is_ambiguous_and_logged(
    mtn: FakeMtn, provider: MtnProvider, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An error on MTN's side: the credit may still complete, so its amount must not be freed.
    refund = refunded(provider)
    mtn.disbursement.set_status(refund.reference, "FAILED", reason)

    with caplog.at_level(logging.WARNING, logger="orderpay.providers.mtn"):
        answer = provider.refund_status(refund)

    assert answer == StatusAnswer(RemoteState.AMBIGUOUS, reason)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(refund.reference) in warning.getMessage()
    assert reason in warning.getMessage()


def test_a_refund_failed_without_a_reason_is_ambiguous(mtn: FakeMtn, provider: MtnProvider) -> None:
    refund = refunded(provider)
    mtn.disbursement.set_status(refund.reference, "FAILED")
    assert "reason" not in mtn.disbursement.status_body(refund.reference)

    assert provider.refund_status(refund) == StatusAnswer(RemoteState.AMBIGUOUS)


def test_a_refund_ambiguous_after_an_error_at_mtn_settles_when_mtn_reports_success(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)
    mtn.disbursement.set_status(refund.reference, "FAILED", "INTERNAL_PROCESSING_ERROR")
    assert provider.refund_status(refund).state is RemoteState.AMBIGUOUS

    mtn.disbursement.set_status(refund.reference, "SUCCESSFUL")

    assert provider.refund_status(refund).state is RemoteState.SUCCEEDED


def test_a_pending_refund_succeeds_once_the_fakes_clock_passes_its_delay(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    mtn.disbursement.pending_for = 60
    refund = refunded(provider)
    assert provider.refund_status(refund).state is RemoteState.PENDING

    mtn.advance(61)

    assert provider.refund_status(refund).state is RemoteState.SUCCEEDED


def test_an_unknown_refund_reference_is_unknown(provider: MtnProvider) -> None:
    never_sent = ref_of(a_refund(paid(provider)))

    assert provider.refund_status(never_sent) == StatusAnswer(RemoteState.UNKNOWN)


def test_a_late_404_is_unknown_until_the_refund_becomes_visible(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)
    mtn.disbursement.late_404(refund.reference, polls=2)

    states = [provider.refund_status(refund).state for _ in range(3)]

    assert states == [RemoteState.UNKNOWN, RemoteState.UNKNOWN, RemoteState.SUCCEEDED]


@pytest.mark.parametrize(("status", "html"), [(500, False), (503, False), (404, True)])
def test_a_status_query_error_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider, status: int, html: bool
) -> None:
    refund = refunded(provider)
    mtn.fail("refund_status", status, html=html)

    with pytest.raises(ProviderUnavailable):
        provider.refund_status(refund)


@pytest.mark.slow
def test_a_status_query_timeout_raises_provider_unavailable(
    mtn: FakeMtn, provider: MtnProvider
) -> None:
    refund = refunded(provider)
    mtn.hang("refund_status", 30)

    with pytest.raises(ProviderUnavailable, match="in time"):
        provider.refund_status(refund)


# Configuration.


def test_without_disbursement_settings_charges_work_and_refunds_name_the_missing_variables(
    mtn: FakeMtn,
) -> None:
    with mtn.provider(disbursement=NO_REFUNDS, timing=SHORT) as provider:
        payment = paid(provider)  # charging needs only Collection
        with pytest.raises(ConfigurationError) as checked:
            provider.check_refunds_configured()
        with pytest.raises(ConfigurationError) as refused:
            provider.request_refund(a_refund(payment))

    for error in (checked.value, refused.value):
        assert error.exit_code == 2
        assert error.code == "configuration_error"
        for name in DISBURSEMENT_VARIABLES:
            assert name in error.message
    assert (mtn.calls("disbursement_token"), mtn.calls("refund")) == (0, 0)


def test_partial_disbursement_settings_name_only_what_is_missing_and_no_secret(
    mtn: FakeMtn,
) -> None:
    partial = dataclasses.replace(mtn.disbursement.keys(), api_user="", api_key=None)
    with mtn.provider(disbursement=partial, timing=SHORT) as provider:
        with pytest.raises(ConfigurationError) as caught:
            provider.check_refunds_configured()
        assert provider.refunds_missing == [
            "MTN_MOMO_DISBURSEMENT_API_USER",
            "MTN_MOMO_DISBURSEMENT_API_KEY",
        ]

    assert "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY" not in caught.value.message
    assert mtn.disbursement.subscription_key not in str(caught.value.to_dict())


def test_a_configured_provider_passes_the_refund_check(provider: MtnProvider) -> None:
    provider.check_refunds_configured()

    assert provider.refunds_missing == []


def test_from_settings_reads_the_disbursement_settings(
    mtn: FakeMtn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in mtn.env().items():
        monkeypatch.setenv(name, value)

    with MtnProvider.from_settings(load_settings(), timeout=SHORT_TIMEOUT) as provider:
        refund = refunded(provider)

    assert mtn.disbursement.refund(refund.reference) is not None


def test_from_settings_without_disbursement_settings_still_charges(
    mtn: FakeMtn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in mtn.env(refunds=False).items():
        monkeypatch.setenv(name, value)

    with MtnProvider.from_settings(load_settings(), timeout=SHORT_TIMEOUT) as provider:
        paid(provider)
        assert provider.refunds_missing == list(DISBURSEMENT_VARIABLES)


# Secrets.


def _secrets(mtn: FakeMtn) -> list[str]:
    disbursement = mtn.disbursement
    return [
        disbursement.api_key,
        disbursement.subscription_key,
        *disbursement.issued_tokens,
        mtn.api_key,
        mtn.subscription_key,
        *mtn.issued_tokens,
    ]


def test_repr_shows_no_disbursement_secret(mtn: FakeMtn, provider: MtnProvider) -> None:
    refunded(provider)

    text = repr(provider)

    assert "refunds=on" in text
    for secret in _secrets(mtn):
        assert secret not in text


def test_logs_show_no_disbursement_secret(
    mtn: FakeMtn, provider: MtnProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refund = refunded(provider)
    mtn.expire_tokens()
    provider.refund_status(refund)
    mtn.fail("refund", 500, "INTERNAL_PROCESSING_ERROR")
    with pytest.raises(ProviderUnavailable):
        provider.request_refund(a_refund(refund.payment))

    assert "MTN refund" in caplog.text
    assert "disbursement token fetched" in caplog.text
    for secret in _secrets(mtn):
        assert secret not in caplog.text


def test_error_messages_show_no_disbursement_secret(mtn: FakeMtn) -> None:
    errors: list[Exception] = []
    with mtn.provider(timing=SHORT) as provider:
        refund = refunded(provider)
        mtn.fail("refund", 500, "INTERNAL_PROCESSING_ERROR")
        mtn.fail("refund", 401, "UNAUTHORIZED", times=2)
        mtn.fail("refund_status", 503, "SERVICE_UNAVAILABLE")
        for call in (
            lambda: provider.request_refund(a_refund(refund.payment)),
            lambda: provider.request_refund(a_refund(refund.payment)),
            lambda: provider.refund_status(refund),
        ):
            with pytest.raises(ProviderUnavailable) as caught:
                call()
            errors.append(caught.value)
    wrong_key = mtn.disbursement.api_key + "x"
    with mtn.provider(
        disbursement=with_api_key(mtn.disbursement.keys(), wrong_key), timing=SHORT
    ) as wrong:
        with pytest.raises(ProviderUnavailable) as caught:
            wrong.request_refund(a_refund(refund.payment))
        errors.append(caught.value)

    for error in errors:
        text = f"{error} {error!r} {getattr(error, 'details', '')}"
        for secret in [*_secrets(mtn), wrong_key]:
            assert secret not in text


# doctor


def _doctor(tmp_path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """doctor's checks by name (and its exit code), on a migrated embedded database."""
    database = Database(f"sqlite:///{tmp_path / 'orderpay.db'}")
    upgrade(database)
    database.dispose()
    run = orderpay(tmp_path, "doctor", "--json", env=env)
    return {check["name"]: check for check in run.json()["checks"]} | {
        "exit": {"code": run.exit_code}
    }


@pytest.mark.slow
def test_doctor_reports_the_mtn_disbursement_configured(mtn: FakeMtn, tmp_path: Path) -> None:
    checks = _doctor(tmp_path, mtn.env())

    assert checks["refunds"]["state"] == "ok"
    assert checks["provider"]["state"] == "ok"
    for secret in _secrets(mtn):
        assert secret not in str(checks)


@pytest.mark.slow
def test_doctor_says_refunds_not_configured_without_failing(mtn: FakeMtn, tmp_path: Path) -> None:
    checks = _doctor(tmp_path, mtn.env(refunds=False))

    assert checks["refunds"]["state"] == "info"
    assert "refunds not configured" in checks["refunds"]["detail"]
    for name in DISBURSEMENT_VARIABLES:
        assert name in checks["refunds"]["detail"]
    assert checks["provider"]["state"] == "ok"
    assert "fail" not in {check.get("state") for check in checks.values()}


@pytest.mark.slow
def test_doctor_fails_a_half_configured_disbursement_naming_what_is_missing(
    mtn: FakeMtn, tmp_path: Path
) -> None:
    env = mtn.env()
    del env["MTN_MOMO_DISBURSEMENT_API_KEY"]

    checks = _doctor(tmp_path, env)

    assert checks["refunds"]["state"] == "fail"
    assert checks["refunds"]["failure"] == "configuration"
    assert checks["refunds"]["detail"].endswith("MTN_MOMO_DISBURSEMENT_API_KEY")
    assert checks["exit"]["code"] == 2
    assert mtn.disbursement.subscription_key not in str(checks)


@pytest.mark.slow
def test_doctor_shows_no_refunds_check_for_the_simulator_without_disbursement_settings(
    tmp_path: Path,
) -> None:
    checks = _doctor(tmp_path, {})

    assert "refunds" not in checks
