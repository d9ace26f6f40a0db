"""What M-Pesa Daraja posts to the callback route, parsed (reference/providers.md): an STK
result, a reversal's or B2C's result, Transaction Status's answer, a C2B confirmation. Each
names our reference through the URL we gave (`ref`, `refund`, `status`). Parsing only:
payments/mpesa_callbacks.py decides what each may move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from orderpay.domain.money import Money
from orderpay.domain.validation import has_unstorable_characters, json_object
from orderpay.errors import InvalidPayload
from orderpay.providers.base import StatusAnswer
from orderpay.providers.mpesa_answers import result_state

CURRENCY = "KES"
MAX_FIELD = 128


@dataclass(frozen=True, slots=True)
class StkResult:
    checkout_id: str
    result_code: str
    description: str
    our_reference: str | None  # from the callback URL's `ref`
    receipt: str | None = None
    amount: Money | None = None

    def as_hint(self) -> StatusAnswer:
        state, reason = result_state(self.result_code)
        return StatusAnswer(state, reason, self.amount, self.receipt)


@dataclass(frozen=True, slots=True)
class RefundResult:
    conversation_id: str
    result_code: str
    description: str
    our_reference: str | None  # from the result URL's `refund`
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusResult:
    """Transaction Status's answer about a refund (the catch-up asked it)."""

    conversation_id: str  # of the status query itself
    result_code: str
    our_reference: str  # the refund's, from the status URL's `status`
    completed: bool  # TransactionStatus "Completed"
    receipt: str | None
    amount: Money | None


@dataclass(frozen=True, slots=True)
class C2bConfirmation:
    receipt: str
    bill_reference: str
    amount: Money | None


Callback = StkResult | RefundResult | StatusResult | C2bConfirmation


def parse_callback(body: bytes, query: Mapping[str, str]) -> Callback:
    """Daraja's three shapes; InvalidPayload (400) for anything else."""
    document, _ = json_object(body)
    stk = _dig(document, "Body", "stkCallback")
    if isinstance(stk, dict):
        return _stk(stk, query.get("ref"))
    result = document.get("Result")
    status_of = _reference(query.get("status"))
    if isinstance(result, dict) and status_of is not None:
        return _status_result(result, status_of)
    if isinstance(result, dict):
        return _result(result, query.get("refund"))
    if "TransID" in document:
        return C2bConfirmation(
            _text(document, "TransID", required=True) or "",
            _text(document, "BillRefNumber") or "",
            _amount(document.get("TransAmount")),
        )
    raise InvalidPayload("not an M-Pesa callback (Body.stkCallback, Result or TransID expected)")


def _stk(stk: dict[str, Any], our_reference: str | None) -> StkResult:
    checkout = _text(stk, "CheckoutRequestID", required=True) or ""
    code = stk.get("ResultCode")
    if isinstance(code, bool) or not isinstance(code, int | str) or str(code).strip() == "":
        raise InvalidPayload("Body.stkCallback.ResultCode is required")
    items = _dig(stk, "CallbackMetadata", "Item")
    metadata: dict[str, Any] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("Name"), str):
                metadata[item["Name"]] = item.get("Value")
    receipt = metadata.get("MpesaReceiptNumber")
    return StkResult(
        checkout,
        str(code).strip(),
        str(stk.get("ResultDesc") or "")[:MAX_FIELD],
        _reference(our_reference),
        receipt[:MAX_FIELD] if isinstance(receipt, str) and receipt.isalnum() else None,
        _amount(metadata.get("Amount")),
    )


def _result(result: dict[str, Any], our_reference: str | None) -> RefundResult:
    conversation = _text(result, "ConversationID", required=True) or ""
    code = result.get("ResultCode")
    if isinstance(code, bool) or not isinstance(code, int | str) or str(code).strip() == "":
        raise InvalidPayload("Result.ResultCode is required")
    return RefundResult(
        conversation,
        str(code).strip(),
        str(result.get("ResultDesc") or "")[:MAX_FIELD],
        _reference(our_reference),
        _text(result, "TransactionID"),
    )


def _status_result(result: dict[str, Any], our_reference: str) -> StatusResult:
    conversation = _text(result, "ConversationID", required=True) or ""
    code = result.get("ResultCode")
    parameters: dict[str, Any] = {}
    listed = _dig(result, "ResultParameters", "ResultParameter")
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict) and isinstance(item.get("Key"), str):
            parameters[item["Key"]] = item.get("Value")
    receipt = parameters.get("ReceiptNo")
    return StatusResult(
        conversation,
        str(code).strip() if isinstance(code, int | str) and not isinstance(code, bool) else "",
        our_reference,
        parameters.get("TransactionStatus") == "Completed",
        receipt if isinstance(receipt, str) and receipt.isalnum() else None,
        _amount(parameters.get("Amount")),
    )


def _dig(document: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    return document


def _text(document: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or has_unstorable_characters(value):
        if required:
            raise InvalidPayload(f"{name} is required (1-{MAX_FIELD} characters)")
        return None
    if len(value) > MAX_FIELD:
        raise InvalidPayload(f"{name} is longer than {MAX_FIELD} characters")
    return value.strip()


def _reference(value: str | None) -> str | None:
    return value if value and value.isalnum() and len(value) <= 32 else None


def _amount(value: Any) -> Money | None:
    """Daraja's amounts: 1.0 in STK metadata, "100.00" in C2B; whole shillings."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        shillings = Decimal(str(value))
    except InvalidOperation:
        return None
    if (
        not shillings.is_finite()
        or shillings < 0
        or shillings != shillings.quantize(Decimal("0.01"))
    ):
        return None
    return Money(int(shillings * 100), CURRENCY)
