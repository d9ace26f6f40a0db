"""Confirming hinted payments with their provider, off the request threads.

An unsigned MTN callback (or a signed callback about an MTN payment) is only a hint: the
payment's provider is asked before anything moves. Those status calls run here, on a few
threads of their own, at most one at a time per payment: however many hints arrive, they never
take the threads that serve signed callbacks and charges, and never ask twice at once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from orderpay.errors import OrderpayError
from orderpay.payments.confirmation import confirm_payment

if TYPE_CHECKING:
    from orderpay.providers.base import StatusAnswer
    from orderpay.runtime import Runtime
    from orderpay.store.payments import Payment

log = logging.getLogger("orderpay.server")

CONFIRM_THREADS = 2


class Confirmer:
    def __init__(self, runtime: Runtime, threads: int = CONFIRM_THREADS) -> None:
        self.runtime = runtime
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="confirm")
        self._lock = threading.Lock()
        self._in_flight: dict[uuid.UUID, Future[None]] = {}

    def submit(
        self, payment: Payment, source: str, hint: StatusAnswer | None = None
    ) -> Future[None] | None:
        """Ask about `payment` soon; None if a confirmation of it is already under way.
        `hint`: what the callback said (kept with a confirmed success: its receipt)."""
        with self._lock:
            if payment.id in self._in_flight:
                return None
            try:
                future = self._pool.submit(self._confirm, payment, source, hint)
            except RuntimeError:  # shutting down: reconcile settles it later
                return None
            self._in_flight[payment.id] = future
            return future

    def _confirm(self, payment: Payment, source: str, hint: StatusAnswer | None) -> None:
        runtime = self.runtime
        try:
            result = confirm_payment(
                runtime.database,
                runtime.provider_for(payment.provider),
                payment,
                notify=runtime.notify_target(),
                source=source,
                lease=timedelta(seconds=runtime.settings.charge_lease_seconds),
                hint=hint,
            )
        except OrderpayError as error:  # reconcile settles it later
            log.warning("confirming payment %s failed: %s", payment.id, error.message)
            return
        finally:
            self._done(payment.id)
        if result.notification_queued:
            runtime.nudger.nudge()
        log.info(
            "payment %s confirmed: %s -> %s (%s)",
            payment.id,
            result.before,
            result.after,
            result.remote,
        )

    def _done(self, payment_id: uuid.UUID) -> None:
        with self._lock:
            self._in_flight.pop(payment_id, None)

    def wait(self, timeout: float = 30) -> None:
        """Until every confirmation asked for so far has finished (tests, shutdown)."""
        with self._lock:
            pending = list(self._in_flight.values())
        for future in pending:
            future.result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
