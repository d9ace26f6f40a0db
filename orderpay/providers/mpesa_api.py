"""M-Pesa Daraja's HTTP plumbing: the token cache, one call with a time budget, the STK
password, and what an unreadable or unreachable answer means. providers/mpesa.py says what
each call asks; reference/providers.md has the facts.

Every error says whether the request may have reached Daraja (ProviderUnavailable.reached):
a failed connection or token fetch did not; a timeout or a dropped answer after the request
left may have. M-Pesa cannot take a request twice, so that decides whether it is ever sent
again.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from orderpay.clock import utcnow
from orderpay.errors import ProviderUnavailable
from orderpay.providers.mpesa_answers import INVALID_TOKEN, error_of

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/v1/generate?grant_type=client_credentials"
TOKEN_MARGIN_SECONDS = 60.0
DEFAULT_TOKEN_SECONDS = 3599
KENYA = timedelta(hours=3)  # Daraja's timestamps are Kenya time (EAT, no daylight saving)
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=5.0)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    fresh_until: float


def kenya_timestamp() -> str:
    return (utcnow() + KENYA).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


class DarajaApi:
    """Calls to one Daraja base URL with one app's consumer key and secret. Thread-safe."""

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        budget_seconds: float,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.base_url = base_url
        self._key = consumer_key
        self._secret = consumer_secret
        self._budget = budget_seconds
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def post(self, path: str, body: dict[str, Any], *, what: str) -> tuple[int, Any]:
        """POST with a bearer token (one retry with a fresh token if Daraja says it is
        invalid); (HTTP status, the JSON answer or None)."""
        deadline = time.monotonic() + self._budget
        token = self._bearer(deadline)
        status, document = self._send(path, body, token, deadline, what)
        error = error_of(document)
        if status in (400, 401) and error is not None and error.code == INVALID_TOKEN:
            log.info("Daraja refused its token for %s; fetching a new one", what)
            self._forget(token)
            status, document = self._send(path, body, self._bearer(deadline), deadline, what)
        return status, document

    def check_token(self) -> None:
        """Fetch a token now (doctor): ProviderUnavailable says why it cannot."""
        self._forget(self._token.value if self._token else "")
        self._bearer(time.monotonic() + self._budget)

    def _send(
        self, path: str, body: dict[str, Any], token: str, deadline: float, what: str
    ) -> tuple[int, Any]:
        response = self._request(
            "POST", path, deadline, what, headers={"Authorization": f"Bearer {token}"}, json=body
        )
        return response.status_code, _json(response)

    def _request(
        self,
        method: str,
        path: str,
        deadline: float,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProviderUnavailable(
                f"M-Pesa's {what} was not sent: its time budget ran out", reached=False
            )
        t = self._timeout
        timeout = httpx.Timeout(
            connect=min(t.connect or left, left),
            read=min(t.read or left, left),
            write=min(t.write or left, left),
            pool=min(t.pool or left, left),
        )
        try:
            return self._client.request(
                method, self.base_url + path, headers=headers, json=json, auth=auth, timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise ProviderUnavailable(
                f"could not reach M-Pesa for the {what} ({type(error).__name__}): it was not "
                "sent; try again later",
                reason="unreachable",
                reached=False,
            ) from error
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                f"M-Pesa's answer to the {what} was lost ({type(error).__name__}): it may have "
                "been acted on, so it is not sent again (M-Pesa would act on it twice)",
                reason="answer_lost",
            ) from error

    def _bearer(self, deadline: float) -> str:
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ProviderUnavailable("M-Pesa did not hand out a token in time", reached=False)
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
        try:
            response = self._request(
                "GET",
                TOKEN_PATH,
                deadline,
                "token request",
                auth=httpx.BasicAuth(self._key, self._secret),
            )
        except ProviderUnavailable as error:
            error.reached = False  # a token request moves no money
            raise
        document = _json(response)
        value = document.get("access_token") if isinstance(document, dict) else None
        if response.status_code in (400, 401, 403):
            raise ProviderUnavailable(
                f"M-Pesa refused the consumer key and secret (HTTP {response.status_code}): "
                "check MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET (`orderpay doctor`)",
                reason="credentials_refused",
                reached=False,
            )
        if response.status_code != 200 or not isinstance(value, str) or not value:
            # Never quote this body: it may hold a token.
            raise ProviderUnavailable(
                f"M-Pesa handed out no token (HTTP {response.status_code}); try again later",
                reason=f"http_{response.status_code}",
                reached=False,
            )
        assert isinstance(document, dict)
        lifetime = _seconds(document.get("expires_in")) or DEFAULT_TOKEN_SECONDS
        fresh_for = lifetime - min(TOKEN_MARGIN_SECONDS, lifetime / 2)
        return _Token(value, self._clock() + fresh_for)


def _seconds(value: Any) -> int | None:
    """Daraja's expires_in is a string ("3599"); read it leniently."""
    try:
        seconds = int(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
