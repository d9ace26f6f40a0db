"""A real HTTP server on loopback that records what it is sent: the network edge in tests.

It plays whatever sits at the far end of a URL orderpay calls (the simulator's callback URL,
an SMS gateway, a merchant's webhook endpoint). Answers are scripted per request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait before answering (a slow or hanging peer)
    headers: dict[str, str] = field(default_factory=dict)  # more response headers


Responder = Callable[[Recorded], Answer]


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    responder: Responder = field(default=lambda _request: Answer())
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_with(self, responder: Responder) -> None:
        self.responder = responder

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {self.count()}")
            time.sleep(0.01)
        with self.lock:
            return list(self.requests)


@contextmanager
def recording_server() -> Iterator[Recorder]:
    recorder = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            with recorder.lock:
                recorder.requests.append(request)
            answer = recorder.responder(request)
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting, as a timing-out client should

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    recorder.url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
