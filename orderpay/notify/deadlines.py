"""An HTTP transport whose requests end by a deadline: name lookup, connect, TLS, writes and
reads together.

httpx's timeouts bound each phase and each read, not a request: a gateway that answers slowly
but steadily, or a name server that does not answer, outlasts them, and a send that outlasts
its row's lease lets another worker send the row again. Here every socket operation of a
request waits at most until the deadline `until()` set for it; past it, the operation fails
as a timeout (httpx.TimeoutException).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("orderpay_http_deadline", default=None)


@contextmanager
def until(deadline: float | None) -> Iterator[None]:
    """Requests made inside end by `deadline` (time.monotonic()); None: no deadline."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _wait(timeout: float | None, late: type[Exception]) -> float | None:
    """How long the next socket operation may wait: its own timeout, cut to the deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


def _addresses(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of `host`, looked up in a thread so that the wait can be cut short
    (getaddrinfo takes no timeout)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    found: list[Any] = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as error:
            found.append(error)

    lookup = threading.Thread(target=look_up, name="orderpay-dns", daemon=True)
    lookup.start()
    lookup.join(timeout)
    if not found:
        raise httpcore.ConnectTimeout(f"looking up {host} took too long")
    if isinstance(found[0], OSError):
        raise httpcore.ConnectError(f"cannot look up {host}: {found[0]}")
    return list(dict.fromkeys(str(info[4][0]) for info in found[0]))


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _wait(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _wait(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _wait(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _addresses(host, port, _wait(timeout, httpcore.ConnectTimeout))
        for index, address in enumerate(addresses):
            wait = _wait(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(address, port, wait, local_address, socket_options)
            except httpcore.ConnectError:
                if index == len(addresses) - 1:
                    raise
                continue
            return _Stream(stream)
        raise httpcore.ConnectError(f"{host} has no address")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        wait = _wait(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, wait, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(ssl_context: ssl.SSLContext) -> httpx.HTTPTransport:
    """httpx's transport with the default pool, on a network backend that keeps `until()`."""
    transport = httpx.HTTPTransport(verify=ssl_context)
    # httpx takes no network backend of its own: its pool is made again with ours.
    transport._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=_Backend())
    return transport
