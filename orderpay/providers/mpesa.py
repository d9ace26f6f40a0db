"""M-Pesa Daraja behind the Provider protocol: STK Push to a PayBill or a Till, STK Query,
and refunds by reversal (the whole payment, by its receipt) or B2C (a payout, for part of it).

How its answers map (facts: reference/providers.md; meanings: providers/mpesa_answers.py):

- STK push: `ResponseCode "0"` -> Accepted(CheckoutRequestID), which only means the prompt
  went out. "Unable to lock subscriber" (a prompt is open) and rate limits -> ProviderBusy
  (not acted on: the same key may send it again later). A refused phone number -> Declined,
  naming `--provider` (the number may have moved to another network). Any other 4xx -> not
  sent, a configuration to fix. Timeouts, a dropped answer, 5xx -> ProviderUnavailable that
  may have reached M-Pesa: the payment stays `initiated` and is never pushed again (a second
  push prompts the payer again); its callback (which names our reference in its URL) or the
  review queue settles it.
- STK Query: a result code -> succeeded / failed (mpesa_answers.DEFINITE_FAILURES) /
  ambiguous; "being processed" -> pending; an unknown CheckoutRequestID -> unknown. A payment
  whose CheckoutRequestID never arrived cannot be asked about.
- Reversal and B2C answer "accepted" with a ConversationID; their result comes later to the
  result URL (payments/mpesa_callbacks.py). Daraja has no status call that answers at once,
  so refund_status says pending until that result arrives.

Secrets (consumer secret, passkey, initiator password) stay out of repr(), logs and messages.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from orderpay.domain.answers import RemoteState
from orderpay.domain.money import Money
from orderpay.domain.phones import mask_phone, msisdn
from orderpay.errors import ConfigurationError, ProviderBusy, ProviderUnavailable
from orderpay.providers.base import (
    Accepted,
    CollectionRequest,
    Declined,
    PaymentRef,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    StatusAnswer,
)
from orderpay.providers.capabilities import MPESA, RefundMode, refund_mode_for
from orderpay.providers.mpesa_answers import (
    RATE_LIMITS,
    DarajaError,
    error_of,
    is_being_processed,
    is_subscriber_locked,
    names_the_phone,
    result_state,
)
from orderpay.providers.mpesa_api import DarajaApi, kenya_timestamp, stk_password
from orderpay.providers.mpesa_config import (
    MpesaAccount,
    MpesaInitiator,
    check_base_url,
    check_callback_url,
    initiator_from,
    plain,
    whole_shillings,
    with_reference,
)
from orderpay.providers.mtn_endpoints import is_loopback
from orderpay.tls import tls_context

if TYPE_CHECKING:
    from orderpay.config import Settings

log = logging.getLogger(__name__)

STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
REVERSAL_PATH = "/mpesa/reversal/v1/request"
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
TRANSACTION_DESC = "Order payment"  # at most 13 characters
LOCKED_RETRY_SECONDS = 60  # an open prompt ends within about a minute
RATE_RETRY_SECONDS = 5
NOT_A_SUBSCRIBER = (
    "M-Pesa does not take this payer's number (not an M-Pesa subscriber, or a number that "
    "moved to another network): charge again with a new key and --provider"
)
_DIGITS = re.compile(r"^\d{5,7}$")


class MpesaProvider:
    """The M-Pesa Daraja provider. One per process; thread-safe; close() it."""

    name = "mpesa"
    capabilities = MPESA

    def __init__(
        self,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        account: MpesaAccount,
        callback_url: str,
        *,
        initiator: MpesaInitiator | None = None,
        budget: float = 45.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        local_fake = is_loopback(urlsplit(self.base_url).hostname or "")
        self.callback_url = check_callback_url(callback_url, local_fake=local_fake)
        self.account = account
        self.initiator = initiator
        self._client = httpx.Client(
            verify=tls_context(),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "orderpay"},
        )
        self._api = DarajaApi(
            self._client,
            self.base_url,
            consumer_key,
            consumer_secret,
            budget_seconds=budget,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> MpesaProvider:
        """Build it from the MPESA_* settings; ConfigurationError names what is missing."""
        needed = {
            "MPESA_BASE_URL": settings.mpesa_base_url,
            "MPESA_CONSUMER_KEY": plain(settings.mpesa_consumer_key),
            "MPESA_CONSUMER_SECRET": plain(settings.mpesa_consumer_secret),
            "MPESA_SHORTCODE": settings.mpesa_shortcode,
            "MPESA_PASSKEY": plain(settings.mpesa_passkey),
            "MPESA_CALLBACK_URL": plain(settings.mpesa_callback_url),
        }
        missing = [name for name, value in needed.items() if not (value and value.strip())]
        if missing:
            raise ConfigurationError(
                f"the mpesa provider needs {', '.join(missing)} (environment or .env)",
                missing=missing,
            )
        values = {name: str(value).strip() for name, value in needed.items()}
        for name in ("MPESA_SHORTCODE",):
            if not _DIGITS.match(values[name]):
                raise ConfigurationError(f"{name} must be the 5-7 digit shortcode")
        till = (settings.mpesa_till_number or "").strip() or None
        if till is not None and not _DIGITS.match(till):
            raise ConfigurationError("MPESA_TILL_NUMBER must be the 5-7 digit till number")
        budget = 45.0
        if settings.charge_lease_seconds > 0:
            budget = min(budget, settings.charge_lease_seconds / 2)
        return cls(
            values["MPESA_BASE_URL"],
            values["MPESA_CONSUMER_KEY"],
            values["MPESA_CONSUMER_SECRET"],
            MpesaAccount(values["MPESA_SHORTCODE"], values["MPESA_PASSKEY"], till),
            values["MPESA_CALLBACK_URL"],
            initiator=initiator_from(settings),
            budget=budget,
            transport=transport,
        )

    def __repr__(self) -> str:
        kind = "till" if self.account.till_number else "paybill"
        refunds = ", ".join(sorted(mode.value for mode in self.refund_modes)) or "off"
        return (
            f"MpesaProvider(base_url={self.base_url!r}, shortcode={self.account.shortcode!r}, "
            f"{kind}, refunds={refunds})"
        )

    def close(self) -> None:
        self._client.close()

    def check_credentials(self) -> None:
        """Fetch a token now (doctor); ProviderUnavailable says why it cannot."""
        self._api.check_token()

    # Refund configuration.

    @property
    def refund_modes(self) -> frozenset[RefundMode]:
        if self.initiator is None:
            return frozenset()
        if self.initiator.b2c_shortcode:
            return frozenset({RefundMode.FULL_BY_MONEY_ID, RefundMode.PAYOUT})
        return frozenset({RefundMode.FULL_BY_MONEY_ID})

    def check_refunds_configured(self) -> None:
        if self.initiator is None:
            raise ConfigurationError(
                "mpesa refunds need MPESA_INITIATOR_NAME, MPESA_INITIATOR_PASSWORD and "
                "MPESA_CERTIFICATE (and MPESA_B2C_SHORTCODE for partial refunds)",
                missing=["MPESA_INITIATOR_NAME", "MPESA_INITIATOR_PASSWORD", "MPESA_CERTIFICATE"],
            )

    # Charges.

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        reference = request.account_reference
        if not reference:
            raise ConfigurationError("an M-Pesa charge needs our short reference (a bug)")
        timestamp = kenya_timestamp()
        account = self.account
        payer = msisdn(request.payer_phone)
        body = {
            "BusinessShortCode": account.shortcode,
            "Password": stk_password(account.shortcode, account.passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": "CustomerBuyGoodsOnline"
            if account.till_number
            else "CustomerPayBillOnline",
            "Amount": whole_shillings(request.amount),
            "PartyA": payer,
            "PartyB": account.till_number or account.shortcode,
            "PhoneNumber": payer,
            "CallBackURL": with_reference(self.callback_url, "ref", reference),
            "AccountReference": reference,
            "TransactionDesc": TRANSACTION_DESC,
        }
        status, document = self._api.post(STK_PUSH_PATH, body, what="STK push")
        log.info(
            "M-Pesa STK push %s (payer %s): HTTP %s",
            reference,
            mask_phone(request.payer_phone),
            status,
        )
        if status == 200 and isinstance(document, dict):
            checkout = document.get("CheckoutRequestID")
            if str(document.get("ResponseCode")) == "0" and isinstance(checkout, str) and checkout:
                return Accepted(checkout)
            if document.get("ResponseCode") not in (None, ""):
                return Declined(str(document.get("ResponseDescription") or "refused"))
        error = error_of(document)
        if error is not None and is_subscriber_locked(error):
            raise ProviderBusy(
                f"the payer {mask_phone(request.payer_phone)} has an M-Pesa prompt open "
                f"already; retry with the same key in {LOCKED_RETRY_SECONDS} s",
                retry_after=LOCKED_RETRY_SECONDS,
            )
        if error is not None and names_the_phone(error):
            return Declined(NOT_A_SUBSCRIBER)
        advice = "nothing was sent to the payer: check the MPESA_* settings (`orderpay doctor`)"
        raise _refusal(status, error, "STK push", advice)

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        checkout = payment.provider_reference
        if not checkout:
            raise ProviderUnavailable(
                f"payment {payment.reference}'s M-Pesa CheckoutRequestID never arrived, so STK "
                "Query cannot be asked about it; its callback or an operator settles it",
                reached=False,
            )
        timestamp = kenya_timestamp()
        account = self.account
        body = {
            "BusinessShortCode": account.shortcode,
            "Password": stk_password(account.shortcode, account.passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout,
        }
        status, document = self._api.post(STK_QUERY_PATH, body, what="STK query")
        if status == 200 and isinstance(document, dict) and "ResultCode" in document:
            state, reason = result_state(str(document["ResultCode"]).strip())
            return StatusAnswer(state, reason or str(document.get("ResultDesc") or "") or None)
        error = error_of(document)
        if error is not None and is_being_processed(error):
            return StatusAnswer(RemoteState.PENDING, "the payer has not answered yet")
        if error is not None and status == 400 and "checkoutrequestid" in error.message.lower():
            return StatusAnswer(RemoteState.UNKNOWN, error.message)
        raise ProviderUnavailable(
            f"M-Pesa answered the STK query with HTTP {status}"
            + (f" ({error.text})" if error else "")
            + "; asked again later",
            reason=error.code if error else f"http_{status}",
        )

    # Refunds.

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        initiator = self._initiator()
        payment = request.payment
        reference = request.account_reference or str(request.reference)[:12]
        result_url = with_reference(self.callback_url, "refund", reference)
        remarks = (request.reason or "Refund")[:100]
        amount = whole_shillings(request.amount)
        if self._reverses(payment, request.amount):
            path, what = REVERSAL_PATH, "reversal"
            body: dict[str, Any] = {
                "Initiator": initiator.name,
                "SecurityCredential": initiator.security_credential,
                "CommandID": "TransactionReversal",
                "TransactionID": payment.transaction_id,
                "Amount": amount,
                "ReceiverParty": self.account.shortcode,
                "RecieverIdentifierType": "11",  # Daraja's spelling
                "ResultURL": result_url,
                "QueueTimeOutURL": result_url,
                "Remarks": remarks,
                "Occasion": reference,
            }
        else:
            path, what = B2C_PATH, "B2C payout"
            body = {
                "OriginatorConversationID": str(request.reference),
                "InitiatorName": initiator.name,
                "SecurityCredential": initiator.security_credential,
                "CommandID": "BusinessPayment",
                "Amount": amount,
                "PartyA": initiator.b2c_shortcode,
                "PartyB": msisdn(payment.payer_phone),
                "Remarks": remarks,
                "QueueTimeOutURL": result_url,
                "ResultURL": result_url,
                "Occasion": reference,
            }
        status, document = self._api.post(path, body, what=what)
        log.info("M-Pesa %s for refund %s: HTTP %s", what, request.reference, status)
        return self._accepted(status, document, what, "nothing was paid")

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        """Daraja's Transaction Status answers at the result URL, not here: this asks it and
        says pending; the answer settles the refund when it comes (payments/mpesa_callbacks.py).
        A payout is asked about by the OriginatorConversationID we gave it, so even one whose
        request's answer was lost; a reversal only by the ConversationID M-Pesa answered."""
        reversal = self._reverses(refund.payment, refund.amount)
        if self.initiator is None or (reversal and not refund.provider_reference):
            return StatusAnswer(RemoteState.PENDING, "M-Pesa's answer comes to the result URL")
        initiator = self.initiator
        reference = refund.account_reference or str(refund.reference)[:12]
        status_url = with_reference(self.callback_url, "status", reference)
        body = {
            "Initiator": initiator.name,
            "SecurityCredential": initiator.security_credential,
            "CommandID": "TransactionStatusQuery",
            # B2C: the OriginatorConversationID we sent; a reversal: the ConversationID M-Pesa gave.
            "OriginalConversationID": refund.provider_reference
            if reversal
            else str(refund.reference),
            "PartyA": self.account.shortcode if reversal else initiator.b2c_shortcode,
            "IdentifierType": "4",
            "ResultURL": status_url,
            "QueueTimeOutURL": status_url,
            "Remarks": "refund status",
            "Occasion": reference,
        }
        status, document = self._api.post(STATUS_PATH, body, what="Transaction Status query")
        self._accepted(status, document, "Transaction Status query", "nothing was asked")
        return StatusAnswer(
            RemoteState.PENDING, "asked M-Pesa's Transaction Status: the answer comes to the URL"
        )

    def _initiator(self) -> MpesaInitiator:
        self.check_refunds_configured()
        assert self.initiator is not None
        return self.initiator

    def _reverses(self, payment: PaymentRef, amount: Money) -> bool:
        """A refund reverses the payment when it is all of it and its receipt is known; else
        it is a B2C payout (refund_mode_for refused it before anything was stored)."""
        mode = refund_mode_for(
            self.name,
            self.refund_modes,
            payment_amount=payment.amount,
            amount=amount,
            refunded_before=0 if amount == payment.amount else 1,
            money_id=payment.transaction_id,
        )
        return mode is RefundMode.FULL_BY_MONEY_ID

    def _accepted(self, status: int, document: Any, what: str, untouched: str) -> ProviderAnswer:
        """A reversal's, B2C's or status query's synchronous answer."""
        if status == 200 and isinstance(document, dict):
            conversation = document.get("ConversationID")
            if str(document.get("ResponseCode")) == "0" and isinstance(conversation, str):
                return Accepted(conversation)
            if document.get("ResponseCode") not in (None, ""):
                return Declined(str(document.get("ResponseDescription") or "refused"))
        advice = f"{untouched}: check the MPESA_INITIATOR_* settings and MPESA_CERTIFICATE"
        raise _refusal(status, error_of(document), what, advice)


def _refusal(status: int, error: DarajaError | None, what: str, advice: str) -> ProviderUnavailable:
    """The error for an answer that is not an acceptance: a rate limit (busy, not acted on), a
    malformed request (not acted on: `advice` says what to check), or anything else (it may
    have been acted on: never sent again)."""
    if error is not None and error.code in RATE_LIMITS:
        return ProviderBusy(
            f"M-Pesa's {RATE_LIMITS[error.code]} limit refused the {what}; retry with the same "
            f"key in {RATE_RETRY_SECONDS} s",
            retry_after=RATE_RETRY_SECONDS,
        )
    if 400 <= status < 500 and error is not None:
        return ProviderUnavailable(
            f"M-Pesa refused the {what} as malformed ({error.text}); {advice}, then re-run the key",
            reason=error.code or f"http_{status}",
            reached=False,
        )
    return ProviderUnavailable(
        f"M-Pesa answered the {what} with HTTP {status}"
        + (f" ({error.text})" if error else "")
        + ": it may have been acted on, so it is not sent again",
        reason=error.code if error else f"http_{status}",
    )
