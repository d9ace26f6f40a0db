"""POST /api/webhooks/momo/ as a bare ASGI handler in front of the Starlette app.

The signed callback is the listener's hot path: under load Starlette's routing, Request objects
and middleware cost about as much Python time per callback as the database work, and the
thread-pool hop as much again (issue 12's measurements). This handler answers exactly as the
Starlette route did (same 64 KiB limit, signature check, bodies, status codes and headers,
DESIGN.md sections 5-7) with none of that:

* on Postgres it settles the callback on the event loop through this worker process's
  CallbackBatcher and asyncpg pool (payments.fast_callbacks: one round trip per batch of
  callbacks for the common case); when that says "fallback" (nothing written: a mismatch, an
  unknown reference...) or the pool is not there, today's transaction
  (payments.callbacks.apply_callback) runs in the thread pool, as every callback did before;
* on SQLite it always takes today's path;
* it logs one line per callback that is not `processed` and one in SUCCESS_LOG_SAMPLE of the
  processed ones, counts every callback in orderpay_callbacks_total, and observes no latency
  histogram (server.AccessLog wraps the Starlette app only).

Every other path goes to the Starlette app unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from orderpay.domain.signatures import verify
from orderpay.errors import (
    DatabaseUnavailable,
    InvalidSignature,
    OrderpayError,
    RouteNotFound,
)
from orderpay.http.answers import error_json, public_error
from orderpay.http.bodies import read_asgi_body
from orderpay.metrics import metrics
from orderpay.payments.callbacks import (
    Answer,
    Callback,
    CallbackResult,
    apply_callback,
    parse_callback,
)
from orderpay.store.db import retrying

if TYPE_CHECKING:
    from orderpay.http.confirmer import Confirmer
    from orderpay.payments.fast_callbacks import CallbackBatcher
    from orderpay.runtime import Runtime

log = logging.getLogger("orderpay.server")

PATHS = frozenset({"/api/webhooks/momo/", "/api/webhooks/momo"})
# One processed callback in this many is logged: at thousands per second a line each would
# cost more than the callback's own Python work, and the counters already count them all.
SUCCESS_LOG_SAMPLE = 100
# After the pool could not be made (the database was down at start-up, say), callbacks take
# the ordinary path, which answers 503 while the database is down; the pool is tried again
# after this long.
POOL_RETRY_SECONDS = 5.0
# A fast-path failure (not an answer) is logged at most this often; the callback falls back.
FAST_FAILURE_LOG_SECONDS = 10.0
POOL_CLOSE_SECONDS = 10.0
JSON_HEADERS = [(b"content-type", b"application/json")]


class MomoRoute:
    """The ASGI app: the callback route, and `app` (Starlette) for everything else."""

    def __init__(self, app: ASGIApp, runtime: Runtime, confirmer: Confirmer) -> None:
        self.app = app
        self.runtime = runtime
        self.confirmer = confirmer
        self.secrets = runtime.settings.webhook_secrets()
        self.notify = runtime.notify_target()
        self.postgres = runtime.raw_database.dialect == "postgresql"
        self.pool: Any = None  # asyncpg.Pool once made
        self.batcher: CallbackBatcher | None = None  # once the pool is made
        # Off: every callback takes the ordinary transaction (tests compare the two paths).
        self.fast_path = True
        self._pool_lock: asyncio.Lock | None = None
        self._pool_retry_at = 0.0
        self._fast_failure_logged_at = -FAST_FAILURE_LOG_SECONDS
        self._processed = 0

    @property
    def state(self) -> Any:
        """The Starlette app's state (runtime, confirmer), as tests and tools reach it."""
        return self.app.state  # type: ignore[attr-defined]

    # --- the pool: made at start-up, closed at shutdown (the app's lifespan) --------------

    async def open_pool(self) -> None:
        """Make this process's asyncpg pool (Postgres only). A database that does not answer
        does not stop the listener: callbacks take the ordinary path (503 while it is down)
        and the pool is tried again later."""
        if not self.postgres or self.pool is not None:
            return
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self.pool is not None or time.monotonic() < self._pool_retry_at:
                return
            try:
                from orderpay.payments.fast_callbacks import CallbackBatcher, settle_batch
                from orderpay.store.async_db import create_pool

                # A connection per batch in flight: the batcher never needs more.
                size = CallbackBatcher.MAX_IN_FLIGHT
                self.pool = await create_pool(
                    self.runtime.settings.database_url, min_size=size, max_size=size
                )
                self.batcher = CallbackBatcher(
                    partial(
                        settle_batch,
                        self.pool,
                        notify=self.notify,
                        label=self.runtime.raw_database.label,
                    )
                )
            except Exception as error:  # the driver's or the socket's: the ordinary path
                self._pool_retry_at = time.monotonic() + POOL_RETRY_SECONDS
                log.warning(
                    "callbacks take the ordinary path for now: no asyncpg pool (%s)",
                    type(error).__name__,
                )

    async def close_pool(self) -> None:
        pool, self.pool = self.pool, None
        self.batcher = None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
            except TimeoutError:
                pool.terminate()

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PATHS:
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, document, result = await self.callback(scope, receive)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as error:
            await self.refuse(scope, receive, send, error)
            return
        await respond(send, status, document)
        self.after(result)

    async def callback(self, scope: Scope, receive: Receive) -> tuple[int, bytes, CallbackResult]:
        """Today's momo_webhook, step by step: (status, body, result) or an error to answer."""
        if scope["method"] != "POST":
            raise HTTPException(405, headers={"Allow": "POST"})
        if not self.secrets:
            raise RouteNotFound("not found")  # nobody is configured to sign callbacks here
        try:
            headers = Headers(scope=scope)
            body = await read_asgi_body(headers, receive)
            try:
                verified = verify(body, headers, self.secrets)
            except InvalidSignature as error:
                # The one line for this callback; the sender is told no detail.
                log.info("callback refused: %s", error.message)
                raise _Refused(InvalidSignature("invalid signature")) from None
            callback = parse_callback(body, webhook_id=verified.webhook_id)
            result = await self.apply(callback)
            if result.error is not None:  # kept as unmatched and committed: 404, retried
                raise result.error
        except _Refused as refused:
            metrics().callbacks.labels("momo", refused.error.code).inc()
            raise
        except OrderpayError as error:
            metrics().callbacks.labels("momo", error.code).inc()
            raise
        answer = result.answer.value
        metrics().callbacks.labels("momo", answer).inc()
        if result.answer is Answer.PROCESSED:
            self._processed += 1
            if self._processed % SUCCESS_LOG_SAMPLE == 1:  # the first, then one in SAMPLE
                log.info(
                    "callback %s for payment %s: %s (1 processed callback in %d logged)",
                    callback.status.value,
                    result.payment_id,
                    answer,
                    SUCCESS_LOG_SAMPLE,
                )
        else:
            log.info(
                "callback %s for payment %s: %s", callback.status.value, result.payment_id, answer
            )
        payment = str(result.payment_id) if result.payment_id else None
        document = json.dumps(
            {"status": answer, "payment": payment}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        return 200, document, result

    async def apply(self, callback: Callback) -> CallbackResult:
        """The fast path when there is a pool and it decides; else today's transaction."""
        if self.postgres and self.pool is None and time.monotonic() >= self._pool_retry_at:
            await self.open_pool()
        if self.fast_path and self.batcher is not None:
            try:
                result = await self.batcher.settle(callback)
            except DatabaseUnavailable as error:
                self._fast_failed(error)  # the ordinary path answers 503 if it is down
            except OrderpayError:
                raise  # an answer (a mismatch, say): the same as the ordinary path gives
            except Exception as error:  # the driver's or the socket's: nothing is answered yet
                self._fast_failed(error)
            else:
                if result is not None:
                    return result
        return await run_in_threadpool(self.apply_in_transaction, callback)

    def apply_in_transaction(self, callback: Callback) -> CallbackResult:
        runtime = self.runtime
        return retrying(runtime.database, lambda conn: apply_callback(conn, callback, self.notify))

    def _fast_failed(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._fast_failure_logged_at >= FAST_FAILURE_LOG_SECONDS:
            self._fast_failure_logged_at = now
            log.warning(
                "fast callback path failed, ordinary path taken: %s: %s",
                type(error).__name__,
                getattr(error, "message", error),
            )

    def after(self, result: CallbackResult) -> None:
        """What the answer set going: the relay's wake-up and the provider's confirmation."""
        if result.notification_queued:
            self.runtime.nudger.nudge()
        if result.confirm is not None:
            self.confirmer.submit(result.confirm, "signed callback, confirmed by status")

    async def refuse(self, scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
        """Answer `error` as server.error_response would, with one log line for it."""
        if isinstance(error, _Refused):
            error = error.error  # logged already, with the detail the sender is not told
        else:
            shown = public_error(error)
            if isinstance(shown, OrderpayError):
                if shown.public_message != shown.message:
                    log.error(
                        "%s on %s %s: %s", shown.code, scope["method"], scope["path"], shown.message
                    )
                else:
                    log.info("callback answered %s: %s", shown.code, shown.message)
            elif isinstance(shown, HTTPException):
                log.info("callback answered %d on %s", shown.status_code, scope["method"])
            else:
                log.error(
                    "unhandled error on %s %s", scope["method"], scope["path"], exc_info=error
                )
            error = shown
        await error_json(error)(scope, receive, send)


class _Refused(Exception):
    """An error to answer whose log line is written already."""

    def __init__(self, error: OrderpayError) -> None:
        self.error = error


async def respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
