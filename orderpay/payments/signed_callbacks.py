"""One listener worker's signed callbacks: which path settles each, and the asyncpg pool's life.

On Postgres a callback goes first to this worker's CallbackBatcher (callback_batches.py),
over an asyncpg pool made at start-up; whatever a batch does not settle, and every callback
while there is no pool or on SQLite, runs the ordinary transaction (callbacks.apply_callback)
through `blocking` (the server's worker threads). A database that does not answer at start-up
does not stop the listener: callbacks take the ordinary path (which answers 503 while it is
down) and the pool is tried again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from orderpay.errors import DatabaseUnavailable, OrderpayError
from orderpay.payments.callbacks import Callback, CallbackResult, apply_callback
from orderpay.store.db import Database, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.outages import database_outage

if TYPE_CHECKING:
    from orderpay.payments.callback_batches import CallbackBatcher

log = logging.getLogger("orderpay.server")

T = TypeVar("T")
Blocking = Callable[[Callable[[], T]], Awaitable[T]]

# After the pool could not be made, it is tried again after this long.
POOL_RETRY_SECONDS = 5.0
# A batch's failure (not an answer) is logged at most this often; the callback falls back.
BATCH_FAILURE_LOG_SECONDS = 10.0
POOL_CLOSE_SECONDS = 10.0


class SignedCallbacks:
    def __init__(
        self,
        database: Database,
        checked: Callable[[], Database],
        notify: NotifyTarget,
        blocking: Blocking[CallbackResult],
    ) -> None:
        """`database`: the listener's; `checked`: the same, once its schema is known to be
        this code's (asked when the ordinary path first needs it)."""
        self.database = database
        self.checked = checked
        self.notify = notify
        self.blocking = blocking
        # Off: every callback takes the ordinary transaction (tests compare the two paths).
        self.batches = database.dialect == "postgresql"
        self.pool: Any = None  # asyncpg.Pool once made
        self.batcher: CallbackBatcher | None = None  # once the pool is made
        self._pool_lock: asyncio.Lock | None = None
        self._pool_retry_at = 0.0
        self._failure_logged_at = -BATCH_FAILURE_LOG_SECONDS

    async def open(self) -> None:
        """Make this worker's asyncpg pool (Postgres only), unless a recent try failed."""
        if self.database.dialect != "postgresql" or self.pool is not None:
            return
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self.pool is not None or time.monotonic() < self._pool_retry_at:
                return
            try:
                from orderpay.payments.callback_batches import CallbackBatcher, settle_batch
                from orderpay.store.async_db import create_pool

                # A connection per batch in flight: the batcher never needs more.
                size = CallbackBatcher.MAX_IN_FLIGHT
                self.pool = await create_pool(self.database.url, min_size=size, max_size=size)
                settle = partial(
                    settle_batch, self.pool, notify=self.notify, label=self.database.label
                )
                self.batcher = CallbackBatcher(settle)
            except Exception as error:  # the driver's or the socket's: the ordinary path
                self._pool_retry_at = time.monotonic() + POOL_RETRY_SECONDS
                log.warning(
                    "callbacks take the ordinary path for now: no asyncpg pool (%s)",
                    type(error).__name__,
                )

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        self.batcher = None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
            except TimeoutError:
                pool.terminate()

    async def apply(self, callback: Callback) -> CallbackResult:
        """Settle the callback: in a batch when one can, else in the ordinary transaction."""
        if self.database.dialect == "postgresql" and self.pool is None:
            await self.open()
        if self.batches and self.batcher is not None:
            try:
                result = await self.batcher.settle(callback)
            except DatabaseUnavailable as error:
                self._batch_failed(error)  # the ordinary path answers 503 if it is down
            except OrderpayError:
                raise  # an answer, the same as the ordinary path gives
            except Exception as error:  # the driver's or the socket's: nothing answered yet
                self._batch_failed(error)
            else:
                if result is not None:
                    return result
        return await self.blocking(partial(self._ordinary, callback))

    def _ordinary(self, callback: Callback) -> CallbackResult:
        return retrying(self.checked(), lambda conn: apply_callback(conn, callback, self.notify))

    def _batch_failed(self, error: Exception) -> None:
        if isinstance(error, DatabaseUnavailable):  # an outage: its one line is store.outages'
            database_outage().failed(f"a batch of callbacks failed: {error.message}")
            return
        now = time.monotonic()
        if now - self._failure_logged_at >= BATCH_FAILURE_LOG_SECONDS:
            self._failure_logged_at = now
            log.warning(
                "a batch of callbacks failed, the ordinary path took them: %s: %s",
                type(error).__name__,
                getattr(error, "message", error),
            )
