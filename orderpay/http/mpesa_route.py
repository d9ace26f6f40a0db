"""M-Pesa's callback route: `POST /api/webhooks/mpesa/{path_token}/`, and the same at
`/api/webhooks/daraja/{path_token}/` (Daraja refuses a callback URL holding "mpesa").

Daraja signs nothing, so who may post is decided by the path token (MPESA_CALLBACK_TOKEN,
compared in constant time; a wrong one is 404, as if the route did not exist) and, when set,
by MPESA_ALLOWED_IPS (403 for another address). X-Forwarded-For is read only when the peer is
one of MPESA_TRUSTED_PROXIES, and then its last address not itself a trusted proxy is the
caller. What passes is still a hint (payments/mpesa_callbacks.py): STK results are confirmed
by STK Query off the request threads before anything moves. Daraja is answered at once with
its own acknowledgement shape.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orderpay.errors import Forbidden, RouteNotFound
from orderpay.http.bodies import read_body
from orderpay.metrics import metrics
from orderpay.payments.mpesa_callbacks import Received, record_callback
from orderpay.providers.mpesa_messages import parse_callback
from orderpay.store.db import retrying

if TYPE_CHECKING:
    from orderpay.http.confirmer import Confirmer
    from orderpay.runtime import Runtime

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@functools.lru_cache(maxsize=8)
def networks(raw: str | None) -> tuple[Network, ...]:
    """A comma-separated list of addresses and CIDRs (checked when the settings were read),
    read once per value rather than per callback."""
    parts = (piece.strip() for piece in (raw or "").split(","))
    return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)


def caller_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The caller: the peer, unless it is a trusted proxy, then the right-most address of
    X-Forwarded-For that is not one (a caller can prepend anything, not append)."""
    if peer is None:
        return ""
    if not forwarded_for or not _within(peer, proxies):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not _within(hop, proxies):
            return hop
    return peer


def _within(address: str, nets: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


async def mpesa_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    expected = (
        settings.mpesa_callback_token.get_secret_value() if settings.mpesa_callback_token else ""
    )
    given = str(request.path_params.get("path_token", ""))
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise RouteNotFound("not found")
    allowed = networks(settings.mpesa_allowed_ips)
    if allowed:
        proxies = networks(settings.mpesa_trusted_proxies)
        peer = request.client.host if request.client else None
        caller = caller_address(peer, request.headers.get("x-forwarded-for"), proxies)
        if not _within(caller, allowed):
            metrics().callbacks.labels("mpesa", "forbidden").inc()
            raise Forbidden("this address may not post M-Pesa callbacks")
    body = await read_body(request)
    callback = parse_callback(body, request.query_params)
    notify = runtime.notify_target()

    def record() -> Received:
        return retrying(runtime.database, lambda conn: record_callback(conn, callback, notify))

    received = await run_in_threadpool(record)
    metrics().callbacks.labels("mpesa", received.outcome).inc()
    if received.notification_queued:
        runtime.nudger.nudge()
    if received.to_confirm is not None:
        confirmer: Confirmer = request.app.state.confirmer
        confirmer.submit(
            received.to_confirm, "mpesa callback, confirmed by STK Query", received.hint
        )
    return JSONResponse(ACKNOWLEDGED)
