"""Notification channels: how a rendered message reaches the customer (or the merchant).

`send` returns the gateway's message id, or raises GatewayUnavailable (a later try may work:
timeouts, 5xx, throttling) or GatewayRejected (it never will: a bad number, a 4xx).
- `log`: writes the message to the log; no network.
- `sms`: Africa's Talking's `POST /version1/messaging` form API; base URL configurable.
- `webhook`: a JSON event POSTed to the merchant, signed with Standard Webhooks headers.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from orderpay.domain.phones import mask_phone
from orderpay.errors import (
    ConfigurationError,
    GatewayRejected,
    GatewayThrottled,
    GatewayUnavailable,
)

if TYPE_CHECKING:
    import httpx

    from orderpay.notify.async_http import AsyncHttp

log = logging.getLogger("orderpay.notify")

# Africa's Talking per-recipient status codes: 101 Sent (102 Queued, 100 Processed).
AT_SENT = {100, 101, 102}
# 405 InsufficientBalance, 500 InternalServerError, 501 GatewayError, 502 RejectedByGateway:
# worth another try later; every other code is about the number or the account.
AT_RETRYABLE = {405, 500, 501, 502}
CONNECT_TIMEOUT_SECONDS = 5.0
# A gateway's Retry-After longer than this is read as this: the channel pauses, it does not stop.
MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    notification_id: int
    recipient: str  # E.164 phone, or the merchant's URL for `webhook`
    text: str
    event: dict[str, Any]  # the structured form, for channels that send JSON
    event_type: str = "payment.received"  # the webhook event's `type` (`refund.sent`)


class Channel(Protocol):
    name: str

    def send(self, message: OutgoingMessage, deadline: float | None = None) -> str:
        """Send, ending by `deadline` (time.monotonic()) whatever the gateway does."""
        ...

    async def send_async(
        self, message: OutgoingMessage, deadline: float | None, http: AsyncHttp
    ) -> str:
        """`send` on an event loop, HTTP through `http` (notify.sending)."""
        ...

    def close(self) -> None: ...


class LogChannel:
    name = "log"

    def send(self, message: OutgoingMessage, deadline: float | None = None) -> str:
        log.info(
            "notification %s to %s: %s",
            message.notification_id,
            mask_phone(message.recipient),
            message.text,
        )
        return f"log-{message.notification_id}"

    async def send_async(
        self, message: OutgoingMessage, deadline: float | None, http: AsyncHttp
    ) -> str:
        return self.send(message, deadline)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Post:
    """What a channel POSTs for one message: the same bytes whichever client sends them."""

    url: str
    body: bytes
    headers: dict[str, str]


class _HttpChannel(ABC):
    """A channel that POSTs each message: `post_for` builds the request and `read_answer` reads
    the gateway's answer, so that the same rules hold for a send made here (`send`, httpx) and
    one made by the concurrent sender (`send_async`, notify.async_http)."""

    def __init__(self, timeout: float, transport: httpx.BaseTransport | None = None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None

    @abstractmethod
    def post_for(self, message: OutgoingMessage) -> Post: ...

    @abstractmethod
    def read_answer(
        self, message: OutgoingMessage, status: int, headers: Mapping[str, str], body: bytes
    ) -> str:
        """The gateway's message id, or GatewayUnavailable / GatewayRejected."""

    def send(self, message: OutgoingMessage, deadline: float | None = None) -> str:
        import httpx

        from orderpay.notify.deadlines import until

        post = self.post_for(message)
        try:
            with until(deadline):
                response = self._http().post(post.url, content=post.body, headers=post.headers)
        except httpx.TimeoutException:
            raise GatewayUnavailable("the gateway did not answer in time") from None
        except httpx.HTTPError as error:
            raise GatewayUnavailable(f"cannot reach the gateway: {type(error).__name__}") from None
        return self.read_answer(message, response.status_code, response.headers, response.content)

    async def send_async(
        self, message: OutgoingMessage, deadline: float | None, http: AsyncHttp
    ) -> str:
        """`send` on the event loop, through `http`'s kept-alive connections."""
        from orderpay.notify.async_http import RequestFailed, RequestTimedOut

        post = self.post_for(message)
        try:
            answer = await http.post(post.url, post.body, post.headers, deadline)
        except RequestTimedOut:
            raise GatewayUnavailable("the gateway did not answer in time") from None
        except RequestFailed as error:
            raise GatewayUnavailable(f"cannot reach the gateway: {error}") from None
        return self.read_answer(message, answer.status, answer.headers, answer.body)

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            from orderpay.notify.deadlines import deadline_transport
            from orderpay.tls import tls_context

            self._client = httpx.Client(
                timeout=httpx.Timeout(
                    self._timeout, connect=min(self._timeout, CONNECT_TIMEOUT_SECONDS)
                ),
                transport=self._transport or deadline_transport(tls_context()),
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait (seconds, or an HTTP date), capped at MAX_RETRY_AFTER_SECONDS;
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _throttled(who: str, status: int, headers: Mapping[str, str]) -> GatewayThrottled:
    wait = retry_after_seconds(headers.get("retry-after"))
    said = f", Retry-After {wait:g} s" if wait is not None else ""
    return GatewayThrottled(f"{who} asked us to slow down (HTTP {status}{said})", retry_after=wait)


class SmsChannel(_HttpChannel):
    """Africa's Talking: form POST with the `apiKey` header; one recipient per message."""

    name = "sms"
    PATH = "/version1/messaging"

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        api_key: str,
        sender_id: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(timeout, transport)
        self.url = base_url.rstrip("/") + self.PATH
        self.username = username
        self._api_key = api_key
        self.sender_id = sender_id

    def __repr__(self) -> str:
        return f"SmsChannel(url={self.url!r}, username={self.username!r})"

    def post_for(self, message: OutgoingMessage) -> Post:
        from urllib.parse import urlencode

        form = {"username": self.username, "to": message.recipient, "message": message.text}
        if self.sender_id:
            form["from"] = self.sender_id
        headers = {
            "apiKey": self._api_key,
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return Post(self.url, urlencode(form).encode(), headers)

    def read_answer(
        self, message: OutgoingMessage, status: int, headers: Mapping[str, str], body: bytes
    ) -> str:
        if status == 429:
            raise _throttled("the SMS gateway", status, headers)
        if status >= 500:
            raise GatewayUnavailable(f"the SMS gateway answered HTTP {status}")
        if status >= 300:
            text = body.decode("utf-8", "replace")[:200]
            raise GatewayRejected(f"the SMS gateway refused the message: HTTP {status} {text}")
        try:
            recipients = json.loads(body)["SMSMessageData"]["Recipients"]
            first = recipients[0]
            code, state, message_id = int(first["statusCode"]), first["status"], first["messageId"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise GatewayUnavailable("the SMS gateway's answer could not be read") from None
        if code in AT_SENT:
            return str(message_id)
        if code in AT_RETRYABLE:
            raise GatewayUnavailable(f"the SMS gateway could not send now: {state} ({code})")
        raise GatewayRejected(f"the SMS gateway refused the message: {state} ({code})")


def webhook_id_of(message: OutgoingMessage) -> str:
    return f"msg_orderpay_notification_{message.notification_id}"


class WebhookChannel(_HttpChannel):
    """Signed JSON events to the merchant; `webhook-id` is stable across retries."""

    name = "webhook"

    def __init__(
        self, *, secret: bytes, timeout: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(timeout, transport)
        self._secret = secret

    def __repr__(self) -> str:
        return "WebhookChannel()"

    def post_for(self, message: OutgoingMessage) -> Post:
        from orderpay.domain.signatures import standard_headers

        webhook_id = webhook_id_of(message)
        body = json.dumps({"type": message.event_type, "data": message.event}).encode()
        headers = standard_headers(body, self._secret, webhook_id)
        headers["Content-Type"] = "application/json"
        return Post(message.recipient, body, headers)

    def read_answer(
        self, message: OutgoingMessage, status: int, headers: Mapping[str, str], body: bytes
    ) -> str:
        if status == 429:
            raise _throttled("the merchant endpoint", status, headers)
        if status in (408, 425) or status >= 500:
            raise GatewayUnavailable(f"the merchant endpoint answered HTTP {status}")
        if not 200 <= status < 300:
            raise GatewayRejected(f"the merchant endpoint answered HTTP {status}")
        return webhook_id_of(message)


def build_channel(
    name: str,
    *,
    timeout: float,
    sms_url: str,
    sms_username: str | None,
    sms_api_key: str | None,
    sms_sender_id: str | None,
    webhook_url: str | None,
    webhook_secret: str | None,
) -> Channel:
    """The configured channel, or ConfigurationError naming what is missing."""
    if name == "log":
        return LogChannel()
    if name == "sms":
        if not sms_username or not sms_api_key:
            raise ConfigurationError(
                "ORDERPAY_NOTIFY_CHANNEL=sms needs ORDERPAY_SMS_USERNAME and ORDERPAY_SMS_API_KEY"
            )
        return SmsChannel(
            base_url=sms_url,
            username=sms_username,
            api_key=sms_api_key,
            sender_id=sms_sender_id,
            timeout=timeout,
        )
    if name == "webhook":
        if not webhook_url or not webhook_secret:
            raise ConfigurationError(
                "ORDERPAY_NOTIFY_CHANNEL=webhook needs ORDERPAY_NOTIFY_WEBHOOK_URL and "
                "ORDERPAY_NOTIFY_WEBHOOK_SECRET"
            )
        return WebhookChannel(secret=webhook_secret.encode(), timeout=timeout)
    raise ConfigurationError(f"unknown notification channel {name!r}")
