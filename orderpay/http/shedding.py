"""The listener's defences against clients that hold connections without using them.

uvicorn arms its keep-alive timer only after a response, so a connection that never sends a
byte, or sends its request a byte at a time, stays open for ever; and each one holds a file
descriptor, so enough of them make accept() fail for everyone. The HTTP protocols here (one
per uvicorn parser) close a connection whose request head is not complete within a deadline
(from connecting, or from its previous response), answer 408 and close when a body is not
complete within another, count uvicorn's idle keep-alive timeout, and cap the connections a
worker process holds below its open-file limit: past the cap the connection that has waited
longest without a complete request head is closed to make room, or, when every connection
has a request in flight, the new one is answered 503 and closed.

Every connection shed is counted (`orderpay_listener_shed_connections_total{reason}`) and
logged at most once per interval per reason, with the count since the previous line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orderpay.errors import ConfigurationError
from orderpay.metrics import metrics

if TYPE_CHECKING:
    from orderpay.config import Settings

log = logging.getLogger("orderpay.listener")

# File descriptors a worker keeps for itself beyond client connections: its database pools
# (threads' and asyncpg's), the listening socket, logs, the event loop's own. Half the limit
# when the limit is small.
RESERVED_FILES = 256


@dataclass(frozen=True)
class ConnectionLimits:
    head_seconds: float = 10.0
    body_seconds: float = 30.0
    idle_seconds: int = 5
    max_connections: int = 768
    log_interval_seconds: float = 10.0


def open_file_limit() -> int:
    """This process's soft limit on open files (RLIMIT_NOFILE)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connections_allowed(open_files: int) -> int:
    """The most client connections a worker may hold under an open-file limit of
    `open_files`, leaving RESERVED_FILES (or half, when the limit is small) for the rest."""
    return max(1, open_files - min(RESERVED_FILES, open_files // 2))


def connection_limits(settings: Settings, open_files: int) -> ConnectionLimits:
    """The listener's limits from `settings`; ConfigurationError when the configured cap
    leaves too few of the open-file limit for the worker's own files."""
    allowed = connections_allowed(open_files)
    cap = settings.listener_max_connections
    if cap is not None and cap > allowed:
        raise ConfigurationError(
            f"ORDERPAY_LISTENER_MAX_CONNECTIONS={cap} is above what the open-file limit "
            f"({open_files}) leaves for connections ({allowed}): lower it, or raise the limit "
            "(ulimit -n, systemd's LimitNOFILE)",
            variables=["ORDERPAY_LISTENER_MAX_CONNECTIONS"],
        )
    return ConnectionLimits(
        head_seconds=settings.listener_head_timeout_seconds,
        body_seconds=settings.listener_body_timeout_seconds,
        idle_seconds=settings.listener_keepalive_seconds,
        max_connections=cap if cap is not None else allowed,
        log_interval_seconds=settings.listener_shed_log_seconds,
    )


class ListenerConfig(uvicorn.Config):
    """uvicorn's configuration plus the connection limits, which travel with it to each
    worker process (uvicorn pickles its configuration for them)."""

    def __init__(self, app: Any, *, connection_limits: ConnectionLimits, **options: Any) -> None:
        options.setdefault("http", default_protocol())
        super().__init__(app, timeout_keep_alive=connection_limits.idle_seconds, **options)
        self.connection_limits = connection_limits


REASONS: dict[str, str] = {
    "head_timeout": "no complete request head within {head_seconds:g} s",
    "body_timeout": "request body not complete within {body_seconds:g} s (answered 408)",
    "idle_timeout": "idle for {idle_seconds} s after a response",
    "over_capacity": "over the cap of {max_connections} connections per worker",
}


class ShedLog:
    """One WARNING line per reason at most every `interval` seconds, with the connections shed
    for that reason since its previous line. `shed` counts one and says, when the line must
    wait, how many seconds until `flush` may write it."""

    def __init__(self, limits: ConnectionLimits, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self.held: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def shed(self, reason: str) -> float | None:
        metrics().shed.labels(reason).inc()
        self.held[reason] = self.held.get(reason, 0) + 1
        return self.flush(reason)

    def flush(self, reason: str) -> float | None:
        count = self.held.get(reason, 0)
        if not count:
            return None
        now = self.clock()
        last = self.last.get(reason)
        if last is not None and now - last < self.limits.log_interval_seconds:
            return self.limits.log_interval_seconds - (now - last)
        self.held[reason] = 0
        self.last[reason] = now
        why = REASONS[reason].format(**vars(self.limits))
        log.warning(
            "listener shed %d connection(s) since its last such line: %s",
            count,
            why,
            extra={"fields": {"reason": reason, "shed": count}},
        )
        return None


class Cycle(Protocol):
    """What the guard reads of a uvicorn request-response cycle (both parsers have it)."""

    more_body: bool
    response_started: bool
    response_complete: bool
    disconnected: bool
    message_event: asyncio.Event


class Shedder:
    """A worker's view of its connections: those waiting for a request head, oldest first
    (the ones to close when over the cap), the count held, and the log."""

    def __init__(self, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.log = ShedLog(limits)
        self.held = 0
        self.waiting: OrderedDict[ConnectionGuard, None] = OrderedDict()
        self.flushes: set[str] = set()
        # Imported here: uvicorn unpickles this module in each worker before the worker
        # answers its health check, so the module itself must import quickly.
        from starlette.exceptions import HTTPException

        from orderpay.errors import Unavailable
        from orderpay.http.answers import error_json

        self.refusal = _raw_answer(
            error_json(Unavailable("the listener is at its connection limit; retry shortly"))
        )
        self.timeout = _raw_answer(
            error_json(HTTPException(408, "the request body did not arrive in time"))
        )

    def shed(self, reason: str) -> None:
        wait = self.log.shed(reason)
        if wait is not None and reason not in self.flushes:
            self.flushes.add(reason)
            self.loop.call_later(wait, self._flush, reason)

    def _flush(self, reason: str) -> None:
        self.flushes.discard(reason)
        wait = self.log.flush(reason)
        if wait is not None:  # the timer fired a little early: wait out the rest
            self.flushes.add(reason)
            self.loop.call_later(wait, self._flush, reason)


_shedders: weakref.WeakKeyDictionary[ServerState, Shedder] = weakref.WeakKeyDictionary()


def _shedder(server_state: ServerState, config: uvicorn.Config, loop: Any) -> Shedder:
    shedder = _shedders.get(server_state)
    if shedder is None:
        limits = getattr(config, "connection_limits", None) or ConnectionLimits()
        shedder = _shedders[server_state] = Shedder(limits, loop)
    return shedder


class ConnectionGuard:
    """One connection's deadlines: a request head (from connecting or from the previous
    response), then its body; and its place among the connections waiting for a head."""

    def __init__(self, protocol: H11Protocol | HttpToolsProtocol) -> None:
        self.protocol = protocol
        self.shedder = _shedder(protocol.server_state, protocol.config, protocol.loop)
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.cycle: Cycle | None = None

    def connected(self) -> bool:
        """Whether the new connection is kept: past the cap, the longest waiting for a head
        is closed for it, or it is answered 503 when none is waiting."""
        shedder = self.shedder
        if shedder.held >= shedder.limits.max_connections:
            if shedder.waiting:
                oldest, _ = shedder.waiting.popitem(last=False)
                oldest.close("over_capacity")
            else:
                self.protocol.connections.discard(self.protocol)
                self.protocol.transport.write(shedder.refusal)
                self.protocol.transport.close()
                shedder.shed("over_capacity")
                return False
        shedder.held += 1
        self.counted = True
        self._wait_for_head()
        return True

    def progressed(self) -> None:
        """After bytes were read or a response went: start or stop the deadlines."""
        if self.protocol.transport.is_closing():
            return
        cycle: Cycle | None = self.protocol.cycle
        if cycle is not None and cycle is not self.cycle and not cycle.response_complete:
            self.cycle = cycle  # a new request head is complete
            self.shedder.waiting.pop(self, None)
            self._cancel()
            if cycle.more_body:
                self.timer = self.shedder.loop.call_later(
                    self.shedder.limits.body_seconds, self._body_late, cycle
                )
        elif cycle is not None and cycle is self.cycle and not cycle.more_body:
            if not cycle.response_complete:
                self._cancel()  # the body is in; the answer is the application's
            elif self not in self.shedder.waiting:
                self._wait_for_head()

    def idle(self) -> None:
        """uvicorn's keep-alive timer ran out: the connection is closed as idle."""
        if not self.protocol.transport.is_closing():
            self.shedder.waiting.pop(self, None)
            self.shedder.shed("idle_timeout")

    def lost(self) -> None:
        self._cancel()
        self.shedder.waiting.pop(self, None)
        if self.counted:
            self.counted = False
            self.shedder.held -= 1

    def close(self, reason: str) -> None:
        if self.counted:  # its file is freed now as far as the cap is concerned
            self.counted = False
            self.shedder.held -= 1
        self._cancel()
        self.protocol.transport.close()
        self.shedder.shed(reason)

    def _wait_for_head(self) -> None:
        self._cancel()
        self.shedder.waiting[self] = None
        self.timer = self.shedder.loop.call_later(self.shedder.limits.head_seconds, self._head_late)

    def _head_late(self) -> None:
        self.timer = None
        if not self.protocol.transport.is_closing():
            self.shedder.waiting.pop(self, None)
            self.close("head_timeout")

    def _body_late(self, cycle: Cycle) -> None:
        self.timer = None
        if self.protocol.transport.is_closing() or not cycle.more_body:
            return
        if not cycle.response_started:
            # The application is still waiting for the body: it is told the client left, and
            # the client is told why.
            cycle.response_started = True
            cycle.disconnected = True
            cycle.message_event.set()
            self.protocol.transport.write(self.shedder.timeout)
        self.close("body_timeout")

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _raw_answer(response: Any) -> bytes:
    """An error answer as bytes on the wire, closing the connection."""
    from http import HTTPStatus

    status = int(response.status_code)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in response.raw_headers]
    lines += [b"connection: close", b"", bytes(response.body)]
    return b"\r\n".join(lines)


class _Shedding:
    """The listener's deadlines and cap over one of uvicorn's HTTP protocols (the class after
    this one in the bases: its methods are the `super()` calls here)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.guard = ConnectionGuard(self)  # type: ignore[arg-type]
        self.guard.connected()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self.guard.progressed()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self.guard.progressed()

    def timeout_keep_alive_handler(self) -> None:
        self.guard.idle()
        super().timeout_keep_alive_handler()  # type: ignore[misc]


class SheddingH11Protocol(_Shedding, H11Protocol):
    """uvicorn's h11 protocol with the listener's deadlines and cap."""


class SheddingHttpToolsProtocol(_Shedding, HttpToolsProtocol):
    """uvicorn's httptools protocol with the listener's deadlines and cap."""


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "h11": SheddingH11Protocol,
    "httptools": SheddingHttpToolsProtocol,
}


def default_protocol() -> type[asyncio.Protocol]:
    """httptools' parser (faster), as uvicorn's `auto` would choose it."""
    return SheddingHttpToolsProtocol
