"""One MTN MoMo product (Collection or Disbursement) as a client: its token cache and its calls.

MTN sells each API as a product with its own subscription key, API user and API key, and its
own token endpoint (`POST /{product}/token/`). Both products share the base URL, the target
environment and, through MtnProvider, one httpx client (one connection pool). What is the same
for both lives here, once:

- the token cache: fetched on first use, kept until shortly before `expires_in`, shared by
  threads (one fetches while the others wait), dropped and fetched again after a 401 (then the
  call is retried once);
- every operation (token fetch, call, retry) within one time budget;
- how a submission (202 / 409 already submitted / refusal / unknown) and a status query
  (200 / 404 not visible yet / unknown) read;
- secrets (subscription key, API key, tokens) out of repr(), logs and exception messages.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from orderpay.domain.validation import as_uuid
from orderpay.errors import ProviderUnavailable
from orderpay.providers.base import ProviderAnswer, RemoteState, StatusAnswer
from orderpay.providers.mtn_answers import (
    NOT_FOUND,
    REFUSAL_CODES,
    error_code,
    error_message,
    positive_int,
    status_answer,
    submission_answer,
)
from orderpay.providers.mtn_config import MtnEndpoint, MtnTiming

log = logging.getLogger("orderpay.providers.mtn")

DEFAULT_TOKEN_LIFETIME_SECONDS = 3600


def secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


def reference_of(provider_reference: str | None, reference: uuid.UUID) -> str:
    """MTN knows a request to pay or a refund by our id (its X-Reference-Id): always a UUID."""
    return str(as_uuid(provider_reference) or reference)


@dataclass(frozen=True, slots=True)
class Credentials:
    """One product's credentials, and the variables that hold them (named in errors)."""

    product: str  # the path prefix: "collection" or "disbursement"
    subscription_key: SecretStr = field(repr=False)
    api_user: str
    api_key: SecretStr = field(repr=False)
    variables: str  # e.g. "MTN_MOMO_API_USER, MTN_MOMO_API_KEY and MTN_MOMO_SUBSCRIPTION_KEY"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    fresh_until: float  # on the client's clock


class MtnApi:
    """Calls to one MTN product. Thread-safe; the httpx client belongs to the caller."""

    def __init__(
        self,
        client: httpx.Client,
        credentials: Credentials,
        endpoint: MtnEndpoint,
        timing: MtnTiming,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`endpoint` as mtn_endpoints.checked returns it; `clock` times the token cache."""
        self._client = client
        self._credentials = credentials
        self.product = credentials.product
        self.base_url = endpoint.base_url
        self.target_environment = endpoint.target_environment
        self._timeout = timing.timeout
        self._budget = timing.budget_seconds
        self._margin = timing.token_refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def __repr__(self) -> str:
        return f"MtnApi(product={self.product!r}, base_url={self.base_url!r})"

    def deadline(self) -> float:
        """When an operation starting now must be over (time.monotonic)."""
        return time.monotonic() + self._budget

    # Submissions and status queries.

    def submit(
        self,
        path: str,
        reference: str,
        body: dict[str, Any],
        *,
        what: str,
        headers: dict[str, str] | None = None,
        refusals: frozenset[str] = REFUSAL_CODES,
    ) -> tuple[ProviderAnswer, int]:
        """POST a request MTN deduplicates by `X-Reference-Id: reference`; its answer and the
        HTTP status. Unknown outcomes raise ProviderUnavailable."""
        response = self.call(
            "POST",
            path,
            self.deadline(),
            headers={"X-Reference-Id": reference, **(headers or {})},
            json=body,
        )
        answer = submission_answer(
            response.status_code, error_code(response), reference, refusals=refusals
        )
        if answer is None:
            raise self.unavailable(what, response)
        return answer, response.status_code

    def status_of(self, path: str, reference: str, *, what: str) -> StatusAnswer:
        """GET a status body: 404 RESOURCE_NOT_FOUND is UNKNOWN ("not visible yet"); anything
        else but a readable 200 raises ProviderUnavailable."""
        response = self.call("GET", path, self.deadline())
        status = response.status_code
        if status == 404 and error_code(response) == NOT_FOUND:
            log.info("MTN %s %s: not found (yet)", what, reference)
            return StatusAnswer(RemoteState.UNKNOWN)
        if status != 200:
            raise self.unavailable(what, response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailable(
                f"MTN answered the {what} with an unreadable body; try again later",
                reason="unreadable_answer",
            )
        answer = status_answer(data, reference)
        log.info("MTN %s %s: %r -> %s", what, reference, data.get("status"), answer.state)
        return answer

    # HTTP plumbing.

    def call(
        self,
        method: str,
        path: str,
        deadline: float,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """One API call with a bearer token; on 401, one retry with a fresh token."""

        def send(token: str) -> httpx.Response:
            all_headers = {
                "Authorization": f"Bearer {token}",
                "X-Target-Environment": self.target_environment,
                "Ocp-Apim-Subscription-Key": self._credentials.subscription_key.get_secret_value(),
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
        self,
        method: str,
        path: str,
        deadline: float,
        *,
        headers: dict[str, str],
        json: Any = None,
        content: bytes | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method,
                self.base_url + path,
                headers=headers,
                json=json,
                content=content,
                auth=auth,
                timeout=self._timeout_until(deadline),
            )
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
        credentials = self._credentials
        response = self._request(
            "POST",
            f"/{self.product}/token/",
            deadline,
            headers={
                "Ocp-Apim-Subscription-Key": credentials.subscription_key.get_secret_value(),
                # The gateway answers 411 to a bodyless POST without it [observed].
                "Content-Length": "0",
            },
            content=b"",
            auth=httpx.BasicAuth(credentials.api_user, credentials.api_key.get_secret_value()),
        )
        if response.status_code in (401, 403):
            raise ProviderUnavailable(
                f"MTN refused the {self.product} API credentials (HTTP {response.status_code} "
                f"from the token endpoint); check {credentials.variables}",
                reason="credentials_refused",
            )
        if response.status_code != 200:
            raise self.unavailable(f"{self.product} token request", response)
        try:
            data = response.json()
        except ValueError:
            data = None
        value = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            # Never quote this body: it may hold a token.
            raise ProviderUnavailable(
                f"MTN answered the {self.product} token request without a usable token; "
                "try again later",
                reason="unreadable_answer",
            )
        assert isinstance(data, dict)
        lifetime = positive_int(data.get("expires_in")) or DEFAULT_TOKEN_LIFETIME_SECONDS
        fresh_for = lifetime - min(self._margin, lifetime / 2)
        log.info("MTN %s token fetched (valid %s s)", self.product, lifetime)
        return _Token(value, self._clock() + fresh_for)

    # Errors.

    def unavailable(self, what: str, response: httpx.Response) -> ProviderUnavailable:
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
        credentials = self._credentials
        secrets = [
            credentials.api_key.get_secret_value(),
            credentials.subscription_key.get_secret_value(),
        ]
        if self._token is not None:
            secrets.append(self._token.value)
        for value in secrets:
            if value:
                text = text.replace(value, "********")
        return text
