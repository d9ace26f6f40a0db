"""Waking the relay: Postgres LISTEN/NOTIFY when available, a poll interval always.

After a commit that wrote outbox rows, the writer NOTIFYs the outbox channel (Nudger). A lost
connection, or SQLite (no NOTIFY), falls back to polling; correctness never depends on a
notification arriving, only latency does.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from orderpay.store.notifications import OUTBOX_CHANNEL
from orderpay.store.outages import database_outage, redis_outage

log = logging.getLogger("orderpay.relay")


class Wakeups:
    def __init__(self, engine: Engine, poll_seconds: float) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self._raw: Any = None
        self._listens = engine.dialect.name == "postgresql"

    def _connect(self) -> Any:
        if self._raw is None:
            raw = self.engine.raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            driver.autocommit = True
            with driver.cursor() as cursor:
                cursor.execute(f"LISTEN {OUTBOX_CHANNEL}")
            self._raw = raw
        return self._raw.driver_connection

    def wait(self, stop: threading.Event) -> None:
        """Return when a notification arrives, the poll interval passes, or `stop` is set."""
        if stop.is_set():
            return
        if not self._listens:
            stop.wait(self.poll_seconds)
            return
        try:
            connection = self._connect()
            # Short slices, so a stop request is seen quickly.
            slice_seconds = min(self.poll_seconds, 0.5)
            waited = 0.0
            while waited < self.poll_seconds and not stop.is_set():
                readable, _, _ = select.select([connection], [], [], slice_seconds)
                if readable:
                    connection.poll()
                    if connection.notifies:
                        connection.notifies.clear()
                        return
                waited += slice_seconds
        except Exception as error:  # the database went away: poll until it is back
            database_outage().failed(f"LISTEN connection lost ({type(error).__name__}); polling")
            self.close()
            stop.wait(self.poll_seconds)

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                self._raw.invalidate()
            self._raw = None


def run_on_wakeups(
    engine: Engine,
    poll_seconds: float,
    stop: threading.Event,
    step: Callable[[], object],
    what: str,
) -> None:
    """Run `step` now and on every wake-up until `stop` is set. A database or queue outage
    (an OrderpayError) pauses the loop until the next wake-up; it never ends it, and the log
    tells it once (store.outages). A step reads the database first: one that ends well means
    the database is back."""
    from orderpay.errors import DatabaseUnavailable, OrderpayError, QueueUnavailable

    wakeups = Wakeups(engine, poll_seconds)
    try:
        while not stop.is_set():
            began = database_outage().clock()
            try:
                step()
            except DatabaseUnavailable as error:
                database_outage().failed(f"{what} paused: {error.message}")
            except QueueUnavailable as error:
                redis_outage().failed(f"{what} paused: {error.message}")
            except OrderpayError as error:
                log.warning("%s paused: %s", what, error.message)
            else:
                database_outage().recovered(began)
            wakeups.wait(stop)
    finally:
        wakeups.close()


class Nudger:
    """Wakes the relays after a commit that wrote outbox rows: `NOTIFY orderpay_outbox`.

    Sent after the commit, never inside the settling transaction: Postgres holds one cluster-wide
    lock from a notifying transaction's pre-commit until its commit record is flushed, which
    serialises every settling commit behind the disk (measured: settling throughput drops
    sharply). `nudge()` coalesces a burst into one NOTIFY from a background thread;
    `notify_now()` sends one at once.
    """

    # Long enough to turn a burst of commits into one NOTIFY, short next to a relay's poll.
    COALESCE_SECONDS = 0.02

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def notify_now(self) -> None:
        if not self._enabled:
            return
        try:
            with self.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"NOTIFY {OUTBOX_CHANNEL}"
                )
        except Exception as error:  # the relay's poll will find the rows anyway
            log.warning("could not wake the relay (%s)", type(error).__name__)

    def nudge(self) -> None:
        if not self._enabled or self._closed:
            return
        self._wanted.set()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="relay-nudger", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._closed:
                return
            time.sleep(self.COALESCE_SECONDS)
            self._wanted.clear()
            self.notify_now()

    def close(self) -> None:
        """Send what is still wanted, then stop the thread."""
        wanted = self._wanted.is_set()
        self._closed = True
        self._wanted.set()  # the thread wakes, sees it is closed and ends
        if self._thread is not None:
            self._thread.join(timeout=2)
        if wanted:
            self.notify_now()
