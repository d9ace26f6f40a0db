"""Waking the relay: Postgres LISTEN/NOTIFY when available, a poll interval always.

The settling transaction NOTIFYs the outbox channel, which Postgres delivers only on commit.
A lost connection, or SQLite (no NOTIFY), falls back to polling; correctness never depends on
a notification arriving, only latency does.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from typing import Any

from sqlalchemy import Engine

from orderpay.notifications import OUTBOX_CHANNEL

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
            log.warning("LISTEN connection lost (%s); polling", type(error).__name__)
            self.close()
            stop.wait(self.poll_seconds)

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                self._raw.invalidate()
            self._raw = None
