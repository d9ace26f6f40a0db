"""Outages of the database and of Redis as a long-running process's log tells them.

A worker's threads (relay, jobs, catch-up, scheduler) and a listener's requests all meet the
same outage, each of them many times: the log says it once, a WARNING when it begins and an
INFO when it ends, whichever thread saw it first. Failures in between are DEBUG lines. Details
are redacted (domain.redaction.redact_urls): an error may quote a URL with its password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orderpay.domain.redaction import redact_urls

log = logging.getLogger("orderpay.outages")


class Outage:
    """One dependency's outages in one process.

    `failed(detail)` on every failure and `recovered()` on every success. A process that never
    learns of a success (the listener is not told when the database answers again) gives
    `forget_after`: a failure that long after the last one starts a new outage.
    """

    def __init__(
        self,
        what: str,
        *,
        forget_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.forget_after = forget_after
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last: float = 0.0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, detail: str) -> None:
        """A step failed because `what` is unreachable: a WARNING if that starts an outage."""
        now = self.clock()
        with self._lock:
            stale = self.forget_after is not None and now - self._last > self.forget_after
            starts = self._since is None or stale
            if starts:
                self._since = now
            self._last = now
        if starts:
            log.warning("outage of %s began: %s", self.what, redact_urls(detail))
        else:
            log.debug("outage of %s goes on: %s", self.what, redact_urls(detail))

    def recovered(self, started: float | None = None) -> None:
        """A step that needed `what` succeeded: an INFO if an outage was on. `started`: when
        that step began (`clock()`); one that began before the outage did (another thread's,
        finishing just as `what` went away) says nothing of its end."""
        if self._since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if started is not None and self._since is not None and started < self._since:
                return
            since, self._since = self._since, None
        if since is not None:
            log.info("outage of %s ended after %.1f s", self.what, self.clock() - since)


# A process that sees no success (the listener) takes a failure this long after the last one
# for a new outage; a worker, whose steps fail every few seconds while one lasts, is told of
# the end long before.
FORGET_AFTER_SECONDS = 60.0

_outages: dict[str, Outage] = {}
_registry = threading.Lock()


def outage(what: str) -> Outage:
    """This process's record of `what`'s outages (one per name: "Redis", "the database")."""
    with _registry:
        if what not in _outages:
            _outages[what] = Outage(what, forget_after=FORGET_AFTER_SECONDS)
        return _outages[what]


def redis_outage() -> Outage:
    return outage("Redis")


def database_outage() -> Outage:
    return outage("the database")
