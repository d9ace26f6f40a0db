"""`orderpay serve-webhooks`: the listener's processes and its socket."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from orderpay.commands.common import info, runtime

# Each worker is one event loop: one per CPU lets the listener use the machine (a callback is
# mostly CPU in Python and in Postgres); beyond a few, Postgres connections (a pool of each kind
# per worker) grow faster than throughput.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """One worker process per CPU this process may run on, at most MAX_DEFAULT_WORKERS."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def serve_webhooks(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help=f"Worker processes (default: one per CPU, at most {MAX_DEFAULT_WORKERS}).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
) -> None:
    """Run the listener: signed payment callbacks, the REST API, /healthz, /readyz, /metrics.

    With the simulator as provider it refuses to start without MOMO_WEBHOOK_SECRET
    (comma-separate several during a rotation); with ORDERPAY_PROVIDER=mtn and no secret the
    signed route answers 404. It refuses a callback secret, ORDERPAY_API_TOKEN or
    ORDERPAY_SMS_DLR_TOKEN that starts with change-me or is shorter than 32 characters, unless
    ORDERPAY_INSECURE_SECRETS=1. Stops gracefully on SIGTERM: requests in flight are finished.

    \b
    Examples:
      MOMO_WEBHOOK_SECRET=... orderpay serve-webhooks
      orderpay serve-webhooks --host 0.0.0.0 --port 8000 --workers 2
    """
    import os
    import signal
    import tempfile

    import uvicorn

    from orderpay.domain.secret_strength import SECRET_ADVICE, weaknesses
    from orderpay.errors import ConfigurationError, OrderpayError, Unavailable
    from orderpay.http.shedding import ListenerConfig, connection_limits, open_file_limit
    from orderpay.logs import uvicorn_log_config
    from orderpay.metrics import MULTIPROC_ENV

    if workers is None:
        workers = default_workers()
    rt = runtime(ctx)
    secrets = rt.settings.webhook_secrets()
    if not secrets and rt.settings.provider == "simulator":
        raise ConfigurationError(
            "MOMO_WEBHOOK_SECRET is not set: the listener cannot check the simulator's signed "
            "callbacks. Set it (a random string of 32+ characters) and start again."
        )
    if not secrets:
        info(
            "no MOMO_WEBHOOK_SECRET: /api/webhooks/momo/ answers 404 (MTN's callbacks come "
            "to /api/webhooks/mtn/)"
        )
    weak = weaknesses(rt.settings.listener_secrets())
    if weak and not rt.settings.insecure_secrets:
        raise ConfigurationError(
            f"guessable secrets: {'; '.join(weak)}. Generate each with `{SECRET_ADVICE}`, "
            "or set ORDERPAY_INSECURE_SECRETS=1 to listen with them on purpose (a test)"
        )
    if weak:
        listed = "; ".join(weak)
        info(f"warning: ORDERPAY_INSECURE_SECRETS=1: listening with guessable secrets: {listed}")
    rt.provider  # noqa: B018 -- a provider that is not configured is refused before binding
    try:
        rt.raw_database.check_schema()
    except OrderpayError as error:
        info(f"warning: {error.message} (GET /readyz answers 503 until then)")

    limits = connection_limits(rt.settings, open_file_limit())
    config = ListenerConfig(
        "orderpay.server:create_app",
        connection_limits=limits,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=uvicorn_log_config(log_level.upper()),
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    # Bound here, before saying "listening", so a busy port or a bad host is one line (exit 2);
    # uvicorn serves on this very socket, so nothing can take the port in between.
    sock = bind_listener(host, port)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that
    # was in place before it started: make that one return, so a clean stop exits 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    with sock, tempfile.TemporaryDirectory(prefix="orderpay-metrics-") as metrics_dir:
        if workers > 1:
            os.environ[MULTIPROC_ENV] = metrics_dir
        info(f"listening on http://{host}:{port} with {workers} worker(s)")
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
            return
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise Unavailable("the listener did not start; see the log above")


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), as uvicorn would bind it; ConfigurationError when
    the port is taken or the host is not an address of this machine."""
    import errno

    from orderpay.errors import ConfigurationError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: the port is in use; stop what listens there "
                "or pass another --port"
            ) from None
        if error.errno == errno.EACCES:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: permission denied; ports below 1024 need "
                "privileges, pass another --port"
            ) from None
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; pass an address of "
            "this machine with --host (127.0.0.1, 0.0.0.0, ::)"
        ) from None
    return sock
