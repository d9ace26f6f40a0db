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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from orderpay.domain.phones import mask_phone
from orderpay.errors import ConfigurationError, GatewayRejected, GatewayUnavailable

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("orderpay.notify")

# Africa's Talking per-recipient status codes: 101 Sent (102 Queued, 100 Processed).
AT_SENT = {100, 101, 102}
# 405 InsufficientBalance, 500 InternalServerError, 501 GatewayError, 502 RejectedByGateway:
# worth another try later; every other code is about the number or the account.
AT_RETRYABLE = {405, 500, 501, 502}
CONNECT_TIMEOUT_SECONDS = 5.0


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

    def close(self) -> None:
        pass


class _HttpChannel:
    def __init__(self, timeout: float, transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        from orderpay.notify.deadlines import deadline_transport
        from orderpay.tls import tls_context

        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            transport=transport or deadline_transport(tls_context()),
            follow_redirects=False,
        )

    def _post(self, url: str, deadline: float | None, **kwargs: Any) -> httpx.Response:
        import httpx

        from orderpay.notify.deadlines import until

        try:
            with until(deadline):
                return self._client.post(url, **kwargs)
        except httpx.TimeoutException:
            raise GatewayUnavailable("the gateway did not answer in time") from None
        except httpx.HTTPError as error:
            raise GatewayUnavailable(f"cannot reach the gateway: {type(error).__name__}") from None

    def close(self) -> None:
        self._client.close()


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

    def send(self, message: OutgoingMessage, deadline: float | None = None) -> str:
        form = {"username": self.username, "to": message.recipient, "message": message.text}
        if self.sender_id:
            form["from"] = self.sender_id
        response = self._post(
            self.url,
            deadline,
            data=form,
            headers={"apiKey": self._api_key, "Accept": "application/json"},
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise GatewayUnavailable(f"the SMS gateway answered HTTP {response.status_code}")
        if response.status_code >= 300:
            raise GatewayRejected(
                f"the SMS gateway refused the message: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        try:
            recipients = response.json()["SMSMessageData"]["Recipients"]
            first = recipients[0]
            code, status, message_id = int(first["statusCode"]), first["status"], first["messageId"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise GatewayUnavailable("the SMS gateway's answer could not be read") from None
        if code in AT_SENT:
            return str(message_id)
        if code in AT_RETRYABLE:
            raise GatewayUnavailable(f"the SMS gateway could not send now: {status} ({code})")
        raise GatewayRejected(f"the SMS gateway refused the message: {status} ({code})")


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

    def send(self, message: OutgoingMessage, deadline: float | None = None) -> str:
        from orderpay.domain.signatures import standard_headers

        webhook_id = f"msg_orderpay_notification_{message.notification_id}"
        body = json.dumps({"type": message.event_type, "data": message.event}).encode()
        headers = standard_headers(body, self._secret, webhook_id)
        headers["Content-Type"] = "application/json"
        response = self._post(message.recipient, deadline, content=body, headers=headers)
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            raise GatewayUnavailable(f"the merchant endpoint answered HTTP {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise GatewayRejected(f"the merchant endpoint answered HTTP {response.status_code}")
        return webhook_id


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
