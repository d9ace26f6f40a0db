"""How MTN MoMo's answers read: error codes, and the status body of a request to pay or a
refund (both products answer in the same shape)."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from orderpay.domain.money import Money, parse_amount
from orderpay.errors import InvalidInput
from orderpay.providers.base import Accepted, Declined, ProviderAnswer, RemoteState, StatusAnswer

log = logging.getLogger("orderpay.providers.mtn")

ALREADY_SUBMITTED = "RESOURCE_ALREADY_EXIST"
NOT_FOUND = "RESOURCE_NOT_FOUND"
# Errors on MTN's side: the request's fate is unknown.
AMBIGUOUS_CODES = frozenset({"SERVICE_UNAVAILABLE", "INTERNAL_PROCESSING_ERROR"})
# Definite refusals: MTN will never collect this request.
REFUSAL_CODES = frozenset(
    {
        "PAYER_NOT_FOUND",
        "PAYEE_NOT_FOUND",
        "NOT_ALLOWED",
        "NOT_ENOUGH_FUNDS",
        "PAYER_LIMIT_REACHED",
        "PAYEE_NOT_ALLOWED_TO_RECEIVE",
        "NOT_ALLOWED_TARGET_ENVIRONMENT",
        "INVALID_CALLBACK_URL_HOST",
        "INVALID_CURRENCY",
        "COULD_NOT_PERFORM_TRANSACTION",
        "TRANSACTION_CANCELED",
        "APPROVAL_REJECTED",
        "EXPIRED",
    }
)
# Retrying later may work: never a refusal, whatever the body says.
TRANSIENT_STATUSES = frozenset({401, 408, 425, 429})

MAX_MESSAGE = 200
CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MAX_REASON = 128


def status_answer(data: dict[str, Any], reference: str) -> StatusAnswer:
    """What a status body says of request `reference` (for the log)."""
    raw = data.get("status")
    status = raw.upper() if isinstance(raw, str) else None
    transaction = _transaction_id_of(data.get("financialTransactionId"))
    if status == "SUCCESSFUL":
        return StatusAnswer(
            RemoteState.SUCCEEDED, amount=_amount_of(data), transaction_id=transaction
        )
    if status == "FAILED":
        reason = _reason_of(data.get("reason"))
        if reason is not None and reason.upper() not in AMBIGUOUS_CODES:
            return StatusAnswer(RemoteState.FAILED, reason=reason, transaction_id=transaction)
        # No reason, or an error on MTN's side: the request may yet go through (a failed
        # refund would free its amount, a failed charge its order), so it is no final word.
        log.warning(
            "MTN reported request %s FAILED with %s: no definite failure; it is asked again",
            reference,
            f"the ambiguous reason {reason}" if reason else "no reason",
        )
        return StatusAnswer(RemoteState.AMBIGUOUS, reason=reason, transaction_id=transaction)
    if status not in ("PENDING", "CREATED"):
        log.warning("MTN reported an unknown status %r; treating it as pending", raw)
    return StatusAnswer(RemoteState.PENDING)


def _transaction_id_of(raw: Any) -> str | None:
    """MTN's financialTransactionId (a string of digits), if it is one we can store."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if isinstance(raw, str) and CODE.fullmatch(raw.strip()):
        return raw.strip()
    return None


def _reason_of(raw: Any) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("code")
    if isinstance(raw, str) and raw.strip():
        return raw.strip()[:_MAX_REASON]
    return None


def _amount_of(data: dict[str, Any]) -> Money | None:
    amount, currency = data.get("amount"), data.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, str | int):
        return None
    if not isinstance(currency, str):
        return None
    try:
        return parse_amount(str(amount), currency)
    except InvalidInput:
        return None


def submission_answer(
    status: int, code: str | None, reference: str, *, refusals: frozenset[str] = REFUSAL_CODES
) -> ProviderAnswer | None:
    """What a submission's (request to pay, refund) HTTP status and error code mean; None:
    unknown (unavailable). `refusals`: the codes that refuse whatever the 4xx status."""
    if status == 202:
        return Accepted(provider_reference=reference)
    if code == ALREADY_SUBMITTED and 400 <= status < 500:
        return Accepted(provider_reference=reference)  # submitted before: now poll
    definite = code is not None and code not in AMBIGUOUS_CODES
    if (
        definite
        and 400 <= status < 500
        and status not in TRANSIENT_STATUSES
        and (code in refusals or status in (400, 403))
    ):
        assert code is not None
        return Declined(reason=code)
    return None


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def error_code(response: httpx.Response) -> str | None:
    """The `code` of an MTN error body, if it is one we can trust and store."""
    code = _error_body(response).get("code")
    return code if isinstance(code, str) and CODE.fullmatch(code) else None


def error_message(response: httpx.Response) -> str | None:
    """The `message` of an MTN error body (unscrubbed: the caller removes secrets)."""
    message = _error_body(response).get("message")
    return message[:MAX_MESSAGE] if isinstance(message, str) else None


def positive_int(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None
