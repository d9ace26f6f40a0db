"""The listener sheds connections it cannot serve (DESIGN.md section 6): a request head and a
body must each arrive within their deadline, a connection idle after its response is closed,
and past its cap a worker closes the connection that has waited longest for a request head (or
answers 503 when every connection is busy). Each is counted in /metrics and logged at most
once per interval.

The client is a raw socket, as a slow or idle client is; the listener is the real app under
uvicorn with the protocols `serve-webhooks` gives it (in-process, with short deadlines), or
the real `orderpay serve-webhooks` under a lowered open-file limit. Nothing here sleeps to show
that something did not happen: each test waits, with a bound, for the server to close a socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from orderpay.config import load_settings
from orderpay.domain.states import PaymentStatus
from orderpay.errors import ConfigurationError
from orderpay.http.shedding import ConnectionLimits, ShedLog, connections_allowed
from orderpay.server import create_app
from orderpay.store.db import Database
from orderpay.store.payments import get_payment
from tests.conftest import Cli, count_rows
from tests.live_server import (
    API_TOKEN,
    CALLBACK_PATH,
    SECRET,
    LiveServer,
    a_pending_payment,
    callback_body,
    listener_settings,
    live_server,
    serve_webhooks,
    signed,
)
from tests.test_health_and_metrics import metric

PARSERS = ["h11", "httptools"]
SHED = "orderpay_listener_shed_connections_total"
# Long enough that nothing is cut off by accident; each test shortens the one it is about.
RELAXED = ConnectionLimits(
    head_seconds=30, body_seconds=30, idle_seconds=30, max_connections=100, log_interval_seconds=60
)
# How long a test waits for the server to do what it must (close, answer) before failing.
BOUND = 10.0


@contextmanager
def shedding_listener(
    database_url: str, limits: ConnectionLimits, http: str = "httptools"
) -> Iterator[LiveServer]:
    app = create_app(listener_settings(database_url))
    with live_server(app, limits=limits, http=http) as running:
        yield running


def shed(server: LiveServer, reason: str) -> float:
    with httpx.Client(base_url=server.url) as http:
        return metric(http, SHED, reason=reason)


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)


def read_until_closed(sock: socket.socket, bound: float = BOUND) -> bytes:
    """Everything the server sends until it closes the connection; fails after `bound`."""
    sock.settimeout(bound)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def trickle(sock: socket.socket, head: bytes, body: bytes, interval: float = 0.05) -> bytes:
    """Send `head` at once, then `body` one byte per `interval`, until the server closes the
    connection; what it answered. Fails if it has not closed it within BOUND."""
    sock.sendall(head)
    sock.settimeout(interval)
    received = b""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if body:
                with contextlib.suppress(OSError):  # closed: its answer is read next
                    sock.send(body[:1])
                body = body[1:]
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server did not close the connection; it sent {received!r}")


def post_head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


# Request heads


@pytest.mark.parametrize("http", PARSERS)
def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline_and_counted(
    sqlite_url: str, http: str
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "head_seconds": 0.3})
    with shedding_listener(sqlite_url, limits, http) as server:
        before = shed(server, "head_timeout")

        with connect(server) as silent:
            started = time.monotonic()
            assert read_until_closed(silent) == b""
            waited = time.monotonic() - started

        assert 0.2 < waited < 5
        assert shed(server, "head_timeout") == before + 1


@pytest.mark.parametrize("http", PARSERS)
def test_a_request_head_sent_a_byte_at_a_time_is_closed_at_the_head_deadline(
    sqlite_url: str, http: str
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "head_seconds": 0.5})
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with shedding_listener(sqlite_url, limits, http) as server:
        before = shed(server, "head_timeout")

        with connect(server) as slow:
            answer = trickle(slow, b"", head)

        assert answer == b""
        assert shed(server, "head_timeout") == before + 1


@pytest.mark.parametrize("http", PARSERS)
def test_requests_on_one_kept_alive_connection_are_each_answered(
    sqlite_url: str, http: str
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "head_seconds": 2, "body_seconds": 2})
    with shedding_listener(sqlite_url, limits, http) as server:
        before = shed(server, "head_timeout") + shed(server, "body_timeout")
        with httpx.Client(base_url=server.url) as client:
            answers = [client.get("/healthz") for _ in range(3)]
            posted = client.post("/api/orders/", content=b"{}", headers={"X": "1"})
            again = client.get("/healthz")

        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert posted.status_code == 401  # the request was read and answered whole
        assert again.status_code == 200
        assert shed(server, "head_timeout") + shed(server, "body_timeout") == before


# Idle connections


@pytest.mark.parametrize("http", PARSERS)
def test_a_connection_idle_after_its_response_is_closed_after_the_keep_alive_timeout(
    sqlite_url: str, http: str
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "idle_seconds": 1})
    with shedding_listener(sqlite_url, limits, http) as server:
        before = shed(server, "idle_timeout")

        with connect(server) as kept:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_until_closed(kept)

        assert answer.startswith(b"HTTP/1.1 200 ")
        assert shed(server, "idle_timeout") == before + 1


# Bodies


@pytest.mark.parametrize("http", PARSERS)
def test_a_callback_body_sent_a_byte_at_a_time_is_answered_408_and_nothing_is_stored(
    sqlite_url: str, sqlite_db: Database, http: str
) -> None:
    payment = a_pending_payment(sqlite_db)
    body = callback_body(payment)
    rows = count_rows(sqlite_db)
    limits = ConnectionLimits(**{**vars(RELAXED), "body_seconds": 0.5})
    with shedding_listener(sqlite_url, limits, http) as server:
        before = shed(server, "body_timeout")

        with connect(server) as slow:
            answer = trickle(slow, post_head(CALLBACK_PATH, signed(body), len(body)), body)

        status, document = status_and_body(answer)
        assert status == 408
        assert document == {
            "error": {
                "code": "request_timeout",
                "message": "the request body did not arrive in time",
            }
        }
        assert shed(server, "body_timeout") == before + 1
    assert count_rows(sqlite_db) == rows
    with sqlite_db.transaction() as conn:
        assert get_payment(conn, payment.id).status is PaymentStatus.PENDING


@pytest.mark.parametrize("http", PARSERS)
def test_a_rest_body_sent_a_byte_at_a_time_is_answered_408_and_nothing_is_stored(
    sqlite_url: str, sqlite_db: Database, http: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rows = count_rows(sqlite_db)
    body = json.dumps({"customer": 1, "items": [], "note": "x" * 100}).encode()
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    limits = ConnectionLimits(**{**vars(RELAXED), "body_seconds": 0.5})
    with shedding_listener(sqlite_url, limits, http) as server, connect(server) as slow:
        answer = trickle(slow, post_head("/api/orders/", headers, len(body)), body)

    status, document = status_and_body(answer)
    assert status == 408
    assert document["error"] == {
        "code": "request_timeout",
        "message": "the request body did not arrive in time",
    }
    assert count_rows(sqlite_db) == rows
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# The cap


def test_over_the_cap_the_connection_longest_without_a_request_makes_room_for_a_new_one(
    sqlite_url: str,
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "max_connections": 3})
    with shedding_listener(sqlite_url, limits) as server:
        before = shed(server, "over_capacity")
        with ExitStack() as stack:
            idle = [stack.enter_context(connect(server)) for _ in range(3)]

            with httpx.Client(base_url=server.url) as client:
                answer = client.get("/healthz")  # a fourth connection

            assert answer.status_code == 200
            assert read_until_closed(idle[0]) == b""
        assert shed(server, "over_capacity") == before + 1


def test_over_the_cap_with_every_connection_busy_a_new_one_is_answered_503_and_closed(
    sqlite_url: str,
) -> None:
    limits = ConnectionLimits(**{**vars(RELAXED), "max_connections": 2})
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Expect": "100-continue"}
    with shedding_listener(sqlite_url, limits) as server:
        before = shed(server, "over_capacity")
        with ExitStack() as stack:
            for _ in range(2):  # requests in flight: their bodies are awaited
                busy = stack.enter_context(connect(server))
                busy.sendall(post_head("/api/orders/", headers, 100))
                assert busy.recv(1024).startswith(b"HTTP/1.1 100 ")

            with connect(server) as refused:
                refused.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = read_until_closed(refused)

        status, document = status_and_body(answer)
        assert status == 503
        assert document["error"] == {
            "code": "unavailable",
            "message": "the listener is at its connection limit; retry shortly",
        }
        assert shed(server, "over_capacity") == before + 1


# The log


def test_shedding_is_logged_at_most_once_per_interval_with_the_count(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orderpay.listener")
    limits = ConnectionLimits(**{**vars(RELAXED), "head_seconds": 0.3, "log_interval_seconds": 1})
    with shedding_listener(sqlite_url, limits) as server:
        with ExitStack() as stack:
            silent = [stack.enter_context(connect(server)) for _ in range(12)]
            for sock in silent:
                assert read_until_closed(sock) == b""

        lines = wait_for_shed_lines(caplog, total=12)

    assert [record.levelname for record in lines] == ["WARNING", "WARNING"]
    assert [record.fields["shed"] for record in lines] == [1, 11]  # type: ignore[attr-defined]
    assert "no complete request head within 0.3 s" in lines[1].getMessage()


def wait_for_shed_lines(caplog: pytest.LogCaptureFixture, total: int) -> list[logging.LogRecord]:
    """The listener's shedding lines, once they account for `total` connections."""
    deadline = time.monotonic() + BOUND
    while True:
        lines = [r for r in caplog.records if r.name == "orderpay.listener"]
        if sum(r.fields["shed"] for r in lines) >= total:  # type: ignore[attr-defined]
            return lines
        assert time.monotonic() < deadline, [r.getMessage() for r in lines]
        time.sleep(0.05)


def test_the_shed_log_holds_lines_within_its_interval_and_then_reports_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orderpay.listener")
    now = [100.0]
    log = ShedLog(ConnectionLimits(log_interval_seconds=10), clock=lambda: now[0])

    assert log.shed("idle_timeout") is None  # the first is logged at once
    now[0] = 103.0
    assert log.shed("idle_timeout") == 7.0  # held, with the wait until the next line
    assert log.shed("idle_timeout") == 7.0
    assert log.shed("over_capacity") is None  # each reason has its own interval
    now[0] = 109.9
    assert log.flush("idle_timeout") == pytest.approx(0.1)
    now[0] = 110.0
    assert log.flush("idle_timeout") is None
    assert log.flush("idle_timeout") is None  # nothing held: no line

    counts = [(r.fields["reason"], r.fields["shed"]) for r in caplog.records]  # type: ignore[attr-defined]
    assert counts == [("idle_timeout", 1), ("over_capacity", 1), ("idle_timeout", 2)]


# Configuration


def test_the_cap_leaves_room_for_the_workers_own_files() -> None:
    assert connections_allowed(1024) == 768
    assert connections_allowed(256) == 128
    assert connections_allowed(65536) == 65280


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ORDERPAY_LISTENER_HEAD_TIMEOUT_SECONDS", "0"),
        ("ORDERPAY_LISTENER_BODY_TIMEOUT_SECONDS", "-1"),
        ("ORDERPAY_LISTENER_KEEPALIVE_SECONDS", "0.5"),
        ("ORDERPAY_LISTENER_MAX_CONNECTIONS", "0"),
        ("ORDERPAY_LISTENER_SHED_LOG_SECONDS", "soon"),
    ],
)
def test_a_listener_limit_that_is_not_a_positive_number_is_refused(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(**{variable: value})

    assert refused.value.details["variables"] == [variable]


def test_serve_webhooks_refuses_a_cap_above_what_the_open_file_limit_leaves(
    cli: Cli, tmp_path: Path
) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    too_many = str(connections_allowed(soft) + 1)

    refused = cli(
        "serve-webhooks",
        "--port",
        "1",
        MOMO_WEBHOOK_SECRET=SECRET,
        ORDERPAY_LISTENER_MAX_CONNECTIONS=too_many,
    )

    assert refused.exit_code == 2
    assert f"ORDERPAY_LISTENER_MAX_CONNECTIONS={too_many} is above" in refused.stderr
    assert "listening on" not in refused.stdout + refused.stderr


# Under an open-file limit, as a service runs


def open_idle(url: str, count: int) -> list[socket.socket]:
    """`count` connections that send nothing (the client's own file limit raised for them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = int(url.rsplit(":", 1)[1])
    return [socket.create_connection(("127.0.0.1", port), timeout=BOUND) for _ in range(count)]


def answered_while_idle(
    server_url: str, db: Database, idle: int
) -> tuple[httpx.Response, httpx.Response]:
    """A signed callback and /readyz, sent while `idle` connections are held open."""
    payment = a_pending_payment(db)
    body = callback_body(payment)
    held = open_idle(server_url, idle)
    try:
        with httpx.Client(base_url=server_url, timeout=BOUND) as http:
            callback = http.post(CALLBACK_PATH, content=body, headers=signed(body))
            ready = http.get("/readyz")
    finally:
        for sock in held:
            sock.close()
    return callback, ready


@pytest.mark.slow
def test_under_a_256_file_limit_callbacks_and_readyz_are_answered_past_1000_idle_connections(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET}
    with serve_webhooks(tmp_path, env, "--workers", "1", open_files=256) as server:
        callback, ready = answered_while_idle(server.url, db, 1000)
        log = server.stderr()

    assert callback.status_code == 200, callback.text
    assert callback.json()["status"] == "processed"
    assert ready.status_code == 200
    assert "over the cap of 128 connections per worker" in log
    assert log.count('"reason": "over_capacity"') < 10  # a line per interval, not per connection


@pytest.mark.slow
def test_2500_idle_connections_under_a_1024_file_limit_do_not_stop_callbacks(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET}
    with serve_webhooks(tmp_path, env, "--workers", "2", open_files=1024) as server:
        callback, ready = answered_while_idle(server.url, db, 2500)

    assert callback.status_code == 200, callback.text
    assert callback.json()["status"] == "processed"
    assert ready.status_code == 200


@pytest.mark.slow
def test_the_protocols_module_imports_no_route_code_so_workers_answer_health_checks_soon() -> None:
    """uvicorn unpickles the listener's configuration, and with it this module, in each worker
    before the worker answers its supervisor's health check (5 s, then the worker is killed):
    the routes' code is imported later, when the app loads."""
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, orderpay.http.shedding; print(sorted(m for m in sys.modules "
            "if m.startswith(('orderpay.http.answers', 'orderpay.http.rest', 'sqlalchemy'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )

    assert imported.stdout.strip() == "[]"
