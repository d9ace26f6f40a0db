"""The HMAC-only ceiling for bench/webhooks.py: a bare Starlette app that verifies and answers.

One POST route at the listener's path reads the body, checks `X-Momo-Signature` (lowercase hex
HMAC-SHA256 of the raw bytes, keyed by MOMO_WEBHOOK_SECRET) with hmac.compare_digest and answers
200 `{"status": "verified"}` (401 on a bad signature). No database, no JSON parsing, no
middleware. It is served by uvicorn with the settings `orderpay serve-webhooks` passes
(orderpay/commands/listener.py): an import string with a factory, the given worker count, the
same log config, no access log, no Server header, loop and http left to uvicorn's "auto"
(uvloop and httptools when installed). So the gap between the two is what orderpay's request
handling and its database transaction cost.

    MOMO_WEBHOOK_SECRET=... python bench/webhooks_hmac_app.py --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CALLBACK_PATH = "/api/webhooks/momo/"


def create_app() -> Starlette:
    secret = os.environ.get("MOMO_WEBHOOK_SECRET", "").encode()
    if not secret:
        raise SystemExit("MOMO_WEBHOOK_SECRET is not set")

    async def webhook(request: Request) -> Response:
        body = await request.body()
        given = request.headers.get("x-momo-signature", "").encode()
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": {"code": "invalid_signature"}}, status_code=401)
        return JSONResponse({"status": "verified"})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(CALLBACK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="HMAC-only Starlette endpoint (a ceiling).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    import uvicorn

    from orderpay.logs import uvicorn_log_config

    # The same call as orderpay.commands.listener.serve_webhooks makes, app aside. Workers are
    # spawned and import this module by name: running this file puts bench/ on sys.path,
    # and spawned children inherit it.
    uvicorn.run(
        "webhooks_hmac_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=uvicorn_log_config(args.log_level.upper()),
        log_level=args.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


if __name__ == "__main__":
    main()
