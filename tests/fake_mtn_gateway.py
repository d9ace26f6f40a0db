"""What every product of the fake MTN (Collection: tests/fake_mtn.py, Disbursement:
tests/fake_mtn_disbursement.py) checks and answers alike, as MTN's API gateway does."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

LENGTH_REQUIRED_HTML = (
    "<html><head><title>411 Length Required</title></head>"
    "<body><h1>Length Required</h1></body></html>"
)
DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def subscription_refused() -> JSONResponse:
    # Azure API Management's shape, as the real gateway answers.
    return JSONResponse(
        {
            "statusCode": 401,
            "message": "Access denied due to invalid subscription key. "
            "Make sure to provide a valid key for an active subscription.",
        },
        status_code=401,
    )


def basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, key = decoded.partition(":")
    return (user, key) if sep else None


def token_response(
    request: Request,
    *,
    subscription_key: str,
    credentials: tuple[str, str],
    issue: Callable[[], tuple[str, int]],
) -> Response:
    """`POST /{product}/token/`: 411 without Content-Length [observed], 401 for another
    product's subscription key or wrong Basic credentials; else `issue()` -> (token, expires_in)."""
    if "content-length" not in request.headers:
        return HTMLResponse(LENGTH_REQUIRED_HTML, status_code=411)
    if request.headers.get("ocp-apim-subscription-key") != subscription_key:
        return subscription_refused()
    if basic_credentials(request.headers.get("authorization", "")) != credentials:
        return JSONResponse({"error": "login_failed"}, status_code=401)
    token, expires_in = issue()
    return JSONResponse(
        {"access_token": token, "token_type": "access_token", "expires_in": expires_in}
    )


def api_call_refused(
    request: Request,
    *,
    subscription_key: str,
    token_valid: Callable[[str], bool],
    target_environment: str,
) -> Response | None:
    """Why the gateway refuses an API call (subscription key, bearer token of this product,
    target environment), or None."""
    if request.headers.get("ocp-apim-subscription-key") != subscription_key:
        return subscription_refused()
    auth = request.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
    if not token_valid(token):
        return error(401, "UNAUTHORIZED", "Access token is missing, invalid or expired")
    if request.headers.get("x-target-environment") != target_environment:
        return error(
            400, "NOT_ALLOWED_TARGET_ENVIRONMENT", "Access to target environment is forbidden"
        )
    return None


def reference_id(request: Request) -> tuple[str | None, Response | None]:
    """The request's X-Reference-Id (a lowercase UUID v4), or the 400 refusing it."""
    raw = request.headers.get("x-reference-id", "")
    try:
        reference = uuid.UUID(raw)
    except ValueError:
        return None, error(400, "INVALID_REFERENCE_ID", "X-Reference-Id must be a UUID")
    if reference.version != 4 or str(reference) != raw.lower():
        return None, error(400, "INVALID_REFERENCE_ID", "X-Reference-Id must be a UUID v4")
    return str(reference), None
