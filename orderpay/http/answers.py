"""Errors as HTTP answers: the one shape (DESIGN.md sections 6 and 7), shared by the Starlette
exception handlers (server.error_response) and the bare callback route (http/momo_route.py).

Only the rendering lives here; each caller logs what it must before rendering.
"""

from __future__ import annotations

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
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": str(error.detail)}},
            status_code=error.status_code,
            headers=dict(error.headers or {}),
        )
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal error"}}, status_code=500
    )
