"""The listener (`orderpay serve-webhooks`): payment callbacks, the seed's REST API, health.

A thin HTTP shell: it reads and bounds bodies, checks signatures and tokens, calls one service
function per request (in a worker thread: the services are synchronous and own no
transaction) and renders the result. Signed callbacks take a bare ASGI route in front of the
Starlette app (http/momo_route.py). Errors become answers in http/answers.py, which the
exception handlers here and that route both call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderpay.clock import utcnow
from orderpay.errors import OrderpayError, RouteNotFound
from orderpay.http import rest
from orderpay.http.answers import answer_for
from orderpay.http.bodies import read_body
from orderpay.http.confirmer import Confirmer
from orderpay.http.momo_route import PATHS as MOMO_PATHS
from orderpay.http.momo_route import MomoRoute
from orderpay.http.mpesa_route import mpesa_webhook
from orderpay.metrics import metrics
from orderpay.notify.reports import apply_report, parse_report
from orderpay.payments.catch_up import oldest_awaiting
from orderpay.payments.hints import MTN_PROVIDER, parse_hint, record_hint
from orderpay.payments.signed_callbacks import SignedCallbacks
from orderpay.runtime import Runtime
from orderpay.store.db import retrying
from orderpay.store.payments import Payment
from orderpay.store.reviews import count_open

if TYPE_CHECKING:
    from orderpay.config import Settings

log = logging.getLogger("orderpay.server")
access_log = logging.getLogger("orderpay.access")


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def confirmer_of(request: Request) -> Confirmer:
    return request.app.state.confirmer  # type: ignore[no-any-return]


async def mtn_webhook(request: Request) -> Response:
    """POST or PUT /api/webhooks/mtn/: MTN's unsigned callback, a hint to ask MTN's status.

    Only when MTN collects (ORDERPAY_PROVIDER, or a route of ORDERPAY_PROVIDER_ROUTES).
    Recorded (bounded: see payments.hints), answered at once, then confirmed by MTN's status
    call off the request threads: a forged SUCCESSFUL never marks an order paid.
    """
    runtime = runtime_of(request)
    settings = runtime.settings
    if MTN_PROVIDER not in {settings.provider, *settings.route_table.values()}:
        raise RouteNotFound("not found")
    body = await read_body(request)
    hint = parse_hint(body)

    def record() -> Payment | None:
        return retrying(runtime.database, lambda conn: record_hint(conn, hint))

    payment = await run_in_threadpool(record)
    metrics().callbacks.labels("mtn", "to_confirm" if payment else "ignored").inc()
    if payment is not None:
        confirmer_of(request).submit(payment, "mtn callback, confirmed by status")
    return JSONResponse({"status": "received"})


async def sms_delivery_report(request: Request) -> Response:
    """POST /api/webhooks/sms-dlr/?token=...: the SMS gateway's delivery reports."""
    runtime = runtime_of(request)
    given = request.query_params.get("token", "")
    rest.require_token(runtime.settings.sms_dlr_token, given, "invalid token")
    body = await read_body(request)
    report = parse_report(body, request.headers.get("content-type", ""))

    def apply() -> str:
        with runtime.database.transaction() as conn:
            return apply_report(conn, report)

    outcome = await run_in_threadpool(apply)
    metrics().callbacks.labels("sms-dlr", outcome).inc()
    return JSONResponse({"status": outcome})


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is this code's (Redis is not needed)."""
    runtime = runtime_of(request)
    await run_in_threadpool(runtime.raw_database.check_schema)
    return JSONResponse({"status": "ready", "database": runtime.raw_database.dialect})


async def metrics_endpoint(request: Request) -> Response:
    waiting, oldest = await run_in_threadpool(_waiting_work, runtime_of(request))
    body, content_type = metrics().render(review_items_open=waiting, oldest_awaiting_seconds=oldest)
    return Response(body, media_type=content_type)


def _waiting_work(runtime: Runtime) -> tuple[int | None, float | None]:
    """The open review items and the age of the oldest answer awaited, read at scrape time;
    None when the database cannot say, so that an outage leaves the gauges out instead of
    failing the whole scrape."""
    try:
        with runtime.database.transaction() as conn:
            since = oldest_awaiting(conn)
            return count_open(conn), 0.0 if since is None else (utcnow() - since).total_seconds()
    except Exception as error:  # any database failure: the other metrics are still served
        log.warning("waiting work not counted for /metrics: %s", getattr(error, "message", error))
        return None, None


async def client_gone(_request: Request, _error: Exception) -> Response:
    """The client left, or was cut off at the body deadline, before its body was complete:
    there is nobody to answer and nothing went wrong here. 499 in the access log, as nginx
    writes it."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


CLIENT_CLOSED_REQUEST = 499


def error_response(request: Request, error: Exception) -> Response:
    """Starlette's exception handler: http/answers.py's translation."""
    return answer_for(error, request.method, request.url.path)


class AccessLog:
    """Logs one line per request and times it, without query strings (they may hold tokens)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_remember(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_remember)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope)
            metrics().latency.labels(route, scope["method"]).observe(elapsed)
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )


def route_label(scope: Scope) -> str:
    """The route's template, so metrics do not grow a label per order id."""
    endpoint = scope.get("endpoint")
    for route in ROUTES:
        if isinstance(route, Route) and route.endpoint is endpoint:
            return route.path
    return "unmatched"


Endpoint = Callable[[Request], Awaitable[Response]]


def both_forms(path: str, endpoint: Endpoint, methods: list[str]) -> list[Route]:
    """The route at `path` and at `path` with its trailing slash toggled (DESIGN.md section 6:
    routes answer the same with or without it; Starlette would answer the other form with an
    empty 307, which a POST's sender does not follow). The canonical form comes first, so
    `route_label` names both by it."""
    other = path.removesuffix("/") if path.endswith("/") else path + "/"
    return [Route(path, endpoint, methods=methods), Route(other, endpoint, methods=methods)]


ROUTES = [
    *both_forms("/api/webhooks/mtn/", mtn_webhook, ["POST", "PUT"]),
    *both_forms("/api/webhooks/sms-dlr/", sms_delivery_report, ["POST"]),
    *both_forms("/api/webhooks/mpesa/{path_token}/", mpesa_webhook, ["POST"]),
    *both_forms("/api/webhooks/daraja/{path_token}/", mpesa_webhook, ["POST"]),
    *both_forms("/api/orders/", rest.create_order, ["POST"]),
    *both_forms("/api/orders/{order_id}/", rest.get_order, ["GET"]),
    *both_forms("/api/payments/charge/", rest.charge, ["POST"]),
    *both_forms("/api/payments/{payment_id}/refunds/", rest.refund, ["POST"]),
    *both_forms("/healthz", healthz, ["GET"]),
    *both_forms("/readyz", readyz, ["GET"]),
    *both_forms("/metrics", metrics_endpoint, ["GET"]),
]


# Threads that run service calls, and database connections for them, per worker process.
# Requests beyond this wait in the event loop, which costs nothing while the CPU is busy anyway.
WORKER_THREADS = 16


class Listener:
    """The ASGI application: signed callbacks to their bare route, everything else to the
    Starlette app (`app`; its `state` holds the runtime and the confirmer)."""

    def __init__(self, app: Starlette, momo: MomoRoute) -> None:
        self.app = app
        self.momo = momo

    @property
    def state(self) -> Any:
        return self.app.state

    @property
    def callbacks(self) -> SignedCallbacks:
        return self.momo.callbacks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in MOMO_PATHS:
            await self.momo(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> Listener:
    """The ASGI application; `uvicorn --factory orderpay.server:create_app` runs it."""
    runtime = Runtime(
        settings, pool_size=WORKER_THREADS, max_overflow=4, pool_timeout=10, session_guards=True
    )
    # Build what threads will share now, so no two threads race to create it.
    runtime.settings  # noqa: B018
    runtime.raw_database  # noqa: B018
    runtime.provider  # noqa: B018
    confirmer = Confirmer(runtime)
    metrics()
    callbacks = SignedCallbacks(
        runtime.raw_database,
        lambda: runtime.database,
        runtime.notify_target(),
        run_in_threadpool,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        await callbacks.open()  # one asyncpg pool per worker process, on Postgres
        yield
        await callbacks.close()
        confirmer.close()
        runtime.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(AccessLog)],
        exception_handlers={
            ClientDisconnect: client_gone,
            OrderpayError: error_response,
            HTTPException: error_response,
            Exception: error_response,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.confirmer = confirmer
    secrets = runtime.settings.webhook_secrets()
    return Listener(app, MomoRoute(callbacks, secrets, confirmer, runtime.nudger))
