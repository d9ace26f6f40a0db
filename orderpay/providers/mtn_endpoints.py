"""MTN MoMo configuration checks: which base URL goes with which target environment.

Kept apart from the client (mtn.py) so the rules can be read, and tested, on their own.
"""

from __future__ import annotations

import ipaddress
import re

import httpx

from orderpay.errors import ConfigurationError
from orderpay.providers.mtn_config import MtnEndpoint

SANDBOX_HOST = "sandbox.momodeveloper.mtn.com"
SANDBOX_TARGET = "sandbox"
_TARGET = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")


def checked(endpoint: MtnEndpoint) -> MtnEndpoint:
    """The endpoint with its URLs normalised, once they pass check_endpoint and
    check_callback_url; ConfigurationError otherwise."""
    target = endpoint.target_environment.strip()
    return MtnEndpoint(
        base_url=check_endpoint(endpoint.base_url, target),
        target_environment=target,
        callback_url=check_callback_url(endpoint.callback_url, target),
    )


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(base_url: str, target_environment: str) -> str:
    """Validate the base URL and target environment as a pair; return the normalised base URL.

    The rule (ConfigurationError otherwise):
    - the target is lowercase letters and digits (`sandbox`, `mtnghana`, `mtnuganda`...);
    - the base URL is an absolute http(s) URL with no credentials, query or fragment;
    - target `sandbox` needs the sandbox host (`sandbox.momodeveloper.mtn.com`) or a loopback
      host (`localhost`, 127.0.0.0/8, ::1: a local fake MTN for tests and development);
    - any other target is production: it refuses the sandbox host and loopback hosts alike, so
      a production target can never be pointed at a fake or at the sandbox;
    - https is required except on loopback.
    """
    target = target_environment.strip()
    if not _TARGET.fullmatch(target):
        raise ConfigurationError(
            "MTN_MOMO_TARGET_ENVIRONMENT must be 'sandbox' or a production target such as "
            "'mtnghana' (lowercase letters and digits)"
        )
    url = _absolute_url(base_url, "MTN_MOMO_BASE_URL")
    if url.userinfo or url.query or url.fragment:
        raise ConfigurationError(
            "MTN_MOMO_BASE_URL must not carry credentials, a query or a fragment"
        )
    host = url.host.lower().rstrip(".")
    loopback = is_loopback(host)
    if target == SANDBOX_TARGET:
        if host != SANDBOX_HOST and not loopback:
            raise ConfigurationError(
                f"MTN_MOMO_TARGET_ENVIRONMENT=sandbox needs MTN_MOMO_BASE_URL on {SANDBOX_HOST} "
                f"(or a loopback fake), not the production host {host}"
            )
    elif host == SANDBOX_HOST:
        raise ConfigurationError(
            f"MTN_MOMO_TARGET_ENVIRONMENT={target} is a production target but MTN_MOMO_BASE_URL "
            f"points at the sandbox host {SANDBOX_HOST}"
        )
    elif loopback:
        raise ConfigurationError(
            f"MTN_MOMO_TARGET_ENVIRONMENT={target} is a production target but MTN_MOMO_BASE_URL "
            "is a loopback address (only target 'sandbox' may use a local fake)"
        )
    if url.scheme != "https" and not loopback:
        raise ConfigurationError("MTN_MOMO_BASE_URL must use https")
    return str(url).rstrip("/")


def check_callback_url(callback_url: str | None, target_environment: str) -> str | None:
    """The callback URL MTN is told about, or None (then MTN sends no callback)."""
    if callback_url is None or not callback_url.strip():
        return None
    url = _absolute_url(callback_url, "MTN_MOMO_CALLBACK_URL")
    if url.userinfo or url.fragment:
        raise ConfigurationError("MTN_MOMO_CALLBACK_URL must not carry credentials or a fragment")
    if target_environment.strip() != SANDBOX_TARGET and url.scheme != "https":
        raise ConfigurationError("MTN_MOMO_CALLBACK_URL must use https: MTN calls back over HTTPS")
    return str(url)


def _absolute_url(value: str, name: str) -> httpx.URL:
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL:
        raise ConfigurationError(f"{name} is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL")
    return url
