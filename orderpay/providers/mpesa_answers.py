"""What M-Pesa Daraja's answers mean (reference/providers.md, "M-Pesa Daraja"). Pure.

Daraja answers errors as `{"requestId", "errorCode", "errorMessage"}` and results with a
`ResultCode`. Only a result code proves an outcome; "being processed" (500.001.1001 on the STK
Query) is pending, never failed; a code this module does not know settles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orderpay.domain.answers import RemoteState

# An STK push's result codes that end it without money moving: the payer's answer, or a rule.
DEFINITE_FAILURES = {
    "1": "the payer's M-Pesa balance is insufficient",
    "2": "below M-Pesa's minimum for a transaction",
    "3": "above M-Pesa's maximum for a transaction",
    "4": "the payer's daily M-Pesa limit is reached",
    "17": "M-Pesa refused the same amount to the same payer within 2 minutes (rule 17): "
    "charge again with a new key after 2 minutes",
    "1019": "the prompt expired before the payer answered",
    "1025": "M-Pesa could not send the prompt (push error)",
    "1032": "the payer cancelled the prompt",
    "1037": "the payer's phone could not be reached (off, or out of coverage)",
    "2001": "the payer entered a wrong PIN",
    "2028": "the PayBill or Till does not accept this transaction type (MPESA_TILL_NUMBER?)",
    "8006": "the payer's M-Pesa PIN is locked",
}
SUCCESS = "0"
PENDING_CODE = "500.001.1001"
BEING_PROCESSED = "being processed"
UNABLE_TO_LOCK = "unable to lock subscriber"
RATE_LIMITS = {"500.003.02": "spike arrest", "500.003.03": "quota"}
INVALID_TOKEN = "404.001.03"
BAD_REQUEST = "400.002.02"


@dataclass(frozen=True, slots=True)
class DarajaError:
    code: str
    message: str

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}".strip()


def error_of(document: Any) -> DarajaError | None:
    """Daraja's error shape, if the answer is one."""
    if isinstance(document, dict) and ("errorCode" in document or "errorMessage" in document):
        return DarajaError(
            str(document.get("errorCode", "")), str(document.get("errorMessage", ""))
        )
    return None


def result_state(code: str) -> tuple[RemoteState, str | None]:
    """A result code's state and, for a failure, why (the payer's words)."""
    if code == SUCCESS:
        return RemoteState.SUCCEEDED, None
    if code in DEFINITE_FAILURES:
        return RemoteState.FAILED, f"{code}: {DEFINITE_FAILURES[code]}"
    return RemoteState.AMBIGUOUS, f"result code {code}"


# A reversal of a receipt reversed already: by an earlier request, or on M-Pesa's portal.
ALREADY_REVERSED = "R000001"


def refund_result_state(code: str, description: str) -> tuple[RemoteState, str | None]:
    """A reversal's or B2C's result: 0 paid back; "already reversed" settles nothing (someone
    gave the money back, maybe not this refund); any other code failed that request."""
    if code == SUCCESS:
        return RemoteState.SUCCEEDED, None
    if code == ALREADY_REVERSED:
        return RemoteState.AMBIGUOUS, f"{code}: {description or 'already reversed'}"
    return RemoteState.FAILED, f"{code}: {description}" if description else f"result code {code}"


def is_being_processed(error: DarajaError) -> bool:
    return error.code == PENDING_CODE and BEING_PROCESSED in error.message.lower()


def is_subscriber_locked(error: DarajaError) -> bool:
    return UNABLE_TO_LOCK in error.message.lower()


def names_the_phone(error: DarajaError) -> bool:
    """A refusal of the payer's number (not an M-Pesa subscriber's, as M-Pesa reads it)."""
    return error.code == BAD_REQUEST and "phone" in error.message.lower()
