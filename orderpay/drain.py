"""The embedded worker: with no Redis, notifications are delivered straight from the outbox.

The same delivery code as the RQ job (delivery.py). Rows are claimed with FOR UPDATE SKIP LOCKED
on Postgres (and under SQLite's single writer lock), each claim a compare-and-set with a lease,
so several drains never send one row twice.
"""

from __future__ import annotations

import logging
import threading

from orderpay.channels import Channel
from orderpay.clock import utcnow
from orderpay.db import Database
from orderpay.delivery import (
    Attempt,
    Delivery,
    DeliveryResult,
    RetryPolicy,
    claim_due_attempts,
    release_attempt,
    send_attempt,
)

log = logging.getLogger("orderpay.drain")

# Small batches: a stop request waits for at most the attempt in flight, and a claimed row is
# never held long by a busy worker while another is idle.
DRAIN_BATCH = 20


class Drain:
    def __init__(
        self, database: Database, channel: Channel, policy: RetryPolicy, merchant_name: str,
        batch: int = DRAIN_BATCH,
    ) -> None:  # fmt: skip
        self.database = database
        self.channel = channel
        self.policy = policy
        self.merchant_name = merchant_name
        self.batch = batch

    def drain_once(self, stop: threading.Event | None = None) -> list[DeliveryResult]:
        with self.database.transaction() as conn:
            attempts = claim_due_attempts(conn, self.policy, utcnow(), self.batch)
        results = []
        for index, attempt in enumerate(attempts):
            if stop is not None and stop.is_set():
                self._release(attempts[index:])
                break
            result = send_attempt(
                self.database, self.channel, attempt,
                merchant_name=self.merchant_name, policy=self.policy,
            )  # fmt: skip
            if result.outcome is not Delivery.SENT:
                log.info("notification %s: %s (%s)", attempt.notification_id,
                         result.outcome.value, result.error)  # fmt: skip
            results.append(result)
        return results

    def drain_due(self, stop: threading.Event | None = None) -> list[DeliveryResult]:
        """Deliver everything due now, batch after batch."""
        results: list[DeliveryResult] = []
        while stop is None or not stop.is_set():
            batch = self.drain_once(stop)
            results.extend(batch)
            if len(batch) < self.batch:
                break
        return results

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Deliver until `stop` is set: on every NOTIFY, and every `poll_seconds` anyway."""
        from orderpay.wakeups import run_on_wakeups

        run_on_wakeups(
            self.database.engine, poll_seconds, stop, lambda: self.drain_due(stop), "drain"
        )

    def _release(self, unsent: list[Attempt]) -> None:
        """Give back attempts claimed but not started, so they need not wait out the lease."""
        with self.database.transaction() as conn:
            for attempt in unsent:
                release_attempt(conn, attempt)
