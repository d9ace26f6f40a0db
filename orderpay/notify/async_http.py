"""HTTP/1.1 POSTs from asyncio for the notification channels: h11's protocol engine (the one
httpx's own HTTP/1.1 connections run on), a pool of kept-alive connections per origin, and a
deadline on the whole request (name lookup, connect, TLS, write and read together).

Why not httpx.AsyncClient: with tens of requests in flight its pool spent several
milliseconds of CPU on each (bench/worker.py's gateway runs show the rate it allowed), a
multiple of the whole request here. Only what a channel's POST needs is here: no redirects
(a channel refuses them), no proxies, no compression, a body read whole up to a size cap.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

# An answer larger than this is not a gateway's: reading stops and the request fails.
MAX_BODY_BYTES = 1 << 20
READ_CHUNK_BYTES = 65536
# An idle connection older than this is closed rather than reused: servers close idle
# keep-alive connections after a few seconds, and a POST on one they just closed may or may
# not have been read.
IDLE_SECONDS = 4.0


class InvalidURL(ValueError):
    """The URL cannot be requested (a bad port, no host, not http or https): no retry helps
    until it is changed; nothing was sent."""


class RequestFailed(Exception):
    """The request did not get a whole answer: connect, TLS, write or read failed."""


class RequestTimedOut(RequestFailed):
    """The request's deadline passed first."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection
    idle_since: float

    def reusable(self, now: float) -> bool:
        return (
            now - self.idle_since < IDLE_SECONDS
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self.writer.close()


_Origin = tuple[str, str, int]


class AsyncHttp:
    """Kept-alive connections per origin, for the event loop it is first used on."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float | None
    ) -> Answer:
        """POST `body` to `url`, ending by `deadline` (time.monotonic(), the event loop's
        clock) whatever the server does: RequestTimedOut past it, RequestFailed otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as error:
            raise InvalidURL(str(error)) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURL("not an http(s) URL with a host")
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        request = h11.Request(
            method="POST",
            target=target,
            headers=[("Host", host), ("Content-Length", str(len(body))), *headers.items()],
        )
        connection: _Connection | None = None
        try:
            async with asyncio.timeout_at(deadline):
                connection = self._reusable(origin) or await self._connect(origin)
                answer = await self._exchange(connection, request, body)
        except TimeoutError:
            if connection is not None:
                connection.close()
            raise RequestTimedOut("the request's deadline passed") from None
        except (OSError, h11.ProtocolError, RequestFailed) as error:
            if connection is not None:
                connection.close()
            if isinstance(error, RequestFailed):
                raise
            raise RequestFailed(f"{type(error).__name__}: {error}") from None
        except BaseException:  # cancelled: the connection is in an unknown state
            if connection is not None:
                connection.close()
            raise
        self._give_back(origin, connection)
        return answer

    def _reusable(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            tls = self._tls or ssl.create_default_context()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None, limit=READ_CHUNK_BYTES
        )
        return _Connection(reader, writer, h11.Connection(h11.CLIENT), time.monotonic())

    async def _exchange(self, connection: _Connection, request: h11.Request, body: bytes) -> Answer:
        protocol = connection.protocol
        out = protocol.send(request) or b""
        out += protocol.send(h11.Data(data=body)) or b""
        out += protocol.send(h11.EndOfMessage()) or b""
        connection.writer.write(out)
        await connection.writer.drain()
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                data = await connection.reader.read(READ_CHUNK_BYTES)
                protocol.receive_data(data)  # b"": the server closed the connection
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    raise RequestFailed(f"the answer is larger than {MAX_BODY_BYTES} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RequestFailed("the server closed the connection before answering")
        assert response is not None  # h11 yields the Response before any Data or EndOfMessage
        headers = {
            name.decode().lower(): value.decode("latin-1") for name, value in response.headers
        }
        return Answer(response.status_code, headers, b"".join(chunks))

    def _give_back(self, origin: _Origin, connection: _Connection) -> None:
        protocol = connection.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
        else:  # the server asked to close, or answered before reading the whole request
            connection.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle = {}
