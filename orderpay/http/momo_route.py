"""POST /api/webhooks/momo/: signed payment callbacks, as a bare ASGI handler.

The signed callback is the listener's hot path, so it skips Starlette's routing, Request
objects and middleware, and answers as a Starlette route would (the 64 KiB limit, signature
check, bodies, status codes and headers of DESIGN.md sections 5-7). It reads, verifies and
parses; payments/signed_callbacks.py settles; errors are answered by http/answers.py, as on
every other route. One log line per callback that is not `processed`, one in
SUCCESS_LOG_SAMPLE of the processed ones; every callback is counted.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from orderpay.domain.signatures import verify
from orderpay.errors import InvalidSignature, OrderpayError, RouteNotFound
from orderpay.http.answers import answer_for
from orderpay.http.bodies import read_asgi_body
from orderpay.metrics import metrics
from orderpay.payments.callbacks import Answer, CallbackResult, parse_callback

if TYPE_CHECKING:
    from orderpay.http.confirmer import Confirmer
    from orderpay.payments.signed_callbacks import SignedCallbacks
    from orderpay.store.wakeups import Nudger

log = logging.getLogger("orderpay.server")

PATHS = frozenset({"/api/webhooks/momo/", "/api/webhooks/momo"})
# One processed callback in this many is logged: at thousands per second a line each would
# cost more than the callback's own work, and the counters count them all.
SUCCESS_LOG_SAMPLE = 100
JSON_HEADERS = [(b"content-type", b"application/json")]


class MomoRoute:
    def __init__(
        self,
        callbacks: SignedCallbacks,
        secrets: list[bytes],
        confirmer: Confirmer,
        nudger: Nudger,
    ) -> None:
        self.callbacks = callbacks
        self.secrets = secrets
        self.confirmer = confirmer
        self.nudger = nudger
        self._processed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            result = await self._settle(scope, receive)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as error:
            _log_refusal(error, scope["method"])
            await answer_for(error, scope["method"], scope["path"])(scope, receive, send)
            return
        payment = str(result.payment_id) if result.payment_id else None
        body = json.dumps(
            {"status": result.answer.value, "payment": payment},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        await respond(send, 200, body)
        if result.notification_queued:
            self.nudger.nudge()  # the relay's wake-up, after the answer went
        if result.confirm is not None:
            self.confirmer.submit(result.confirm, "signed callback, confirmed by status")

    async def _settle(self, scope: Scope, receive: Receive) -> CallbackResult:
        if scope["method"] != "POST":
            raise HTTPException(405, headers={"Allow": "POST"})
        if not self.secrets:
            raise RouteNotFound("not found")  # nobody is configured to sign callbacks here
        counted = metrics().callbacks
        try:
            headers = Headers(scope=scope)
            body = await read_asgi_body(headers, receive)
            try:
                verified = verify(body, headers, self.secrets)
            except InvalidSignature as error:
                # The one line for this callback: the sender is told no detail.
                log.info("callback refused: %s", error.message)
                raise InvalidSignature("invalid signature") from None
            callback = parse_callback(body, webhook_id=verified.webhook_id)
            result = await self.callbacks.apply(callback)
            if result.error is not None:  # kept as unmatched and committed: 404, retried
                raise result.error
        except OrderpayError as error:
            counted.labels("momo", error.code).inc()
            raise
        counted.labels("momo", result.answer.value).inc()
        self._log(callback.status.value, result)
        return result

    def _log(self, status: str, result: CallbackResult) -> None:
        answer = result.answer.value
        if result.answer is not Answer.PROCESSED:
            log.info("callback %s for payment %s: %s", status, result.payment_id, answer)
            return
        self._processed += 1
        if self._processed % SUCCESS_LOG_SAMPLE == 1:  # the first, then one in SAMPLE
            log.info(
                "callback %s for payment %s: %s (1 processed callback in %d logged)",
                status,
                result.payment_id,
                answer,
                SUCCESS_LOG_SAMPLE,
            )


def _log_refusal(error: Exception, method: str) -> None:
    """The callback's one line when it is refused: answer_for logs only what the caller is
    not told, and a bad signature has its line already."""
    if isinstance(error, HTTPException):
        log.info("callback answered %d on %s", error.status_code, method)
    elif (
        isinstance(error, OrderpayError)
        and not isinstance(error, InvalidSignature)
        and error.public_message == error.message
    ):
        log.info("callback answered %s: %s", error.code, error.message)


async def respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
