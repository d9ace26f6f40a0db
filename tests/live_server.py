"""The real listener in tests: the app under uvicorn on a free loopback port, or in-process.

`live_server(app)` runs an ASGI app under a real uvicorn server (lifespan on) in a background
thread, on a port the OS picks, and stops it gracefully on exit: requests travel over real
sockets, so chunked bodies, parallel clients and real timing behave as in production.

`app_client(app)` is Starlette's TestClient for unit-level cases. With
`raise_server_exceptions=False`, a bug answers 500 as it would in production instead of
raising, so a test can assert "no 500" about any input.

`serve_webhooks(directory, env, *args)` runs the real `orderpay serve-webhooks` command in a
child process on a free port, with its stderr (the logs) kept in a file.

`listener(settings)` and `listener_client(settings)` are both for `orderpay.server.create_app`;
`listener_settings(url)` configures it with the test secret and API token, and
`a_pending_payment`, `callback_body` and `signed` make what a provider would send it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import ASGIApp

from orderpay.config import Settings, load_settings
from orderpay.domain.signatures import sign_hex
from orderpay.http.shedding import (
    PROTOCOLS,
    ConnectionLimits,
    ListenerConfig,
    connection_limits,
    open_file_limit,
)
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.server import create_app
from orderpay.store.db import Database
from orderpay.store.payments import Payment
from tests.builders import AMA, a_key, an_order
from tests.services import free_port

with warnings.catch_warnings():
    # Starlette >= 1.10 prefers the `httpx2` package for its TestClient and warns when it
    # falls back to `httpx` (which orderpay depends on). The client works the same.
    warnings.filterwarnings(
        "ignore",
        message=r"Using `httpx` with `starlette.testclient`",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient

__all__ = [
    "API_TOKEN",
    "CALLBACK_PATH",
    "CLOSED_POSTGRES_URL",
    "CLOSED_REDIS_URL",
    "OMIT",
    "SECRET",
    "LiveServer",
    "ServeWebhooks",
    "TestClient",
    "a_pending_payment",
    "app_client",
    "assert_error",
    "callback_body",
    "free_port",
    "listener",
    "listener_client",
    "listener_settings",
    "live_server",
    "post_in_parallel",
    "serve_webhooks",
    "signed",
]

STARTUP_TIMEOUT_SECONDS = 10.0
CALLBACK_PATH = "/api/webhooks/momo/"
SECRET = "test-callback-secret-0123456789abcdef"  # 36 characters: serve-webhooks takes it
API_TOKEN = "test-api-token-5f0c2a9e-7b31d4c6a8f0"  # 36 characters, as serve-webhooks asks
# Nothing listens on port 1: connections are refused at once.
CLOSED_POSTGRES_URL = "postgresql+psycopg2://root@127.0.0.1:1/orderpay"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
OMIT = object()  # a callback_body() field value that leaves the field out


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    port: int
    server: uvicorn.Server

    @property
    def callback_url(self) -> str:
        return self.url + CALLBACK_PATH


@contextmanager
def live_server(
    app: ASGIApp,
    *,
    graceful_timeout: int = 10,
    limits: ConnectionLimits | None = None,
    http: str = "httptools",
) -> Iterator[LiveServer]:
    """Serve `app` on 127.0.0.1:<free port> until the block ends; then shut down and join.

    With `limits`, as `serve-webhooks` serves it: with the listener's connection deadlines and
    cap (http/shedding.py), on uvicorn's `http` parser (`h11` or `httptools`)."""
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "lifespan": "on",
        "log_config": None,  # leave logging alone: tests capture it with caplog
        "access_log": False,
        "ws": "none",
        "timeout_graceful_shutdown": graceful_timeout,
    }
    if limits is None:
        config = uvicorn.Config(app, **options)
    else:
        config = ListenerConfig(app, connection_limits=limits, http=PROTOCOLS[http], **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the live server stopped while starting (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError("the live server did not start in time")
            time.sleep(0.01)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        yield LiveServer(url=f"http://127.0.0.1:{port}", port=port, server=server)
    finally:
        server.should_exit = True
        thread.join(graceful_timeout + 5)
        if thread.is_alive():  # pragma: no cover - only when shutdown hangs
            server.force_exit = True
            thread.join(5)
    if thread.is_alive():  # pragma: no cover
        raise RuntimeError("the live server did not stop")


@contextmanager
def listener(settings: Settings, *, http: str = "httptools") -> Iterator[LiveServer]:
    """orderpay's listener, configured with `settings`, under a real uvicorn server with the
    connection limits `serve-webhooks` gives it (on uvicorn's `http` parser)."""
    limits = connection_limits(settings, open_file_limit())
    with live_server(create_app(settings), limits=limits, http=http) as running:
        yield running


@contextmanager
def app_client(app: ASGIApp) -> Iterator[TestClient]:
    """An in-process client (lifespan runs); a bug answers 500 rather than raising."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@contextmanager
def listener_client(settings: Settings) -> Iterator[TestClient]:
    """An in-process client of orderpay's listener configured with `settings`."""
    with app_client(create_app(settings)) as client:
        yield client


def listener_settings(database_url: str, **env: str | None) -> Settings:
    """The listener's settings: the test secret and API token unless `env` says otherwise.

    A variable given as None is left unset.
    """
    values = {
        "DATABASE_URL": database_url,
        "MOMO_WEBHOOK_SECRET": SECRET,
        "ORDERPAY_API_TOKEN": API_TOKEN,
        **env,
    }
    return load_settings(**{name: value for name, value in values.items() if value is not None})


def a_pending_payment(db: Database, *, phone: str = AMA, **order_options: Any) -> Payment:
    """A new order (25.00 GHS by default) charged through the service: its payment is pending.

    The simulator accepts it with our payment id as the provider's reference.
    """
    order = an_order(db, phone=phone, **order_options)
    result = charge_order(
        db,
        SimulatorProvider(),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    )
    return result.payment


def callback_body(payment: Payment, status: str = "success", **fields: Any) -> bytes:
    """The JSON a provider posts about `payment`; `fields` override (OMIT drops one)."""
    document: dict[str, Any] = {
        "provider_reference": payment.provider_reference or str(payment.id),
        "order_id": str(payment.order_id),
        "status": status,
        "amount": payment.amount.as_string(),
        "currency": payment.amount.currency,
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not OMIT}).encode()


SENDER_ID = "MP240101.1234.A56789"  # a seed-style sender's own id of the money movement


def sender_body(
    order_id: uuid.UUID, reference: str = SENDER_ID, status: str = "success", **fields: Any
) -> bytes:
    """What a seed-style sender posts: its own transaction id as the reference."""
    document = {
        "provider_reference": reference,
        "order_id": str(order_id),
        "status": status,
        "amount": "25.00",
        "currency": "GHS",
        **fields,
    }
    return json.dumps(document).encode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Headers of a callback signed the simple way: X-Momo-Signature, hex of the raw body."""
    return {"Content-Type": "application/json", "X-Momo-Signature": sign_hex(body, secret.encode())}


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    """The answer is `status` with the one error shape: {"error": {"code", "message", ...}}."""
    assert answer.status_code == status, answer.text
    document = answer.json()
    assert set(document) == {"error"}
    assert document["error"]["code"] == code
    assert isinstance(document["error"]["message"], str)
    assert document["error"]["message"]


@dataclass
class ServeWebhooks:
    """A running `orderpay serve-webhooks` child process."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def callback_url(self) -> str:
        return self.url + CALLBACK_PATH

    def stderr(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code (the child is killed if it does not stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def serve_webhooks(
    directory: Path, env: dict[str, str], *args: str, open_files: int | None = None
) -> Iterator[ServeWebhooks]:
    """`orderpay serve-webhooks --port <free> *args` with `env`, once /healthz answers; with
    `open_files`, under that limit on open files (soft and hard), as a service manager sets it."""

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    port = free_port()
    log_path = directory / f"serve-webhooks-{port}.log"
    command = [sys.executable, "-m", "orderpay", "serve-webhooks", "--port", str(port), *args]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            preexec_fn=limit_open_files,
        )
        running = ServeWebhooks(f"http://127.0.0.1:{port}", process, log_path)
        try:
            _wait_until_healthy(running)
            yield running
        finally:
            if process.poll() is None:
                running.terminate()


def _wait_until_healthy(running: ServeWebhooks, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"serve-webhooks exited early:\n{running.stderr()}")
        try:
            if httpx.get(running.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"serve-webhooks did not become healthy:\n{running.stderr()}")


def post_in_parallel(
    url: str, requests: list[tuple[bytes, Callable[[], dict[str, str]]]]
) -> list[httpx.Response]:
    """POST every (body, headers) at once, one thread and one connection each."""
    barrier = threading.Barrier(len(requests))
    answers: list[httpx.Response | BaseException | None] = [None] * len(requests)

    def send(index: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            with httpx.Client(timeout=30) as http:
                barrier.wait(10)
                answers[index] = http.post(url, content=body, headers=headers)
        except BaseException as error:  # reported by the main thread
            answers[index] = error

    threads = [
        threading.Thread(target=send, args=(index, body, make_headers()))
        for index, (body, make_headers) in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    failures = [a for a in answers if not isinstance(a, httpx.Response)]
    assert failures == []
    return [a for a in answers if isinstance(a, httpx.Response)]
