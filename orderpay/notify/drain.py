"""The embedded worker: with no Redis, notifications are delivered straight from the outbox.

The same delivery code as the RQ job. Each row is claimed right before it is sent (FOR UPDATE
SKIP LOCKED on Postgres, SQLite's single writer lock otherwise), never long before: a claim's
lease then covers its one send, so a second drain that starts after a lease ran out never
finds a row this one is still about to send. With a Sender (the worker's), the due rows go
out as the RQ job's do, many in flight (notify.in_flight); without one, one at a time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from orderpay.clock import utcnow
from orderpay.notify.delivery import Channels, Delivery, DeliveryResult, RetryPolicy, send_attempt
from orderpay.store import outbox
from orderpay.store.db import Database, retrying
from orderpay.store.notifications import due_ids

if TYPE_CHECKING:
    from orderpay.notify.sending import Sender

log = logging.getLogger("orderpay.drain")

# Due rows looked up at once by a drain with a Sender (each still claimed right before its send).
DRAIN_BATCH = 500


class Drain:
    def __init__(
        self,
        database: Database,
        channels: Channels,
        policy: RetryPolicy,
        merchant_name: str,
        sender: Sender | None = None,
    ) -> None:
        self.database = database
        self.channels = channels
        self.policy = policy
        self.merchant_name = merchant_name
        self.sender = sender

    def drain_one(self) -> DeliveryResult | None:
        """Claim the next due row and deliver it; None when nothing is due."""
        lease = timedelta(seconds=self.policy.lease_seconds)
        most = self.policy.max_attempts
        attempt = retrying(
            self.database, lambda conn: outbox.claim_next_due(conn, lease, utcnow(), most)
        )
        if attempt is None:
            # Nothing to claim: rows whose last try ended without an outcome are failed.
            retrying(
                self.database, lambda conn: outbox.fail_without_tries_left(conn, most, utcnow())
            )
            return None
        result = send_attempt(
            self.database,
            self.channels,
            attempt,
            merchant_name=self.merchant_name,
            policy=self.policy,
        )
        if result.outcome is not Delivery.SENT:
            log.info(
                "notification %s: %s (%s)",
                attempt.notification_id,
                result.outcome.value,
                result.error,
            )
        return result

    def drain_due(self, stop: threading.Event | None = None) -> list[DeliveryResult]:
        """Deliver everything due now until nothing is due or `stop`: one row at a time, or
        with a Sender many in flight."""
        if self.sender is not None:
            return self._drain_in_flight(self.sender, stop)
        results: list[DeliveryResult] = []
        while stop is None or not stop.is_set():
            result = self.drain_one()
            if result is None:
                break
            results.append(result)
        return results

    def _drain_in_flight(
        self, sender: Sender, stop: threading.Event | None
    ) -> list[DeliveryResult]:
        from orderpay.notify.in_flight import deliver_concurrently

        most = self.policy.max_attempts
        results: list[DeliveryResult] = []
        while stop is None or not stop.is_set():
            ids = retrying(self.database, lambda conn: due_ids(conn, utcnow(), DRAIN_BATCH, most))
            if not ids:
                # Nothing to claim: rows whose last try ended without an outcome are failed.
                retrying(
                    self.database,
                    lambda conn: outbox.fail_without_tries_left(conn, most, utcnow()),
                )
                break
            batch = deliver_concurrently(
                self.database,
                self.channels,
                sender,
                ids,
                merchant_name=self.merchant_name,
                policy=self.policy,
                stop=stop.is_set if stop is not None else lambda: False,
            )
            results += batch.results
            if all(result.outcome is Delivery.SKIPPED for result in batch.results):
                break  # every row was taken by another drain meanwhile
        return results

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Deliver until `stop` is set: on every NOTIFY, and every `poll_seconds` anyway."""
        from orderpay.store.wakeups import run_on_wakeups

        run_on_wakeups(
            self.database.engine, poll_seconds, stop, lambda: self.drain_due(stop), "drain"
        )
