"""The concurrent sender's HTTP client (notify.async_http): a whole-request deadline, kept-alive
connections reused, a connection the server closed never reused, answers read whole. Against
small local servers that behave as described."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from orderpay.notify.async_http import MAX_BODY_BYTES, AsyncHttp, RequestFailed, RequestTimedOut

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    url: str
    connections: int = 0
    finished: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serving(talk: Callable[[socket.socket, Server], None]) -> Iterator[Server]:
    """A loopback server that runs `talk` on each connection, in a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = Server(f"http://127.0.0.1:{listener.getsockname()[1]}/send")

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            server.connections += 1
            threading.Thread(target=talk, args=(connection, server), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server
    finally:
        listener.close()


def read_request(connection: socket.socket) -> bool:
    """Read one request (head and Content-Length body); False when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return True


def keep_alive(connection: socket.socket, _server: Server) -> None:
    with connection:
        while read_request(connection):
            connection.sendall(OK)


def post(http: AsyncHttp, url: str, deadline_in: float = 10.0) -> bytes:
    async def go() -> bytes:
        try:
            answer = await http.post(
                url, b"a=1", {"Content-Type": "text/plain"}, time.monotonic() + deadline_in
            )
        finally:
            http.close()  # on the loop that made its connections
        return answer.body

    return asyncio.run(go())


def test_posts_to_one_origin_reuse_a_kept_alive_connection() -> None:
    async def three(http: AsyncHttp, url: str) -> list[int]:
        statuses = [(await http.post(url, b"x", {}, None)).status for _ in range(3)]
        http.close()
        return statuses

    with serving(keep_alive) as server:
        http = AsyncHttp()
        statuses = asyncio.run(three(http, server.url))

    assert (statuses, server.connections) == ([200, 200, 200], 1)


def test_a_connection_the_server_closed_is_not_reused() -> None:
    def once(connection: socket.socket, server: Server) -> None:
        with connection:
            if read_request(connection):
                connection.sendall(OK)  # HTTP/1.1 without `Connection: close`, then closed
        server.finished.set()

    async def two(http: AsyncHttp, url: str, closed: threading.Event) -> list[int]:
        first = (await http.post(url, b"x", {}, None)).status
        while not closed.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the loop sees the end of the stream
        second = (await http.post(url, b"x", {}, None)).status
        http.close()
        return [first, second]

    with serving(once) as server:
        http = AsyncHttp()
        statuses = asyncio.run(two(http, server.url, server.finished))

    assert (statuses, server.connections) == ([200, 200], 2)


def test_a_request_ends_by_its_deadline_while_the_server_trickles_its_answer() -> None:
    def trickle(connection: socket.socket, server: Server) -> None:
        with connection:
            read_request(connection)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):  # a byte every 0.1 s: 10 s in all, every read quick
                    connection.sendall(b"x")
                    time.sleep(0.1)
            except OSError:
                return
            server.finished.set()

    with serving(trickle) as server, pytest.raises(RequestTimedOut):
        post(AsyncHttp(), server.url, deadline_in=1.0)

    assert not server.finished.is_set()


def test_a_chunked_answer_is_read_whole() -> None:
    def chunked(connection: socket.socket, _server: Server) -> None:
        with connection:
            read_request(connection)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
            )

    with serving(chunked) as server:
        assert post(AsyncHttp(), server.url) == b"abcdefg"


def test_an_answer_larger_than_a_gateways_is_refused() -> None:
    def huge(connection: socket.socket, _server: Server) -> None:
        with connection:
            read_request(connection)
            size = MAX_BODY_BYTES + 1
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                connection.sendall(b"x" * size)
            except OSError:
                pass

    with serving(huge) as server, pytest.raises(RequestFailed, match="larger than"):
        post(AsyncHttp(), server.url)


def test_a_closed_port_fails_the_request() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(RequestFailed) as failed:
        post(AsyncHttp(), f"http://127.0.0.1:{port}/send")

    assert not isinstance(failed.value, RequestTimedOut)
