"""The embedded worker: with no Redis, notifications are delivered straight from the outbox.

The same delivery code as the RQ job (delivery.py). Each row is claimed right before it is
sent (store.outbox.claim_next_due: FOR UPDATE SKIP LOCKED on Postgres, SQLite's single writer
lock otherwise), never a batch at once: a claim's lease then covers one send only, so a second
drain that starts after a lease ran out never finds a row this one is still about to send.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from orderpay.clock import utcnow
from orderpay.notify.delivery import Channels, Delivery, DeliveryResult, RetryPolicy, send_attempt
from orderpay.store import outbox
from orderpay.store.db import Database, retrying

log = logging.getLogger("orderpay.drain")


class Drain:
    def __init__(
        self, database: Database, channels: Channels, policy: RetryPolicy, merchant_name: str
    ) -> None:
        self.database = database
        self.channels = channels
        self.policy = policy
        self.merchant_name = merchant_name

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
        """Deliver everything due now, one row at a time, until nothing is due or `stop`."""
        results: list[DeliveryResult] = []
        while stop is None or not stop.is_set():
            result = self.drain_one()
            if result is None:
                break
            results.append(result)
        return results

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Deliver until `stop` is set: on every NOTIFY, and every `poll_seconds` anyway."""
        from orderpay.store.wakeups import run_on_wakeups

        run_on_wakeups(
            self.database.engine, poll_seconds, stop, lambda: self.drain_due(stop), "drain"
        )
