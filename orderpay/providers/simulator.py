"""The built-in simulator: a provider that needs no network, behaving like MTN's sandbox."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from orderpay.clock import utcnow
from orderpay.domain.phones import mask_phone, msisdn
from orderpay.errors import ProviderUnavailable
from orderpay.providers.base import (
    Accepted,
    CollectionRequest,
    Declined,
    PaymentRef,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.capabilities import SIMULATOR

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

# MTN's sandbox test payers (section 3 of reference/specs.md), keyed by MSISDN.
# Refused when the request is made: a definite answer, so the payment is `failed` at once.
SANDBOX_REFUSALS = {
    "46733123455": "PAYER_NOT_FOUND",
    "46733123456": "PAYEE_NOT_ALLOWED_TO_RECEIVE",
    "46733123457": "NOT_ALLOWED",
    "46733123458": "NOT_ALLOWED_TARGET_ENVIRONMENT",
    "46733123459": "INVALID_CALLBACK_URL_HOST",
    "46733123460": "INVALID_CURRENCY",
}
# Errors on MTN's side: the request's fate is unknown, so it stays `initiated` (retry).
SANDBOX_OUTAGES = {
    "46733123461": "INTERNAL_PROCESSING_ERROR",
    "46733123462": "SERVICE_UNAVAILABLE",
}
# Accepted, then failed (the outcome arrives by callback or status query).
SANDBOX_FAILURES = {
    "46733123450": "INTERNAL_PROCESSING_ERROR",
    "46733123451": "APPROVAL_REJECTED",
    "46733123452": "EXPIRED",
    "46733123463": "COULD_NOT_PERFORM_TRANSACTION",
}
SANDBOX_ONGOING = "46733123453"  # PENDING until the payer's approval window expires
SANDBOX_DELAYED = "46733123454"  # CREATED for a while, then succeeds
# Refunds follow the payment's payer: the numbers above keep their meaning (a refusal, an
# outage, accepted then failed, not settled yet), and since the simulator's charges from those
# numbers never succeed, these numbers, whose charges succeed, reach each case of a refund.
REFUND_REFUSALS = {**SANDBOX_REFUSALS, "46733123470": "NOT_ENOUGH_FUNDS"}
REFUND_OUTAGES = {**SANDBOX_OUTAGES, "46733123471": "SERVICE_UNAVAILABLE"}
REFUND_FAILURES = {**SANDBOX_FAILURES, "46733123472": "PAYEE_NOT_FOUND"}
REFUND_DELAYED = {SANDBOX_ONGOING, SANDBOX_DELAYED, "46733123473"}  # PENDING, then succeeds
# How long a payer has to approve a request before MTN expires it.
APPROVAL_WINDOW = timedelta(minutes=5)
# How long the sandbox's delayed payer stays CREATED (observed: over 40 s).
DELAYED_FOR = timedelta(seconds=45)
# The simulator's own callback is best effort: it must never hold a charge up for long.
CALLBACK_TIMEOUT_SECONDS = 5.0


class SimulatorProvider:
    """A provider that needs no network: outcomes follow the payer number, as on MTN's sandbox.

    Stateless: a status query derives the outcome from the payment itself, so any process
    (the charge, the listener, `reconcile`) gets the same answer. When a callback URL is set it
    posts the signed outcome there, as a real provider would.
    """

    name = "simulator"
    capabilities = SIMULATOR
    refund_modes = SIMULATOR.refund_modes

    def __init__(self, callback_url: str | None = None, secret: bytes | None = None) -> None:
        self.callback_url = callback_url
        self.secret = secret

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        payer = msisdn(request.payer_phone)
        if payer in SANDBOX_OUTAGES:
            raise ProviderUnavailable(
                f"simulator: {SANDBOX_OUTAGES[payer]}; the payment stays initiated, "
                "re-run the same key",
                reason=SANDBOX_OUTAGES[payer],
            )
        if payer in SANDBOX_REFUSALS:
            return Declined(SANDBOX_REFUSALS[payer])
        outcome = self._outcome(payer, elapsed=timedelta(0))
        if self.callback_url and outcome.state in (RemoteState.SUCCEEDED, RemoteState.FAILED):
            self._post_callback(request, outcome)
        return Accepted(str(request.reference))

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        payer = msisdn(payment.payer_phone)
        if payer in SANDBOX_REFUSALS or payer in SANDBOX_OUTAGES:
            return StatusAnswer(RemoteState.UNKNOWN)
        outcome = self._outcome(payer, elapsed=utcnow() - payment.created_at)
        amount = payment.amount if outcome.state is RemoteState.SUCCEEDED else None
        return StatusAnswer(outcome.state, outcome.reason, amount)

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        """Refunds post no callback (the momo route settles payments): the refund flow asks
        refund_status right away, and `orderpay reconcile` settles the rest."""
        payer = msisdn(request.payment.payer_phone)
        if payer in REFUND_OUTAGES:
            raise ProviderUnavailable(
                f"simulator: {REFUND_OUTAGES[payer]}; the refund stays initiated, "
                "re-run the same key",
                reason=REFUND_OUTAGES[payer],
            )
        if payer in REFUND_REFUSALS:
            return Declined(REFUND_REFUSALS[payer])
        return Accepted(str(request.reference))

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        payer = msisdn(refund.payment.payer_phone)
        if payer in REFUND_REFUSALS or payer in REFUND_OUTAGES:
            return StatusAnswer(RemoteState.UNKNOWN)
        if payer in REFUND_FAILURES:
            return StatusAnswer(RemoteState.FAILED, REFUND_FAILURES[payer])
        if payer in REFUND_DELAYED and utcnow() - refund.created_at < DELAYED_FOR:
            return StatusAnswer(RemoteState.PENDING)
        return StatusAnswer(RemoteState.SUCCEEDED, amount=refund.amount)

    def check_refunds_configured(self) -> None:
        pass  # the simulator needs no settings to refund

    @staticmethod
    def _outcome(payer: str, elapsed: timedelta) -> StatusAnswer:
        if payer in SANDBOX_FAILURES:
            return StatusAnswer(RemoteState.FAILED, SANDBOX_FAILURES[payer])
        if payer == SANDBOX_ONGOING:
            if elapsed >= APPROVAL_WINDOW:
                return StatusAnswer(RemoteState.FAILED, "EXPIRED")
            return StatusAnswer(RemoteState.PENDING)
        if payer == SANDBOX_DELAYED and elapsed < DELAYED_FOR:
            return StatusAnswer(RemoteState.PENDING)
        return StatusAnswer(RemoteState.SUCCEEDED)

    def close(self) -> None:
        pass  # nothing held between calls

    def _post_callback(self, request: CollectionRequest, outcome: StatusAnswer) -> None:
        import httpx

        from orderpay.domain.signatures import sign_hex
        from orderpay.tls import tls_context

        body: dict[str, str] = {
            "provider_reference": str(request.reference),
            "order_id": str(request.order_id),
            "status": "success" if outcome.state is RemoteState.SUCCEEDED else "failed",
            "amount": request.amount.as_string(),
            "currency": request.amount.currency,
        }
        if outcome.reason:
            body["reason"] = outcome.reason
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["X-Momo-Signature"] = sign_hex(raw, self.secret)
        assert self.callback_url is not None
        try:
            response = httpx.post(
                self.callback_url,
                content=raw,
                headers=headers,
                timeout=CALLBACK_TIMEOUT_SECONDS,
                verify=tls_context(),
            )
        except httpx.HTTPError as error:
            # A provider's callback can be lost; the status query (reconcile) is the fallback.
            log.warning(
                "simulator callback for payment %s failed: %s",
                request.reference,
                type(error).__name__,
            )
            return
        if response.is_success:
            log.info(
                "simulator callback for payment %s (payer %s): HTTP %s",
                request.reference,
                mask_phone(request.payer_phone),
                response.status_code,
            )
            return
        # A refused callback settles nothing and the charge still answers `pending`: without
        # this line a misconfigured listener looks like a payer who never approves.
        log.warning(
            "simulator callback for payment %s refused: %s; the payment stays pending until "
            "a status check (orderpay reconcile, or the worker's catch-up)",
            request.reference,
            _refusal_cause(response, self.callback_url, signed=bool(self.secret)),
        )


def _refusal_cause(response: httpx.Response, url: str, *, signed: bool) -> str:
    """The listener's answer to a simulator callback and its likely cause, naming the URL
    without its credentials or query string (either may hold a secret)."""
    import httpx

    status = response.status_code
    where = httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None)
    if status in (401, 403):
        if not signed:
            return (
                f"HTTP {status} from {where}: this process has no MOMO_WEBHOOK_SECRET to sign "
                "with; set the listener's"
            )
        return (
            f"HTTP {status} from {where}: the listener's MOMO_WEBHOOK_SECRET differs from "
            "this process's"
        )
    if status == 404:
        if _error_code(response) not in (None, "not_found"):
            return (
                f"HTTP 404 from {where}: the listener has no such payment; does it use this "
                "process's database?"
            )
        return (
            f"HTTP 404 from {where}: check the path of ORDERPAY_SIMULATOR_CALLBACK_URL (the "
            "listener's is /api/webhooks/momo/), or the listener has no MOMO_WEBHOOK_SECRET"
        )
    return f"HTTP {status} from {where}"


def _error_code(response: httpx.Response) -> str | None:
    """The code of orderpay's JSON error answer, or None for any other body."""
    try:
        document = response.json()
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
