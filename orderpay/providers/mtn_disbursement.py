"""MTN MoMo Disbursement: refunds of Collection payments (reference/specs.md, "Disbursement
refunds").

Refunds belong to MTN's Disbursement product, with its own subscription key, API user and API
key (MTN_MOMO_DISBURSEMENT_*) and its own token (`POST /disbursement/token/`); base URL and
target environment are Collection's. Two calls:

- `POST /disbursement/v1_0/refund` with our refund id as `X-Reference-Id` (MTN deduplicates on
  it) and `referenceIdToRefund` = the `X-Reference-Id` of the payment's request to pay. 202 ->
  Accepted; 409 `RESOURCE_ALREADY_EXIST` -> Accepted (already submitted); a 4xx with a definite
  code (`INVALID_CURRENCY`, `PAYEE_NOT_FOUND`, `NOT_ALLOWED`, `RESOURCE_NOT_FOUND`: no such
  payment to refund...) -> Declined(code); timeouts, 5xx and anything unreadable -> raise
  ProviderUnavailable (the refund stays `initiated`; the same key retries the same reference).
- `GET /disbursement/v1_0/refund/{reference}`: SUCCESSFUL -> SUCCEEDED, FAILED -> FAILED with
  MTN's reason, PENDING / CREATED / unknown statuses -> PENDING, 404 `RESOURCE_NOT_FOUND` ->
  UNKNOWN ("not visible yet"), as for collections; `financialTransactionId` is kept. Unlike a
  charge's, a refund's FAILED with an ambiguous reason (AMBIGUOUS_CODES) or none is PENDING:
  see MtnDisbursement.refund_status.

No `X-Callback-Url` is sent with a refund: MTN's callback is only a hint (it carries no
reference and no signature) and the route for it handles payments, so a refund is settled by
its status query (right after the request, or by `orderpay reconcile`).
"""

from __future__ import annotations

import logging

from pydantic import SecretStr

from orderpay.errors import ConfigurationError
from orderpay.providers.base import (
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    StatusAnswer,
)
from orderpay.providers.mtn_answers import NOT_FOUND, REFUSAL_CODES
from orderpay.providers.mtn_api import Credentials, MtnApi, reference_of, secret

log = logging.getLogger("orderpay.providers.mtn")

PRODUCT = "disbursement"
REFUND_PATH = "/disbursement/v1_0/refund"
ENV = {
    "subscription_key": "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY",
    "api_user": "MTN_MOMO_DISBURSEMENT_API_USER",
    "api_key": "MTN_MOMO_DISBURSEMENT_API_KEY",
}
# Refusing to refund a payment MTN does not know (RESOURCE_NOT_FOUND) is definite: only
# payments MTN reported SUCCESSFUL are refunded, so the payment is visible by then.
REFUND_REFUSAL_CODES = REFUSAL_CODES | {NOT_FOUND}
# The messages shown in the parties' transaction histories are kept short.
MAX_MESSAGE = 160


def disbursement_credentials(
    subscription_key: str | SecretStr | None, api_user: str | None, api_key: str | SecretStr | None
) -> tuple[Credentials | None, list[str]]:
    """The Disbursement credentials, or None and the MTN_MOMO_DISBURSEMENT_* variables missing."""
    values = {
        "subscription_key": _text(subscription_key),
        "api_user": _text(api_user),
        "api_key": _text(api_key),
    }
    missing = [ENV[name] for name, value in values.items() if not value]
    if missing:
        return None, missing
    credentials = Credentials(
        product=PRODUCT,
        subscription_key=SecretStr(values["subscription_key"]),
        api_user=values["api_user"],
        api_key=SecretStr(values["api_key"]),
        variables=f"{ENV['api_user']}, {ENV['api_key']} and {ENV['subscription_key']}",
    )
    return credentials, []


def refunds_not_configured(missing: list[str]) -> ConfigurationError:
    return ConfigurationError(
        "refunds of MTN payments go through MTN's Disbursement product, which needs "
        f"{', '.join(missing)} (environment or .env)",
        missing=missing,
    )


class MtnDisbursement:
    """Refunds through the Disbursement product (one MtnApi: its own token cache)."""

    def __init__(self, api: MtnApi) -> None:
        self._api = api

    def __repr__(self) -> str:
        return f"MtnDisbursement({self._api!r})"

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        reference = str(request.reference)
        order = str(request.payment.order_id)
        payment = request.payment
        to_refund = reference_of(payment.provider_reference, payment.reference)
        body = {
            "amount": request.amount.as_string(),
            "currency": request.amount.currency,
            "externalId": order,
            "payerMessage": _message(f"Refund for order {order[:8]}", request.reason),
            "payeeNote": _message(f"Refund for order {order[:8]}", request.reason),
            "referenceIdToRefund": to_refund,
        }
        answer, status = self._api.submit(
            REFUND_PATH, reference, body, what="refund request", refusals=REFUND_REFUSAL_CODES
        )
        log.info("MTN refund %s of %s: HTTP %s, %s", reference, to_refund, status, answer)
        return answer

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        reference = reference_of(refund.provider_reference, refund.reference)
        return self._api.status_of(
            f"{REFUND_PATH}/{reference}", reference, what="refund status query"
        )


def _message(prefix: str, reason: str) -> str:
    """`prefix: reason` on one line of printable characters, at most MAX_MESSAGE long."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
    text = f"{prefix}: {cleaned}" if cleaned else prefix
    return text[:MAX_MESSAGE]


def _text(value: str | SecretStr | None) -> str:
    if value is None:
        return ""
    return secret(value).get_secret_value().strip()
