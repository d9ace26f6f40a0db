"""The fake M-Pesa Daraja API (tests/fake_daraja.py) holds Daraja's documented facts: driven here
with plain httpx, its callbacks and results caught by a loopback recorder (tests/http_recorder).

One fake and one recorder serve the whole module (`reset()` between tests); time passes only
through `advance()`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fake_daraja import (
    B2C_SHORTCODE,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    INITIATOR_NAME,
    PASSKEY,
    SHORTCODE,
    FakeDaraja,
)
from tests.http_recorder import Answer, Recorder, recording_server

PHONE = "254708374149"
OTHER_PHONE = "254110000001"
RECEIPT = re.compile(r"^[A-Z0-9]{10}$")

TOKEN = "/oauth/v1/generate"
STKPUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
REVERSAL = "/mpesa/reversal/v1/request"
B2C = "/mpesa/b2c/v3/paymentrequest"
STATUS = "/mpesa/transactionstatus/v1/query"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDaraja]:
    with FakeDaraja() as fake:
        yield fake


@pytest.fixture(scope="module")
def module_receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


@pytest.fixture
def receiver(module_receiver: Recorder) -> Recorder:
    with module_receiver.lock:
        module_receiver.requests.clear()
    module_receiver.answer_with(lambda _request: Answer())
    return module_receiver


@pytest.fixture
def daraja(server: FakeDaraja, receiver: Recorder) -> Iterator[FakeDaraja]:
    server.reset()
    yield server
    server.wait_until_sent()  # nothing of this test reaches the next one's recorder


@pytest.fixture
def api(daraja: FakeDaraja) -> Iterator[Api]:
    with httpx.Client(base_url=daraja.base_url, timeout=5) as client:
        yield Api(daraja, client)


class Api:
    """Plain httpx calls to the fake, with valid bodies unless told otherwise."""

    def __init__(self, daraja: FakeDaraja, client: httpx.Client) -> None:
        self.daraja = daraja
        self.client = client
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.client.get(
                TOKEN,
                params={"grant_type": "client_credentials"},
                auth=(CONSUMER_KEY, CONSUMER_SECRET),
            )
            assert response.status_code == 200, response.text
            self._token = str(response.json()["access_token"])
        return self._token

    def post(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return self.client.post(path, json=body, headers=headers)

    def push_body(self, callback_url: str, **changes: Any) -> dict[str, Any]:
        stamp = self.daraja.timestamp()
        body: dict[str, Any] = {
            "BusinessShortCode": SHORTCODE,
            "Password": self.daraja.password(stamp),
            "Timestamp": stamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 100,
            "PartyA": PHONE,
            "PartyB": SHORTCODE,
            "PhoneNumber": PHONE,
            "CallBackURL": callback_url,
            "AccountReference": "ORD-1001",
            "TransactionDesc": "Order 1001",
        }
        body.update(changes)
        return {name: value for name, value in body.items() if value is not MISSING}

    def push(self, callback_url: str, **changes: Any) -> httpx.Response:
        return self.post(STKPUSH, self.push_body(callback_url, **changes))

    def pushed(self, callback_url: str, **changes: Any) -> str:
        """An accepted push: its CheckoutRequestID."""
        response = self.push(callback_url, **changes)
        assert response.status_code == 200, response.text
        return str(response.json()["CheckoutRequestID"])

    def query(self, checkout_id: str) -> httpx.Response:
        stamp = self.daraja.timestamp()
        return self.post(
            QUERY,
            {
                "BusinessShortCode": SHORTCODE,
                "Password": self.daraja.password(stamp),
                "Timestamp": stamp,
                "CheckoutRequestID": checkout_id,
            },
        )

    def paid(self, callback_url: str, amount: int = 100, phone: str = PHONE) -> str:
        """A push the payer accepted: its receipt."""
        checkout_id = self.pushed(callback_url, Amount=amount, PartyA=phone, PhoneNumber=phone)
        return self.daraja.payer_accepts(checkout_id)

    def reversal_body(self, result_url: str, receipt: str, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Initiator": INITIATOR_NAME,
            "SecurityCredential": self.daraja.security_credential(),
            "CommandID": "TransactionReversal",
            "TransactionID": receipt,
            "Amount": 100,
            "ReceiverParty": SHORTCODE,
            "RecieverIdentifierType": "11",
            "ResultURL": result_url + "/result",
            "QueueTimeOutURL": result_url + "/timeout",
            "Remarks": "Order 1001 refund",
            "Occasion": "",
        }
        body.update(changes)
        return {name: value for name, value in body.items() if value is not MISSING}

    def b2c_body(self, result_url: str, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "OriginatorConversationID": "refund-7f3a9c",
            "InitiatorName": INITIATOR_NAME,
            "SecurityCredential": self.daraja.security_credential(),
            "CommandID": "BusinessPayment",
            "Amount": 40,
            "PartyA": B2C_SHORTCODE,
            "PartyB": PHONE,
            "Remarks": "Partial refund",
            "QueueTimeOutURL": result_url + "/timeout",
            "ResultURL": result_url + "/result",
            "Occasion": "ORD-1001",
        }
        body.update(changes)
        return {name: value for name, value in body.items() if value is not MISSING}

    def status_body(self, result_url: str, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Initiator": INITIATOR_NAME,
            "SecurityCredential": self.daraja.security_credential(),
            "CommandID": "TransactionStatusQuery",
            "PartyA": SHORTCODE,
            "IdentifierType": "4",
            "ResultURL": result_url + "/result",
            "QueueTimeOutURL": result_url + "/timeout",
            "Remarks": "Reconcile",
            "Occasion": "check",
        }
        body.update(changes)
        return body


MISSING: Any = object()


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["errorCode"], body["errorMessage"]


def stk_callback(delivery_body: dict[str, Any]) -> dict[str, Any]:
    callback: dict[str, Any] = delivery_body["Body"]["stkCallback"]
    return callback


def parameters(result: dict[str, Any]) -> dict[str, Any]:
    return {p["Key"]: p.get("Value") for p in result["ResultParameters"]["ResultParameter"]}


# The token.


def test_a_token_is_issued_for_the_consumer_key_and_secret(api: Api) -> None:
    response = api.client.get(
        TOKEN, params={"grant_type": "client_credentials"}, auth=(CONSUMER_KEY, CONSUMER_SECRET)
    )

    assert response.status_code == 200
    assert response.json()["expires_in"] == "3599"
    assert response.json()["access_token"]


def test_wrong_consumer_credentials_get_no_token(api: Api) -> None:
    response = api.client.get(
        TOKEN, params={"grant_type": "client_credentials"}, auth=(CONSUMER_KEY, "wrong")
    )

    assert response.status_code == 400
    assert response.json() == {
        "errorCode": "400.008.01",
        "errorMessage": "Invalid Authentication passed",
    }


def test_a_call_without_a_token_is_refused(api: Api, receiver: Recorder) -> None:
    response = api.client.post(STKPUSH, json=api.push_body(receiver.url))

    assert error_of(response) == (401, "404.001.03", "Invalid Access Token")
    assert response.json()["requestId"]


def test_an_expired_token_is_refused(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    token = api.token()
    daraja.expire_tokens()

    response = api.post(STKPUSH, api.push_body(receiver.url), token=token)

    assert error_of(response) == (401, "404.001.03", "Invalid Access Token")
    assert daraja.prompts(PHONE) == 0


def test_a_token_lasts_3599_seconds_of_the_fakes_clock(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    token = api.token()
    daraja.advance(3598)
    assert api.post(QUERY, {}, token=token).status_code == 400  # authorised, bad body

    daraja.advance(1)

    assert api.post(QUERY, {}, token=token).status_code == 401


# STK Push: what is accepted.


def test_an_accepted_push_opens_a_prompt_on_the_payers_phone(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    response = api.push(receiver.url)

    assert response.status_code == 200
    body = response.json()
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"
    assert re.fullmatch(r"ws_CO_\d+", body["CheckoutRequestID"])
    assert body["MerchantRequestID"]
    assert daraja.prompts(PHONE) == 1
    assert daraja.checkout(body["CheckoutRequestID"]).state == "open"


def test_a_re_sent_push_prompts_the_payer_again(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    body = api.push_body(receiver.url)
    first = api.post(STKPUSH, body).json()["CheckoutRequestID"]
    daraja.payer_cancels(first)
    daraja.advance(121)  # past rule 17's two minutes

    again = api.post(STKPUSH, body)  # the very same request

    assert again.status_code == 200
    assert again.json()["CheckoutRequestID"] != first
    assert daraja.prompts(PHONE) == 2
    assert daraja.checkout_ids(PHONE) == [first, again.json()["CheckoutRequestID"]]


def test_a_push_to_a_payer_with_an_open_prompt_cannot_lock_the_subscriber(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    api.pushed(receiver.url)

    response = api.push(receiver.url, Amount=250)

    assert error_of(response) == (
        500,
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )
    assert daraja.prompts(PHONE) == 1
    assert len(daraja.checkout_ids(PHONE)) == 1


def test_the_same_amount_to_the_same_payer_within_two_minutes_is_rule_limited(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.payer_accepts(api.pushed(receiver.url))
    daraja.advance(119)

    second = api.pushed(receiver.url)

    assert daraja.prompts(PHONE) == 1
    assert api.query(second).json()["ResultCode"] == "17"
    callbacks = [stk_callback(d.body) for d in daraja.wait_for_deliveries(2)]
    assert callbacks[1] == {
        "MerchantRequestID": daraja.checkout(second).merchant_request_id,
        "CheckoutRequestID": second,
        "ResultCode": 17,
        "ResultDesc": "Rule limited.",
    }
    assert len(daraja.collected()) == 1


def test_another_amount_to_the_same_payer_within_two_minutes_prompts(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.payer_accepts(api.pushed(receiver.url))

    api.pushed(receiver.url, Amount=101)

    assert daraja.prompts(PHONE) == 2


def test_a_till_push_pays_the_till_it_names(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(
        receiver.url, TransactionType="CustomerBuyGoodsOnline", PartyB="5273109"
    )

    assert daraja.checkout(checkout_id).party_b == "5273109"
    assert daraja.checkout(checkout_id).transaction_type == "CustomerBuyGoodsOnline"


def test_a_string_of_digits_is_a_whole_amount(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    assert daraja.checkout(api.pushed(receiver.url, Amount="100")).amount == 100


def test_a_callback_url_on_loopback_may_be_plain_http(api: Api, receiver: Recorder) -> None:
    assert api.push(receiver.url.replace("127.0.0.1", "localhost")).status_code == 200


# STK Push: Daraja's strict checks (400.002.02 "Bad Request - Invalid <field>", no prompt).


@pytest.mark.parametrize("amount", [10.5, 100.0, "100.00", "10.5", 0, -5, True, None, "ten"])
def test_a_decimal_or_non_positive_amount_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder, amount: Any
) -> None:
    response = api.push(receiver.url, Amount=amount)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid Amount")
    assert daraja.prompts(PHONE) == 0


@pytest.mark.parametrize(
    "phone", ["0708374149", "+254708374149", "25470837414", "254208374149", "2547083741490"]
)
def test_a_phone_number_not_of_the_form_2547_or_2541_is_refused(
    api: Api, receiver: Recorder, phone: str
) -> None:
    response = api.push(receiver.url, PartyA=phone, PhoneNumber=phone)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid PhoneNumber")


def test_a_2541_phone_number_is_accepted(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    api.pushed(receiver.url, PartyA=OTHER_PHONE, PhoneNumber=OTHER_PHONE)

    assert daraja.prompts(OTHER_PHONE) == 1


def test_party_a_must_be_the_phone_number(api: Api, receiver: Recorder) -> None:
    response = api.push(receiver.url, PartyA=OTHER_PHONE)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid PhoneNumber")


def test_a_wrong_password_is_refused(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    stamp = daraja.timestamp()
    wrong = FakeDaraja.password(stamp, passkey=PASSKEY[::-1])

    response = api.push(receiver.url, Timestamp=stamp, Password=wrong)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid Password")


@pytest.mark.parametrize("offset", [-301, 301, -3 * 3600])
def test_a_timestamp_more_than_five_minutes_from_kenya_time_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder, offset: int
) -> None:
    # -3 h: the time in UTC, not in Kenya (UTC+3).
    stamp = daraja.timestamp(offset)

    response = api.push(receiver.url, Timestamp=stamp, Password=daraja.password(stamp))

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid Timestamp")


def test_a_timestamp_within_five_minutes_is_accepted(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    stamp = daraja.timestamp(-290)

    assert api.push(receiver.url, Timestamp=stamp, Password=daraja.password(stamp)).is_success


def test_another_business_shortcode_is_refused(api: Api, receiver: Recorder) -> None:
    response = api.push(receiver.url, BusinessShortCode="600000")

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid BusinessShortCode")


def test_an_unknown_transaction_type_is_refused(api: Api, receiver: Recorder) -> None:
    response = api.push(receiver.url, TransactionType="CustomerPayBill")

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid TransactionType")


def test_a_paybill_push_must_pay_the_shortcode(api: Api, receiver: Recorder) -> None:
    response = api.push(receiver.url, PartyB="600000")

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid PartyB")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hooks/daraja/t0k3n/",
        "ftp://127.0.0.1/cb",
        "not a url",
        "https://example.com/mpesa/t0k3n/",
        "https://example.com/hooks/SafariCom/",
        "https://example.com/hooks/?query=1",
        "https://example.com/sql/",
        "https://example.com/exec/",
        "https://example.com/cmd/",
    ],
)
def test_a_callback_url_not_https_or_with_a_forbidden_word_is_refused(api: Api, url: str) -> None:
    response = api.push(url)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid CallBackURL")


@pytest.mark.parametrize("value", [None, "", MISSING, "ORD-10012345X"])
def test_an_account_reference_missing_empty_or_over_12_characters_is_refused(
    api: Api, receiver: Recorder, value: Any
) -> None:
    response = api.push(receiver.url, AccountReference=value)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid AccountReference")


@pytest.mark.parametrize("value", [None, "", MISSING, "Order 10012345"])
def test_a_transaction_description_missing_empty_or_over_13_characters_is_refused(
    api: Api, receiver: Recorder, value: Any
) -> None:
    response = api.push(receiver.url, TransactionDesc=value)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid TransactionDesc")


def test_a_body_that_is_not_json_is_refused(api: Api, daraja: FakeDaraja) -> None:
    response = api.client.post(
        STKPUSH, content=b"Amount=100", headers={"Authorization": f"Bearer {api.token()}"}
    )

    assert error_of(response)[:2] == (400, "400.002.05")
    assert daraja.prompts(PHONE) == 0


# The payer.


def test_an_accepted_prompt_calls_back_with_the_receipt(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    url = receiver.url + "/hooks/daraja/t0k3n/?order=ORD-1001"
    checkout_id = api.pushed(url)

    receipt = daraja.payer_accepts(checkout_id)

    assert RECEIPT.fullmatch(receipt)
    [request] = receiver.wait_for(1)
    assert request.path == "/hooks/daraja/t0k3n/?order=ORD-1001"
    checkout = daraja.checkout(checkout_id)
    assert request.json() == {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": checkout.merchant_request_id,
                "CheckoutRequestID": checkout_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 100.0},
                        {"Name": "MpesaReceiptNumber", "Value": receipt},
                        {"Name": "Balance"},
                        {"Name": "TransactionDate", "Value": int(daraja.timestamp())},
                        {"Name": "PhoneNumber", "Value": int(PHONE)},
                    ]
                },
            }
        }
    }
    assert daraja.collected()[receipt].amount == 100


@pytest.mark.parametrize(
    ("answer", "code", "description"),
    [
        ("payer_cancels", 1032, "Request cancelled by user"),
        ("payer_enters_wrong_pin", 2001, "The initiator information is invalid."),
        ("payer_has_no_funds", 1, "The balance is insufficient for the transaction."),
        ("payer_unreachable", 1037, "DS timeout user cannot be reached"),
    ],
)
def test_a_prompt_that_does_not_pay_calls_back_its_result_code_without_metadata(
    api: Api, daraja: FakeDaraja, receiver: Recorder, answer: str, code: int, description: str
) -> None:
    checkout_id = api.pushed(receiver.url)

    getattr(daraja, answer)(checkout_id)

    [request] = receiver.wait_for(1)
    callback = stk_callback(request.json())
    assert (callback["ResultCode"], callback["ResultDesc"]) == (code, description)
    assert "CallbackMetadata" not in callback
    assert api.query(checkout_id).json()["ResultCode"] == str(code)
    assert daraja.collected() == {}


def test_an_unanswered_prompt_stays_open_until_the_prompt_timeout(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)

    daraja.advance(59)

    assert daraja.checkout(checkout_id).state == "open"
    assert daraja.wait_until_sent() == []


def test_an_unanswered_prompt_ends_unreachable_after_the_prompt_timeout(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)

    daraja.advance(60)

    assert daraja.checkout(checkout_id).result_code == 1037
    [request] = receiver.wait_for(1)
    assert stk_callback(request.json())["ResultCode"] == 1037


def test_a_payer_in_auto_mode_answers_as_the_push_arrives(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.auto = {PHONE: "accept", OTHER_PHONE: "cancel"}

    paid = api.pushed(receiver.url)
    cancelled = api.pushed(receiver.url, PartyA=OTHER_PHONE, PhoneNumber=OTHER_PHONE)

    assert daraja.checkout(paid).result_code == 0
    assert daraja.checkout(cancelled).result_code == 1032
    assert len(receiver.wait_for(2)) == 2


def test_an_ended_prompt_cannot_be_answered_again(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    daraja.payer_cancels(checkout_id)

    with pytest.raises(ValueError, match="no open prompt"):
        daraja.payer_accepts(checkout_id)


# STK Query.


def test_a_query_while_the_prompt_is_open_is_being_processed(api: Api, receiver: Recorder) -> None:
    response = api.query(api.pushed(receiver.url))

    assert error_of(response) == (500, "500.001.1001", "The transaction is being processed")


def test_a_query_of_an_ended_push_gives_its_result_code_as_a_string(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    daraja.payer_accepts(checkout_id)

    response = api.query(checkout_id)

    assert response.status_code == 200
    assert response.json() == {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": daraja.checkout(checkout_id).merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResultCode": "0",
        "ResultDesc": "The service request is processed successfully.",
    }


def test_a_query_of_an_unknown_checkout_is_invalid(api: Api) -> None:
    response = api.query("ws_CO_000000000000001")

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")


def test_a_query_checks_the_password_like_the_push(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    stamp = daraja.timestamp()
    body = {
        "BusinessShortCode": SHORTCODE,
        "Password": FakeDaraja.password(daraja.timestamp(-60)),
        "Timestamp": stamp,
        "CheckoutRequestID": checkout_id,
    }

    response = api.post(QUERY, body)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid Password")


def test_a_known_checkout_can_be_unknown_to_the_next_queries(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    daraja.payer_accepts(checkout_id)
    daraja.query_not_found_for(checkout_id, 2)

    answers = [api.query(checkout_id).status_code for _ in range(3)]

    assert answers == [400, 400, 200]


# Callbacks: lost, repeated, held, from elsewhere; never retried.


def test_dropped_callbacks_are_never_sent(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    daraja.drop_callbacks(1)
    first = api.pushed(receiver.url)
    daraja.payer_accepts(first)
    second = api.pushed(receiver.url, PartyA=OTHER_PHONE, PhoneNumber=OTHER_PHONE)
    daraja.payer_accepts(second)

    sent = daraja.wait_until_sent()

    assert [stk_callback(d.body)["CheckoutRequestID"] for d in sent] == [second]
    assert [stk_callback(d.body)["CheckoutRequestID"] for d in daraja.dropped()] == [first]


def test_a_duplicated_callback_is_sent_that_many_times(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.duplicate_callbacks(3)

    daraja.payer_accepts(api.pushed(receiver.url))

    requests = receiver.wait_for(3)
    assert len({r.body for r in requests}) == 1
    assert len(daraja.wait_until_sent()) == 3


def test_held_callbacks_are_sent_when_released(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.hold_callbacks()
    daraja.payer_accepts(api.pushed(receiver.url))
    assert daraja.wait_until_sent() == []
    assert daraja.held() == 1

    daraja.release_callbacks()

    assert len(receiver.wait_for(1)) == 1


def test_callback_headers_are_sent_with_every_callback(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.callback_headers({"X-Forwarded-For": "196.201.214.200"})

    daraja.payer_cancels(api.pushed(receiver.url))

    [request] = receiver.wait_for(1)
    assert request.headers["x-forwarded-for"] == "196.201.214.200"


def test_a_callback_answered_with_an_error_is_not_retried(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receiver.answer_with(lambda _request: Answer(status=500))

    daraja.payer_accepts(api.pushed(receiver.url))

    [delivery] = daraja.wait_until_sent()
    assert delivery.status == 500
    assert receiver.count() == 1


def test_a_callback_nobody_receives_is_recorded_as_an_error(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.payer_accepts(api.pushed("http://127.0.0.1:9/hooks/daraja/t0k3n/"))

    [delivery] = daraja.wait_until_sent()
    assert delivery.status is None
    assert delivery.error == "ConnectError"


# Lost answers and injected failures.


def test_a_lost_push_answer_still_prompts_the_payer(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.lose_next_answer("stkpush")

    with pytest.raises(httpx.RemoteProtocolError):
        api.push(receiver.url)

    assert daraja.prompts(PHONE) == 1
    assert daraja.last("stkpush").status is None
    assert api.push(receiver.url).status_code == 500  # the prompt is open: cannot lock


def test_a_lost_query_answer_is_a_transport_error_and_the_next_is_answered(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    daraja.lose_next_answer("query")

    with pytest.raises(httpx.TransportError):
        api.query(checkout_id)

    assert api.query(checkout_id).status_code == 500  # still being processed


@pytest.mark.parametrize("status", [500, 503])
def test_a_failed_push_does_not_prompt(
    api: Api, daraja: FakeDaraja, receiver: Recorder, status: int
) -> None:
    daraja.fail("stkpush", status)

    assert api.push(receiver.url).status_code == status
    assert daraja.prompts(PHONE) == 0
    assert api.push(receiver.url).status_code == 200


def test_spike_arrest_answers_500_003_02_without_acting(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.spike_arrest("stkpush", times=2)

    answers = [error_of(api.push(receiver.url)) for _ in range(2)]

    assert answers == [(500, "500.003.02", "Spike arrest violation")] * 2
    assert daraja.prompts(PHONE) == 0


# Reversal.


def test_a_reversal_with_the_initiators_credential_reverses_the_full_amount(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)

    response = api.post(REVERSAL, api.reversal_body(receiver.url, receipt))

    assert response.status_code == 200
    accepted = response.json()
    assert accepted["ResponseCode"] == "0"
    assert accepted["ResponseDescription"] == "Accept the service request successfully."
    assert accepted["ConversationID"].startswith("AG_")
    result = receiver.wait_for(2)[1]
    assert result.path == "/result"
    body = result.json()["Result"]
    assert (body["ResultType"], body["ResultCode"]) == (0, 0)
    assert body["ConversationID"] == accepted["ConversationID"]
    assert body["OriginatorConversationID"] == accepted["OriginatorConversationID"]
    assert body["TransactionID"] == daraja.reversed()[receipt]
    assert body["ReferenceData"] == {
        "ReferenceItem": {"Key": "QueueTimeoutURL", "Value": receiver.url + "/timeout"}
    }
    values = parameters(body)
    assert values["OriginalTransactionID"] == receipt
    assert values["Amount"] == 100
    assert values["CreditPartyPublicName"] == f"{PHONE} - JOHN DOE"
    assert values["DebitPartyPublicName"] == "174379 - SHOP"
    assert daraja.balance() == 0


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_a_reversal_with_a_bad_security_credential_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder, password: str | None
) -> None:
    receipt = api.paid(receiver.url)
    credential = (
        daraja.security_credential(password) if password else base64.b64encode(b"x").decode()
    )

    response = api.post(
        REVERSAL, api.reversal_body(receiver.url, receipt, SecurityCredential=credential)
    )

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid SecurityCredential")
    assert daraja.reversed() == {}


def test_a_reversal_by_another_initiator_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)

    response = api.post(REVERSAL, api.reversal_body(receiver.url, receipt, Initiator="other"))

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid Initiator")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("CommandID", "Reversal"),
        ("RecieverIdentifierType", "4"),
        ("ReceiverParty", "600000"),
        ("Remarks", ""),
        ("Remarks", "x" * 101),
        ("ResultURL", "http://example.com/result"),
        ("QueueTimeOutURL", MISSING),
        ("Amount", 99.5),
    ],
)
def test_a_reversal_with_a_field_daraja_refuses_is_invalid(
    api: Api, daraja: FakeDaraja, receiver: Recorder, field: str, value: Any
) -> None:
    response = api.post(REVERSAL, api.reversal_body(receiver.url, "NLJ7RT61SV", **{field: value}))

    assert error_of(response) == (400, "400.002.02", f"Bad Request - Invalid {field}")


def test_a_partial_reversal_fails_with_an_invalid_amount(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)

    assert api.post(REVERSAL, api.reversal_body(receiver.url, receipt, Amount=40)).is_success

    result = receiver.wait_for(2)[1].json()["Result"]
    assert (result["ResultCode"], result["ResultDesc"]) == ("R000002", "The Amount is invalid.")
    assert daraja.reversed() == {}
    assert daraja.balance() == 100


def test_a_second_reversal_of_a_receipt_fails_as_already_reversed(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)
    api.post(REVERSAL, api.reversal_body(receiver.url, receipt))

    assert api.post(REVERSAL, api.reversal_body(receiver.url, receipt)).is_success

    result = receiver.wait_for(3)[2].json()["Result"]
    assert (result["ResultCode"], result["ResultDesc"]) == (
        "R000001",
        "The transaction has already been reversed.",
    )
    assert daraja.balance() == 0


def test_a_reversal_of_an_unknown_receipt_fails(api: Api, receiver: Recorder) -> None:
    assert api.post(REVERSAL, api.reversal_body(receiver.url, "NLJ7RT61SV")).is_success

    result = receiver.wait_for(1)[0].json()["Result"]
    assert (result["ResultCode"], result["ResultDesc"]) == (
        "R000002",
        "The OriginalTransactionID is invalid.",
    )


def test_reversals_wait_for_complete_refunds_when_not_completed_at_once(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.refunds_complete_at_once = False
    receipt = api.paid(receiver.url)
    api.post(REVERSAL, api.reversal_body(receiver.url, receipt))
    assert len(daraja.wait_until_sent()) == 1  # the STK callback only
    assert daraja.reversed() == {}

    assert daraja.complete_refunds() == 1

    assert receipt in daraja.reversed()
    assert receiver.wait_for(2)[1].path == "/result"


def test_a_lost_reversal_answer_still_reverses(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)
    daraja.lose_next_answer("reversal")

    with pytest.raises(httpx.RemoteProtocolError):
        api.post(REVERSAL, api.reversal_body(receiver.url, receipt))

    assert receipt in daraja.reversed()


# B2C.


def test_a_b2c_payment_pays_the_phone_and_posts_its_result(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    response = api.post(B2C, api.b2c_body(receiver.url))

    assert response.status_code == 200
    accepted = response.json()
    assert accepted["OriginatorConversationID"] == "refund-7f3a9c"
    assert accepted["ResponseCode"] == "0"
    [payout] = daraja.paid_out()
    assert (payout.originator_conversation_id, payout.phone, payout.amount) == (
        "refund-7f3a9c",
        PHONE,
        40,
    )
    result = receiver.wait_for(1)[0].json()["Result"]
    assert result["ResultCode"] == 0
    assert result["OriginatorConversationID"] == "refund-7f3a9c"
    assert result["ConversationID"] == accepted["ConversationID"]
    values = parameters(result)
    assert values["TransactionAmount"] == 40
    assert values["TransactionReceipt"] == payout.receipt == result["TransactionID"]
    assert values["ReceiverPartyPublicName"] == f"{PHONE} - JOHN DOE"
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", values["TransactionCompletedDateTime"])


def test_a_re_sent_b2c_pays_again(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    body = api.b2c_body(receiver.url)

    api.post(B2C, body)
    api.post(B2C, body)

    payouts = daraja.paid_out()
    assert [p.originator_conversation_id for p in payouts] == ["refund-7f3a9c"] * 2
    assert payouts[0].receipt != payouts[1].receipt
    assert daraja.balance() == -80


def test_a_b2c_with_a_bad_security_credential_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    body = api.b2c_body(receiver.url, SecurityCredential=daraja.security_credential("guess"))

    response = api.post(B2C, body)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid SecurityCredential")
    assert daraja.paid_out() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("OriginatorConversationID", MISSING),
        ("InitiatorName", "someone"),
        ("Amount", 40.5),
        ("PartyA", SHORTCODE),
        ("PartyB", "0708374149"),
        ("CommandID", "TransactionReversal"),
    ],
)
def test_a_b2c_with_a_field_daraja_refuses_is_invalid(
    api: Api, daraja: FakeDaraja, receiver: Recorder, field: str, value: Any
) -> None:
    response = api.post(B2C, api.b2c_body(receiver.url, **{field: value}))

    assert error_of(response) == (400, "400.002.02", f"Bad Request - Invalid {field}")
    assert daraja.paid_out() == []


def test_a_lost_b2c_answer_still_pays(api: Api, daraja: FakeDaraja, receiver: Recorder) -> None:
    daraja.lose_next_answer("b2c")

    with pytest.raises(httpx.RemoteProtocolError):
        api.post(B2C, api.b2c_body(receiver.url))

    assert len(daraja.paid_out()) == 1


# Transaction Status.


def test_the_status_of_a_receipt_is_posted_as_completed(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    receipt = api.paid(receiver.url)

    response = api.post(STATUS, api.status_body(receiver.url, TransactionID=receipt))

    assert response.status_code == 200
    result = receiver.wait_for(2)[1].json()["Result"]
    assert result["OriginatorConversationID"] == response.json()["OriginatorConversationID"]
    values = parameters(result)
    assert values["ReceiptNo"] == receipt
    assert values["TransactionStatus"] == "Completed"
    assert values["Amount"] == 100
    assert values["ReasonType"] == "Pay Bill Online"


def test_the_status_of_a_b2c_payment_by_its_originator_conversation_id(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    api.post(B2C, api.b2c_body(receiver.url))

    api.post(
        STATUS,
        api.status_body(receiver.url, OriginalConversationID="refund-7f3a9c", PartyA=B2C_SHORTCODE),
    )

    values = parameters(receiver.wait_for(2)[1].json()["Result"])
    assert values["ReceiptNo"] == daraja.paid_out()[0].receipt
    assert values["Amount"] == 40


def test_the_status_of_an_unknown_receipt_fails(api: Api, receiver: Recorder) -> None:
    api.post(STATUS, api.status_body(receiver.url, TransactionID="NLJ7RT61SV"))

    result = receiver.wait_for(1)[0].json()["Result"]
    assert result["ResultCode"] == "R000002"
    assert "ResultParameters" not in result


def test_a_status_query_with_a_bad_security_credential_is_refused(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    body = api.status_body(
        receiver.url, TransactionID="NLJ7RT61SV", SecurityCredential="bm90IGEgY3JlZGVudGlhbA=="
    )

    response = api.post(STATUS, body)

    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid SecurityCredential")
    assert daraja.wait_until_sent() == []


# C2B confirmations.


def test_a_paybill_payment_also_posts_a_c2b_confirmation_with_a_hashed_msisdn(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.register_c2b(receiver.url + "/c2b/confirmation")

    receipt = api.paid(receiver.url, amount=250)

    confirmation = next(r for r in receiver.wait_for(2) if r.path == "/c2b/confirmation")
    assert confirmation.json() == {
        "TransactionType": "Pay Bill",
        "TransID": receipt,
        "TransTime": daraja.timestamp(),
        "TransAmount": "250.00",
        "BusinessShortCode": SHORTCODE,
        "BillRefNumber": "ORD-1001",
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": hashlib.sha256(PHONE.encode()).hexdigest(),
        "FirstName": "JOHN",
    }
    assert len(daraja.collected()) == 1  # one payment, two records


def test_the_c2b_msisdn_can_be_plain_digits(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.hashed_msisdn = False
    daraja.register_c2b(receiver.url + "/c2b/confirmation")

    api.paid(receiver.url)

    confirmation = next(r for r in receiver.wait_for(2) if r.path == "/c2b/confirmation")
    assert confirmation.json()["MSISDN"] == PHONE


def test_a_payment_that_fails_posts_no_c2b_confirmation(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    daraja.register_c2b(receiver.url + "/c2b/confirmation")

    daraja.payer_cancels(api.pushed(receiver.url))

    assert [d.kind for d in daraja.wait_until_sent()] == ["stk"]


# Money and the request log.


def test_the_money_held_is_collected_less_reversed_less_paid_out(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    first = api.paid(receiver.url, amount=100)
    second = api.paid(receiver.url, amount=300, phone=OTHER_PHONE)
    api.post(REVERSAL, api.reversal_body(receiver.url, first))
    api.post(B2C, api.b2c_body(receiver.url, Amount=50, PartyB=OTHER_PHONE))

    assert {r: c.amount for r, c in daraja.collected().items()} == {first: 100, second: 300}
    assert list(daraja.reversed()) == [first]
    assert [p.amount for p in daraja.paid_out()] == [50]
    assert daraja.balance() == 250


def test_the_request_log_records_each_kind(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    checkout_id = api.pushed(receiver.url)
    api.query(checkout_id)
    api.query(checkout_id)

    assert [daraja.calls(kind) for kind in ("token", "stkpush", "query")] == [1, 1, 2]
    assert daraja.last("query").status == 500
    assert daraja.last("stkpush").json()["AccountReference"] == "ORD-1001"
    assert [r.kind for r in daraja.requests] == ["token", "stkpush", "query", "query"]


# The environment for orderpay.


def test_env_names_orderpays_settings_and_the_certificate_to_encrypt_with(
    api: Api, daraja: FakeDaraja, receiver: Recorder
) -> None:
    env = daraja.env("https://shop.example/api/webhooks/daraja/t0k3n/", "t0k3n")
    with open(env["MPESA_CERTIFICATE"], "rb") as pem:
        public = x509.load_pem_x509_certificate(pem.read()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    encrypted = public.encrypt(env["MPESA_INITIATOR_PASSWORD"].encode(), padding.PKCS1v15())
    credential = base64.b64encode(encrypted).decode()

    response = api.post(B2C, api.b2c_body(receiver.url, SecurityCredential=credential))

    assert response.status_code == 200
    assert env["MPESA_BASE_URL"] == daraja.base_url
    assert env["MPESA_SHORTCODE"] == SHORTCODE
    assert env["MPESA_INITIATOR_NAME"] == INITIATOR_NAME
    assert env["MPESA_B2C_SHORTCODE"] == B2C_SHORTCODE


def test_env_without_refunds_leaves_the_initiator_out(daraja: FakeDaraja) -> None:
    env = daraja.env("https://shop.example/api/webhooks/daraja/t0k3n/", "t0k3n", refunds=False)

    assert sorted(env) == [
        "MPESA_BASE_URL",
        "MPESA_CALLBACK_TOKEN",
        "MPESA_CALLBACK_URL",
        "MPESA_CONSUMER_KEY",
        "MPESA_CONSUMER_SECRET",
        "MPESA_PASSKEY",
        "MPESA_SHORTCODE",
    ]
