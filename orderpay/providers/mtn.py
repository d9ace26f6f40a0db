"""MTN MoMo Collection behind the Provider protocol: a thin httpx client (reference/specs.md s.3).

Two calls per charge at most: `POST /collection/token/` (only when no cached token is fresh)
and `POST /collection/v1_0/requesttopay` with our payment id as `X-Reference-Id`. The status
query is `GET /collection/v1_0/requesttopay/{reference}`. How answers map:

- requesttopay: 202 -> Accepted; 409 `RESOURCE_ALREADY_EXIST` -> Accepted (already submitted);
  a 4xx with a definite refusal code -> Declined(code); timeouts, connection errors, 5xx,
  `SERVICE_UNAVAILABLE`, `INTERNAL_PROCESSING_ERROR` and anything unreadable -> raise
  ProviderUnavailable (the payment stays `initiated`; the same key retries with the same
  reference, which MTN deduplicates).
- status: SUCCESSFUL -> SUCCEEDED (with the amount MTN reports); FAILED -> FAILED with MTN's
  reason (both terminal, whatever the reason: a FAILED transfer is over on MTN's side, and
  the order must be chargeable again); PENDING, CREATED and unknown statuses -> PENDING;
  404 `RESOURCE_NOT_FOUND` -> UNKNOWN ("not visible yet"); transport errors, 5xx, other
  errors -> raise ProviderUnavailable. Ambiguity is never FAILED.

A 401 from an API call drops the cached token, fetches a new one and retries that call once.
Every operation (token fetch, call, retry) shares one time budget well under the charge lease.
Secrets (subscription key, API key, tokens) stay out of repr(), logs and exception messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from orderpay.domain.phones import mask_phone, msisdn
from orderpay.domain.validation import as_uuid
from orderpay.errors import ConfigurationError, ProviderUnavailable
from orderpay.providers.base import (
    CollectionRequest,
    PaymentRef,
    ProviderAnswer,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.mtn_answers import (
    NOT_FOUND,
    error_code,
    error_message,
    positive_int,
    status_answer,
    submission_answer,
)
from orderpay.providers.mtn_endpoints import check_callback_url, check_endpoint
from orderpay.tls import tls_context

if TYPE_CHECKING:
    from orderpay.config import Settings

log = logging.getLogger(__name__)

TOKEN_PATH = "/collection/token/"
REQUEST_TO_PAY_PATH = "/collection/v1_0/requesttopay"

# Per-phase limits of one HTTP call, and the budget of one whole operation (token fetch, call,
# one retry after a 401). The budget stays well under the charge lease (90 s by default) so a
# charge never outlives its lease while talking to MTN.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=5.0)
DEFAULT_BUDGET_SECONDS = 45.0
# A cached token is dropped this long before MTN says it expires (at most half its lifetime).
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600

_ENV = {
    "base_url": "MTN_MOMO_BASE_URL",
    "subscription_key": "MTN_MOMO_SUBSCRIPTION_KEY",
    "api_user": "MTN_MOMO_API_USER",
    "api_key": "MTN_MOMO_API_KEY",
    "target_environment": "MTN_MOMO_TARGET_ENVIRONMENT",
}


def _secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    fresh_until: float  # on the provider's clock


class MtnProvider:
    """The MTN MoMo Collection provider. One instance per process; thread-safe; close() it.

    Build it with `MtnProvider.from_settings(settings)`, or with explicit values (tests). The
    base URL and target environment are checked as a pair (see `check_endpoint`): `sandbox`
    goes with the sandbox host or a loopback fake, a production target with any other https
    host. TLS certificates are always verified.
    """

    name = "mtn"

    def __init__(
        self,
        *,
        base_url: str,
        subscription_key: str | SecretStr,
        api_user: str,
        api_key: str | SecretStr,
        target_environment: str,
        callback_url: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        token_refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = check_endpoint(base_url, target_environment)
        self.target_environment = target_environment.strip()
        self.callback_url = check_callback_url(callback_url, self.target_environment)
        if not api_user.strip():
            raise ConfigurationError("MTN_MOMO_API_USER is empty")
        self._api_user = api_user.strip()
        self._api_key = _secret(api_key)
        self._subscription_key = _secret(subscription_key)
        if not self._api_key.get_secret_value() or not self._subscription_key.get_secret_value():
            raise ConfigurationError("MTN_MOMO_API_KEY and MTN_MOMO_SUBSCRIPTION_KEY must be set")
        self._timeout = timeout
        self._budget = budget_seconds
        self._margin = token_refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._client = httpx.Client(
            verify=tls_context(),  # certificates and host names are always checked
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "orderpay"},
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> MtnProvider:
        """Build the provider from MTN_MOMO_* settings; ConfigurationError names what is wrong."""
        values: dict[str, str | None] = {
            "base_url": settings.mtn_base_url,
            "subscription_key": settings.mtn_subscription_key.get_secret_value()
            if settings.mtn_subscription_key
            else None,
            "api_user": settings.mtn_api_user,
            "api_key": settings.mtn_api_key.get_secret_value() if settings.mtn_api_key else None,
            "target_environment": settings.mtn_target_environment,
        }
        missing = [_ENV[name] for name, value in values.items() if not (value and value.strip())]
        if missing:
            raise ConfigurationError(
                f"the mtn provider needs {', '.join(missing)} (environment or .env)",
                missing=missing,
            )
        budget = DEFAULT_BUDGET_SECONDS
        if settings.charge_lease_seconds > 0:
            budget = min(budget, settings.charge_lease_seconds / 2)
        return cls(
            base_url=str(values["base_url"]),
            subscription_key=str(values["subscription_key"]),
            api_user=str(values["api_user"]),
            api_key=str(values["api_key"]),
            target_environment=str(values["target_environment"]),
            callback_url=settings.mtn_callback_url,
            timeout=timeout,
            budget_seconds=budget,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"MtnProvider(base_url={self.base_url!r}, "
            f"target_environment={self.target_environment!r}, "
            f"callback={'on' if self.callback_url else 'off'})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MtnProvider:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # The Provider protocol.

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        deadline = time.monotonic() + self._budget
        reference = str(request.reference)
        body = {
            "amount": request.amount.as_string(),
            "currency": request.amount.currency,
            "externalId": str(request.order_id),
            "payer": {"partyIdType": "MSISDN", "partyId": msisdn(request.payer_phone)},
            "payerMessage": f"Payment for order {str(request.order_id)[:8]}",
            "payeeNote": f"order {request.order_id}",
        }
        headers = {"X-Reference-Id": reference}
        if self.callback_url:
            headers["X-Callback-Url"] = self.callback_url
        response = self._call("POST", REQUEST_TO_PAY_PATH, deadline, headers=headers, json=body)
        answer = self._submission_answer(response, reference)
        log.info(
            "MTN requesttopay %s (payer %s): HTTP %s, %s",
            reference, mask_phone(request.payer_phone), response.status_code, answer,
        )  # fmt: skip
        return answer

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        deadline = time.monotonic() + self._budget
        reference = _reference_of(payment)
        response = self._call("GET", f"{REQUEST_TO_PAY_PATH}/{reference}", deadline)
        status = response.status_code
        if status == 404 and error_code(response) == NOT_FOUND:
            log.info("MTN status %s: not found (yet)", reference)
            return StatusAnswer(RemoteState.UNKNOWN)
        if status != 200:
            raise self._unavailable("status query", response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailable(
                "MTN answered the status query with an unreadable body; try again later",
                reason="unreadable_answer",
            )
        answer = status_answer(data)
        log.info("MTN status %s: %r -> %s", reference, data.get("status"), answer.state)
        return answer

    # HTTP plumbing.

    def _call(
        self, method: str, path: str, deadline: float, *,
        headers: dict[str, str] | None = None, json: Any = None,
    ) -> httpx.Response:  # fmt: skip
        """One API call with a bearer token; on 401, one retry with a fresh token."""

        def send(token: str) -> httpx.Response:
            all_headers = {
                "Authorization": f"Bearer {token}",
                "X-Target-Environment": self.target_environment,
                "Ocp-Apim-Subscription-Key": self._subscription_key.get_secret_value(),
                **(headers or {}),
            }
            return self._request(method, path, deadline, headers=all_headers, json=json)

        token = self._bearer(deadline)
        response = send(token)
        if response.status_code == 401:
            log.info("MTN answered 401 to %s %s; fetching a new token", method, path)
            self._forget(token)
            response = send(self._bearer(deadline))
        return response

    def _request(
        self, method: str, path: str, deadline: float, *, headers: dict[str, str],
        json: Any = None, content: bytes | None = None, auth: httpx.Auth | None = None,
    ) -> httpx.Response:  # fmt: skip
        try:
            return self._client.request(
                method, self.base_url + path, headers=headers, json=json, content=content,
                auth=auth, timeout=self._timeout_until(deadline),
            )  # fmt: skip
        except httpx.TimeoutException as error:
            raise ProviderUnavailable(
                f"MTN did not answer {method} {path} in time ({type(error).__name__}); "
                "try again later",
                reason="timeout",
            ) from error
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                f"could not reach MTN for {method} {path} ({type(error).__name__}); "
                "try again later",
                reason="unreachable",
            ) from error

    def _timeout_until(self, deadline: float) -> httpx.Timeout:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProviderUnavailable(
                f"MTN did not answer within {self._budget:g} s; try again later",
                reason="timeout",
            )

        t = self._timeout
        connect, read, write, pool = (
            left if limit is None else min(limit, left)
            for limit in (t.connect, t.read, t.write, t.pool)
        )
        return httpx.Timeout(connect=connect, read=read, write=write, pool=pool)

    # The token cache.

    def _bearer(self, deadline: float) -> str:
        # One thread fetches while the others wait for its token (within their own budget).
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ProviderUnavailable(
                f"MTN did not hand out a token within {self._budget:g} s; try again later",
                reason="timeout",
            )
        try:
            cached = self._token
            if cached is not None and self._clock() < cached.fresh_until:
                return cached.value
            self._token = self._fetch_token(deadline)
            return self._token.value
        finally:
            self._lock.release()

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    def _fetch_token(self, deadline: float) -> _Token:
        response = self._request(
            "POST",
            TOKEN_PATH,
            deadline,
            headers={
                "Ocp-Apim-Subscription-Key": self._subscription_key.get_secret_value(),
                # The gateway answers 411 to a bodyless POST without it [observed].
                "Content-Length": "0",
            },
            content=b"",
            auth=httpx.BasicAuth(self._api_user, self._api_key.get_secret_value()),
        )
        if response.status_code in (401, 403):
            raise ProviderUnavailable(
                f"MTN refused the API credentials (HTTP {response.status_code} from the token "
                "endpoint); check MTN_MOMO_API_USER, MTN_MOMO_API_KEY and "
                "MTN_MOMO_SUBSCRIPTION_KEY",
                reason="credentials_refused",
            )
        if response.status_code != 200:
            raise self._unavailable("token request", response)
        try:
            data = response.json()
        except ValueError:
            data = None
        value = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            # Never quote this body: it may hold a token.
            raise ProviderUnavailable(
                "MTN answered the token request without a usable token; try again later",
                reason="unreadable_answer",
            )
        assert isinstance(data, dict)
        lifetime = positive_int(data.get("expires_in")) or DEFAULT_TOKEN_LIFETIME_SECONDS
        fresh_for = lifetime - min(self._margin, lifetime / 2)
        log.info("MTN token fetched (valid %s s)", lifetime)
        return _Token(value, self._clock() + fresh_for)

    # Answers.

    def _submission_answer(self, response: httpx.Response, reference: str) -> ProviderAnswer:
        answer = submission_answer(response.status_code, error_code(response), reference)
        if answer is None:
            raise self._unavailable("payment request", response)
        return answer

    def _unavailable(self, what: str, response: httpx.Response) -> ProviderUnavailable:
        code, message = error_code(response), error_message(response)
        detail = f" {code}" if code else ""
        if message:
            detail += f": {self._scrub(message)}"
        return ProviderUnavailable(
            f"MTN answered the {what} with HTTP {response.status_code}{detail}; "
            "the outcome is unknown, try again later",
            reason=code or f"http_{response.status_code}",
        )

    def _scrub(self, text: str) -> str:
        """Remove anything secret MTN might echo back."""
        secrets = [self._api_key.get_secret_value(), self._subscription_key.get_secret_value()]
        if self._token is not None:
            secrets.append(self._token.value)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "********")
        return text


def _reference_of(payment: PaymentRef) -> str:
    """MTN knows a payment by our payment id (its X-Reference-Id); always a UUID in the path."""
    return str(as_uuid(payment.provider_reference) or payment.reference)
