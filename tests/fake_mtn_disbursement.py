"""The Disbursement product of the fake MTN (refunds), mounted on FakeMtn's server.

    mtn.disbursement.keys()                 # MtnProvider's `disbursement` argument
    mtn.disbursement.refund(reference)      # a stored refund (Refund), or None
    mtn.disbursement.refunds                # every stored refund, in order
    mtn.calls("disbursement_token"), mtn.calls("refund"), mtn.calls("refund_status")
    mtn.fail("refund", 500) / mtn.hang("refund", 30) / mtn.fail("refund", 400, "PAYEE_NOT_FOUND")
    mtn.disbursement.script_payee(payee, "FAILED", "PAYEE_NOT_FOUND")   # outcome per payee
    mtn.disbursement.set_status(reference, "PENDING")                    # outcome per refund
    mtn.disbursement.pending_for = 60       # every refund PENDING for 60 s of the fake's clock
    mtn.disbursement.late_404(reference, polls=2)
    mtn.unroute("refund")                   # the gateway's 404 for a path it does not know

What it enforces, like the collection side (strict: the real refund API is not yet observed
against the sandbox, reference/specs.md):
- `POST /disbursement/token/`: Content-Length, the Disbursement subscription key (Collection's
  is refused) and the Disbursement API user and key as Basic credentials.
- `POST /disbursement/v1_0/refund`: a Disbursement token (a Collection token is refused), the
  subscription key, target environment, an X-Reference-Id UUID v4 (a reused one: 409
  RESOURCE_ALREADY_EXIST), a body with a decimal-string amount, a currency, an externalId and
  `referenceIdToRefund`, which must name a request to pay MTN holds (else 404
  RESOURCE_NOT_FOUND) that SUCCEEDED (else 400 NOT_ALLOWED), in the same currency (else 400
  INVALID_CURRENCY), for no more than what its refunds that did not fail leave (else 400
  NOT_ALLOWED). 202 with an empty body.
- `GET /disbursement/v1_0/refund/{reference}`: `{amount, currency, financialTransactionId,
  externalId, payee, status, reason}`; SUCCESSFUL unless scripted; 404 RESOURCE_NOT_FOUND
  before a refund is stored (or while `late_404` hides it).
It sends no callbacks for refunds (orderpay does not ask for them).
"""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orderpay.providers.mtn_config import MtnKeys
from tests.fake_mtn_gateway import (
    DECIMAL,
    api_call_refused,
    error,
    reference_id,
    token_response,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.fake_mtn import FakeMtn

    Handler = Callable[[Request, bytes], Response]
    Endpoint = Callable[[str, Handler], Callable[[Request], Awaitable[Response]]]

DISBURSEMENT_API_USER = "b2f4c6e8-1a3c-4e5f-8a7b-9c0d1e2f3a4b"
DISBURSEMENT_API_KEY = "fake-mtn-disbursement-api-key-3d81c0"
DISBURSEMENT_SUBSCRIPTION_KEY = "fake-mtn-disbursement-key-5e09aa"

DISBURSEMENT_TOKEN_PATH = "/disbursement/token/"
REFUND_PATH = "/disbursement/v1_0/refund"
REFUND_STATUS_PATH = "/disbursement/v1_0/refund/{reference}"
KINDS = {
    "disbursement_token": DISBURSEMENT_TOKEN_PATH,
    "refund": REFUND_PATH,
    "refund_status": REFUND_STATUS_PATH,
}


@dataclass
class Refund:
    """One refund, as MTN stores it."""

    reference: str
    reference_to_refund: str
    payee: str  # the payer of the request to pay refunded
    amount: str
    currency: str
    external_id: str
    payer_message: str
    payee_note: str
    callback_url: str | None
    created_at: float  # on the fake's clock
    financial_transaction_id: str
    # Its outcome once no longer pending: the payee's script when it was made (a later script
    # changes only later refunds), or forced by set_status.
    outcome: tuple[str, str | None] = ("SUCCESSFUL", None)
    forced: tuple[str, str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # merged into status bodies


class FakeDisbursement:
    """State and routes of the Disbursement product; shares FakeMtn's lock, clock and log."""

    def __init__(
        self,
        mtn: FakeMtn,
        *,
        api_user: str = DISBURSEMENT_API_USER,
        api_key: str = DISBURSEMENT_API_KEY,
        subscription_key: str = DISBURSEMENT_SUBSCRIPTION_KEY,
    ) -> None:
        self._mtn = mtn
        self.api_user = api_user
        self.api_key = api_key
        self.subscription_key = subscription_key
        self.pending_for = 0.0  # seconds of the fake's clock a refund stays PENDING
        # MTN checks what is left to refund before the reference: a copy of a refund it holds
        # of the whole payment is refused NOT_ALLOWED instead of 409.
        self.checks_before_reference = False
        self._initial = {name: copy.copy(v) for name, v in vars(self).items() if name[0] != "_"}
        self._tokens: dict[str, float] = {}
        self._refunds: dict[str, Refund] = {}
        self._payees: dict[str, tuple[str, str | None]] = {}
        self._late_404: dict[str, int] = {}

    def reset_locked(self) -> None:
        """FakeMtn.reset(), with FakeMtn's lock held."""
        for name, value in self._initial.items():
            setattr(self, name, copy.copy(value))
        self._tokens.clear()
        self._refunds.clear()
        self._payees.clear()
        self._late_404.clear()

    # Helpers for tests.

    def keys(self) -> MtnKeys:
        """The Disbursement credentials this fake accepts."""
        return MtnKeys(
            subscription_key=SecretStr(self.subscription_key),
            api_user=self.api_user,
            api_key=SecretStr(self.api_key),
        )

    def env(self) -> dict[str, str]:
        return {
            "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY": self.subscription_key,
            "MTN_MOMO_DISBURSEMENT_API_USER": self.api_user,
            "MTN_MOMO_DISBURSEMENT_API_KEY": self.api_key,
        }

    def refund(self, reference: str | uuid.UUID) -> Refund | None:
        with self._mtn._lock:
            return self._refunds.get(str(reference))

    @property
    def refunds(self) -> list[Refund]:
        with self._mtn._lock:
            return list(self._refunds.values())

    @property
    def issued_tokens(self) -> list[str]:
        with self._mtn._lock:
            return list(self._tokens)

    def status_body(self, reference: str | uuid.UUID) -> dict[str, Any]:
        with self._mtn._lock:
            return self._body(self._refunds[str(reference)])

    def paid_out(self) -> dict[str, tuple[Decimal, str]]:
        """What MTN paid back: the amount and currency of each SUCCESSFUL refund, by reference."""
        with self._mtn._lock:
            return {
                r.reference: (Decimal(r.amount), r.currency)
                for r in self._refunds.values()
                if self._outcome(r)[0] == "SUCCESSFUL"
            }

    def expire_tokens_locked(self, now: float) -> None:
        for token in self._tokens:
            self._tokens[token] = min(self._tokens[token], now - 1)

    # Knobs.

    def script_payee(self, payee: str, status: str, reason: str | None = None) -> None:
        """Refunds made from now on to this MSISDN end in `status` ("FAILED" with `reason`,
        "PENDING"...)."""
        with self._mtn._lock:
            self._payees[payee.removeprefix("+")] = (status, reason)

    def set_status(
        self, reference: str | uuid.UUID, status: str, reason: str | None = None
    ) -> None:
        """Force a stored refund's status (e.g. "PENDING", or "FAILED" with a reason)."""
        with self._mtn._lock:
            self._refunds[str(reference)].forced = (status, reason)

    def patch_body(self, reference: str | uuid.UUID, **fields: Any) -> None:
        """Override fields of a refund's status body."""
        with self._mtn._lock:
            self._refunds[str(reference)].extra.update(fields)

    def late_404(self, reference: str | uuid.UUID, polls: int) -> None:
        """The first `polls` status queries for this refund answer 404 RESOURCE_NOT_FOUND."""
        with self._mtn._lock:
            self._late_404[str(reference)] = polls

    # Routes.

    def routes(self, endpoint: Endpoint) -> list[Route]:
        """The Disbursement routes; `endpoint(kind, handler)` is FakeMtn's wrapper (faults,
        hangs, the request log)."""
        return [
            Route(
                DISBURSEMENT_TOKEN_PATH,
                endpoint("disbursement_token", self._token),
                methods=["POST"],
            ),
            Route(REFUND_PATH, endpoint("refund", self._refund), methods=["POST"]),
            Route(REFUND_STATUS_PATH, endpoint("refund_status", self._status), methods=["GET"]),
        ]

    def _token(self, request: Request, body: bytes) -> Response:
        mtn = self._mtn

        def issue() -> tuple[str, int]:
            token = secrets.token_urlsafe(32)
            with mtn._lock:
                self._tokens[token] = mtn.now() + mtn.token_expires_in
            return token, mtn.token_expires_in

        return token_response(
            request,
            subscription_key=self.subscription_key,
            credentials=(self.api_user, self.api_key),
            issue=issue,
        )

    def _token_valid(self, token: str) -> bool:
        with self._mtn._lock:
            expires = self._tokens.get(token)
            return expires is not None and self._mtn.now() < expires

    def _check_api_call(self, request: Request) -> Response | None:
        return api_call_refused(
            request,
            subscription_key=self.subscription_key,
            token_valid=self._token_valid,
            target_environment=self._mtn.target_environment,
        )

    def _refund(self, request: Request, body: bytes) -> Response:
        mtn = self._mtn
        refused = self._check_api_call(request)
        if refused is not None:
            return refused
        reference, bad_reference = reference_id(request)
        if bad_reference is not None:
            return bad_reference
        assert reference is not None
        try:
            data = json.loads(body)
        except ValueError:
            return error(400, "VALIDATION_ERROR", "body is not JSON")
        problem = _body_problem(data)
        if problem:
            return error(400, "VALIDATION_ERROR", problem)
        callback_url = request.headers.get("x-callback-url")
        hosts = mtn.callback_hosts
        if (
            callback_url is not None
            and hosts is not None
            and httpx.URL(callback_url).host not in hosts
        ):
            return error(400, "INVALID_CALLBACK_URL_HOST", "Callback URL host not allowed")
        if mtn.currencies is not None and data["currency"] not in mtn.currencies:
            return error(400, "INVALID_CURRENCY", "Currency not supported.")
        with mtn._lock:
            if self.checks_before_reference:
                refused = self._refusal(data)
                if refused is not None:
                    return refused
            if reference in self._refunds:
                return error(
                    409,
                    "RESOURCE_ALREADY_EXIST",
                    "Duplicated reference id. Creation of resource failed.",
                )
            refused = self._refusal(data)
            if refused is not None:
                return refused
            transfer = mtn._transfers[data["referenceIdToRefund"].lower()]
            self._refunds[reference] = Refund(
                reference=reference,
                reference_to_refund=transfer.reference,
                payee=transfer.payer,
                amount=data["amount"],
                currency=data["currency"],
                external_id=data["externalId"],
                payer_message=str(data.get("payerMessage", "")),
                payee_note=str(data.get("payeeNote", "")),
                callback_url=callback_url,
                created_at=mtn.now(),
                financial_transaction_id=str(secrets.randbelow(10**9)).zfill(9),
                outcome=self._payees.get(transfer.payer, ("SUCCESSFUL", None)),
            )
        return Response(status_code=202)

    def _refusal(self, data: dict[str, Any]) -> Response | None:
        """Why MTN will not refund this request to pay (call with the lock held)."""
        mtn = self._mtn
        transfer = mtn._transfers.get(data["referenceIdToRefund"].lower())
        if transfer is None:
            return error(404, "RESOURCE_NOT_FOUND", "Transaction to refund was not found.")
        if mtn._outcome(transfer)[0] != "SUCCESSFUL":
            return error(400, "NOT_ALLOWED", "Only a successful transaction can be refunded.")
        if data["currency"] != transfer.currency:
            return error(400, "INVALID_CURRENCY", "Currency differs from the transaction's.")
        refunded = sum(
            (
                Decimal(r.amount)
                for r in self._refunds.values()
                if r.reference_to_refund == transfer.reference and self._outcome(r)[0] != "FAILED"
            ),
            Decimal(0),
        )
        if refunded + Decimal(data["amount"]) > Decimal(transfer.amount):
            return error(400, "NOT_ALLOWED", "Amount exceeds what is left to refund.")
        return None

    def _status(self, request: Request, body: bytes) -> Response:
        refused = self._check_api_call(request)
        if refused is not None:
            return refused
        reference = request.path_params["reference"]
        with self._mtn._lock:
            hidden = self._late_404.get(reference, 0)
            if hidden > 0:
                self._late_404[reference] = hidden - 1
            refund = self._refunds.get(reference)
            if hidden > 0 or refund is None:
                return error(404, "RESOURCE_NOT_FOUND", "Requested resource was not found.")
            return JSONResponse(self._body(refund))

    # Outcomes (call with the lock held).

    def _outcome(self, refund: Refund) -> tuple[str, str | None]:
        if refund.forced is not None:
            return refund.forced
        if self._mtn.now() - refund.created_at < self.pending_for:
            return "PENDING", None
        return refund.outcome

    def _body(self, refund: Refund) -> dict[str, Any]:
        status, reason = self._outcome(refund)
        body: dict[str, Any] = {
            "amount": refund.amount,
            "currency": refund.currency,
            "externalId": refund.external_id,
            "payee": {"partyIdType": "MSISDN", "partyId": refund.payee},
            "status": status,
        }
        if status == "SUCCESSFUL":
            body["financialTransactionId"] = refund.financial_transaction_id
        if status == "FAILED" and reason:
            body["reason"] = reason
        body.update(refund.extra)
        return body


def _body_problem(data: Any) -> str | None:
    """What is wrong with a refund body, as MTN's validation would see it."""
    if not isinstance(data, dict):
        return "body must be a JSON object"
    amount = data.get("amount")
    if not isinstance(amount, str) or not DECIMAL.fullmatch(amount) or Decimal(amount) <= 0:
        return "amount must be a positive decimal string"
    if not isinstance(data.get("currency"), str) or len(data["currency"]) != 3:
        return "currency must be an ISO 4217 code"
    if not isinstance(data.get("externalId"), str):
        return "externalId must be a string"
    for name in ("payerMessage", "payeeNote"):
        if name in data and not isinstance(data[name], str):
            return f"{name} must be a string"
    to_refund = data.get("referenceIdToRefund")
    try:
        uuid.UUID(to_refund if isinstance(to_refund, str) else "")
    except ValueError:
        return "referenceIdToRefund must be the X-Reference-Id of a request to pay"
    return None
