"""Errors as HTTP answers (DESIGN.md sections 6 and 7): `answer_for` is the one translation,
used by the Starlette exception handlers (server.py) and by the bare callback route
(http/momo_route.py). It logs what the caller is not told; the caller is told no host, user
or SQL.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from orderpay.errors import (
    DatabaseInaccessible,
    DatabaseUnavailable,
    InvalidToken,
    OrderpayError,
    PaymentDeclined,
)
from orderpay.http import rest
from orderpay.store.db import PUBLIC_UNAVAILABLE
from orderpay.store.outages import database_outage

log = logging.getLogger("orderpay.server")


def answer_for(error: Exception, method: str, path: str) -> JSONResponse:
    """The answer to a request that raised `error`, with a log line when the log must say
    more than the caller is told (an outage's detail, a bug's traceback)."""
    if isinstance(error, DatabaseInaccessible):
        # The operator's to fix (a path, a permission), not the caller's: the log says what.
        log.error("database inaccessible: %s", error.message)
    error = public_error(error)
    if isinstance(error, DatabaseUnavailable) and error.public_message != error.message:
        # A restart fails every request for a moment: the outage is one line, not one each.
        database_outage().failed(f"{error.code} on {method} {path}: {error.message}")
    elif isinstance(error, OrderpayError):
        if error.public_message != error.message:
            log.error("%s on %s %s: %s", error.code, method, path, error.message)
    elif not isinstance(error, HTTPException):
        log.error("unhandled error on %s %s", method, path, exc_info=error)
    return error_json(error)


def public_error(error: Exception) -> Exception:
    """The error the caller is told about: an inaccessible database (a path, a permission) is
    the operator's to fix, so the caller is told to retry, as for any outage."""
    if isinstance(error, DatabaseInaccessible):
        return DatabaseUnavailable(error.message, public_message=PUBLIC_UNAVAILABLE)
    return error


def error_json(error: Exception) -> JSONResponse:
    """The answer for `error` (already passed through public_error): status, body, headers."""
    if isinstance(error, OrderpayError):
        headers: dict[str, str] = {}
        if isinstance(error, InvalidToken):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, PaymentDeclined) and error.details.get("replayed"):
            headers[rest.REPLAYED_HEADER] = "true"
        if isinstance(error, DatabaseUnavailable):
            headers["Retry-After"] = "5"
        return JSONResponse(
            error.to_dict(public=True), status_code=error.http_status, headers=headers
        )
    if isinstance(error, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout"}.get(
            error.status_code, "http_error"
        )
        return JSONResponse(
            {"error": {"code": code, "message": str(error.detail)}},
            status_code=error.status_code,
            headers=dict(error.headers or {}),
        )
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal error"}}, status_code=500
    )
