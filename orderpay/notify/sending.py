"""Many sends in flight from one worker: an event loop on a thread of its own, and each
channel's pace in this process (a cap on sends in flight, an optional rate, a pause after the
gateway asks to slow down).

The job's thread claims, renders and records (notify.delivery); the loop only sends. A send
is a coroutine on the loop that ends by its deadline (notify.async_http), so a job waiting on
one never waits past its row's lease.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orderpay.notify.async_http import AsyncHttp
from orderpay.notify.channels import Channel, OutgoingMessage

# The pause after a 429 that named no Retry-After: doubled on each further 429, back to the
# first after a send goes through.
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    max_in_flight: int  # sends started and not yet answered, in this worker process
    per_second: float | None = None  # sends started per second in this process; None: no limit


class Throttle:
    """One channel's pace in this process. Not thread-safe: used by the job's thread only."""

    def __init__(self, limits: ChannelLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.in_flight = 0
        self.paused_until = 0.0
        self._pause = 0.0
        # A token bucket holding one second's sends (at least one): a quiet channel may start
        # that many at once, then one every 1/per_second.
        self._capacity = max(1.0, limits.per_second or 0.0)
        self._tokens = self._capacity
        self._stamp = clock()

    def _refill(self, now: float) -> None:
        rate = self.limits.per_second
        if rate is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    def free(self) -> int:
        """How many sends may start now."""
        now = self.clock()
        if now < self.paused_until:
            return 0
        slots = self.limits.max_in_flight - self.in_flight
        if self.limits.per_second is None:
            return max(0, slots)
        self._refill(now)
        return max(0, min(slots, math.floor(self._tokens)))

    def next_start(self) -> float | None:
        """When a send could start (clock time), if none can now but one will without a send
        ending first; None otherwise."""
        now = self.clock()
        if now < self.paused_until:
            return self.paused_until
        rate = self.limits.per_second
        if rate is None or self.in_flight >= self.limits.max_in_flight:
            return None
        self._refill(now)
        return now + max(0.0, 1.0 - self._tokens) / rate

    def started(self) -> None:
        self.in_flight += 1
        if self.limits.per_second is not None:
            self._refill(self.clock())
            self._tokens -= 1.0

    def ended(self, *, throttled: bool = False, retry_after: float | None = None) -> None:
        """A send ended; `throttled`: the gateway asked to slow down, so the channel pauses."""
        self.in_flight -= 1
        if not throttled:
            self._pause = 0.0
            return
        if retry_after is None:
            self._pause = min(LONGEST_PAUSE_SECONDS, max(FIRST_PAUSE_SECONDS, self._pause * 2))
            wait = self._pause
        else:
            wait = retry_after
        self.paused_until = max(self.paused_until, self.clock() + wait)


class Sender:
    """This process's event loop for sends, on a daemon thread started on first use, with one
    pool of kept-alive connections; and a Throttle per channel."""

    def __init__(self, limits: Callable[[str], ChannelLimits]) -> None:
        self._limits = limits
        self._throttles: dict[str, Throttle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: AsyncHttp | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def throttle(self, channel: str) -> Throttle:
        if channel not in self._throttles:
            self._throttles[channel] = Throttle(self._limits(channel))
        return self._throttles[channel]

    def submit(
        self, channel: Channel, message: OutgoingMessage, deadline: float | None
    ) -> concurrent.futures.Future[str]:
        """Start sending `message` through `channel` on the loop; its message id, or its
        error, when it ends."""
        loop, http = self._running()
        coroutine = channel.send_async(message, deadline, http)
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def _running(self) -> tuple[asyncio.AbstractEventLoop, AsyncHttp]:
        with self._lock:
            if self._loop is None or self._http is None:
                from orderpay.tls import tls_context

                loop = asyncio.new_event_loop()
                self._http = AsyncHttp(tls_context())
                self._thread = threading.Thread(
                    target=loop.run_forever, name="orderpay-sender", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop, self._http

    def forget_inherited(self) -> None:
        """In a forked child: the parent's loop thread is not here; start afresh."""
        if self._pid != os.getpid():
            self._loop, self._http, self._thread = None, None, None
            self._throttles = {}
            self._pid = os.getpid()
            self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connections and stop the loop (sends still in flight are cancelled)."""
        with self._lock:
            loop, http, thread = self._loop, self._http, self._thread
            self._loop, self._http, self._thread = None, None, None
        if loop is None or thread is None:
            return
        if http is not None:
            with contextlib.suppress(Exception):  # a loop that is gone has nothing to close
                asyncio.run_coroutine_threadsafe(_shut(http), loop).result(CLOSE_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=CLOSE_SECONDS)
        if not thread.is_alive():
            loop.close()


# How long closing waits for the loop to cancel its sends and stop.
CLOSE_SECONDS = 5.0


async def _shut(http: AsyncHttp) -> None:
    """Cancel the sends still on the loop (each closes its connection), then close the idle
    connections."""
    current = asyncio.current_task()
    sends = [task for task in asyncio.all_tasks() if task is not current]
    for task in sends:
        task.cancel()
    await asyncio.gather(*sends, return_exceptions=True)
    http.close()
