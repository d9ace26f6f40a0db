"""The rules some settings keep beyond their type and bounds (config.py applies them in the
order the settings are declared; each gets the settings read so far)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orderpay.config_values import PHONE_REGIONS, PROVIDER_NAMES, BadValue, Secret
from orderpay.database_urls import database_url
from orderpay.errors import OrderpayError


def _intervals(value: str, checked: dict[str, Any]) -> str:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 0 < int(part) <= 86_400 for part in parts):
        raise BadValue("a comma-separated list of whole seconds (1-86400), e.g. 10,30,60")
    return ",".join(parts)


def _lease_outlasts_a_send(value: float, checked: dict[str, Any]) -> float:
    timeout = checked.get("notify_timeout_seconds")
    if timeout is not None and value < timeout:
        # A shorter lease lets another worker take over a send still in flight.
        raise BadValue("must be at least ORDERPAY_NOTIFY_TIMEOUT_SECONDS")
    return value


def _region_known(value: str, checked: dict[str, Any]) -> str:
    region = value.strip().upper()
    if region not in PHONE_REGIONS:
        raise BadValue("an ISO 3166 alpha-2 region that has phone numbers, e.g. GH, UG")
    return region


def _database_url_usable(value: Secret | None, checked: dict[str, Any]) -> Secret | None:
    if value is not None and value.get_secret_value():
        # Refused here, so every command (doctor included) says so before connecting.
        try:
            database_url(value.get_secret_value())
        except OrderpayError as error:
            raise BadValue(error.message) from None
    return value


ROUTES_VARIABLE = "ORDERPAY_PROVIDER_ROUTES"


def route_table(raw: str, known: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """ORDERPAY_PROVIDER_ROUTES as a table keyed by (region or "", network casefolded or
    "*"): `Safaricom=mpesa,KE:Airtel=airtel,RW:*=pawapay`. BadValue names the part that does
    not read."""
    table: dict[tuple[str, str], str] = {}
    for part in (piece.strip() for piece in raw.split(",")):
        if not part:
            continue
        key, sep, provider = (side.strip() for side in part.partition("="))
        region, colon, network = (side.strip() for side in key.rpartition(":"))
        if not sep or not network or (colon and not (len(region) == 2 and region.isalpha())):
            raise BadValue(
                f"{part!r} does not read as NETWORK=PROVIDER, REGION:NETWORK=PROVIDER or "
                "REGION:*=PROVIDER (e.g. Safaricom=mpesa,MTN=mtn)"
            )
        if provider not in known:
            raise BadValue(f"{part!r} names provider {provider!r} (known: {', '.join(known)})")
        table[(region.upper(), network.casefold())] = provider
    return table


# Rules beyond the type and bounds, by attribute name; each gets the settings read so far.
def _routes_read(value: str | None, checked: dict[str, Any]) -> str | None:
    route_table(value or "", PROVIDER_NAMES)  # refused at load, naming the part
    return value


def _networks_read(value: str | None, checked: dict[str, Any]) -> str | None:
    """Addresses and CIDRs (MPESA_ALLOWED_IPS, MPESA_TRUSTED_PROXIES), refused at load: a typo
    found per request would answer every callback 400, and Daraja does not retry."""
    import ipaddress

    for part in (piece.strip() for piece in (value or "").split(",")):
        if part:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise BadValue(f"{part!r} is not an IP address or CIDR") from None
    return value


RULES: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "database_url_secret": _database_url_usable,
    "default_region": _region_known,
    "provider_routes": _routes_read,
    "mpesa_allowed_ips": _networks_read,
    "mpesa_trusted_proxies": _networks_read,
    "notify_retry_intervals": _intervals,
    "notify_lease_seconds": _lease_outlasts_a_send,
}
