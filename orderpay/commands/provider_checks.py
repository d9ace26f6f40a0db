"""`orderpay doctor`'s checks of the providers a merchant routes payers to: M-Pesa Daraja
(settings, a token fetched now, the callback URL Daraja would accept and reach, the refund
certificate) and ORDERPAY_PROVIDER_ROUTES (every provider it names can be built).
checks.py runs them with the others."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderpay.commands.checks import Check, Failure, State
from orderpay.errors import ConfigurationError, OrderpayError

if TYPE_CHECKING:
    from orderpay.config import Settings


# M-Pesa Daraja (providers/mpesa.py; the facts: reference/providers.md)

# Stands in for a callback URL Daraja would refuse, so that the token is still checked.
_NEUTRAL_CALLBACK_URL = "https://callback.invalid/api/webhooks/daraja/doctor/"
_INITIATOR_FIELDS = ("mpesa_initiator_name", "mpesa_initiator_password", "mpesa_certificate")


def mpesa_wanted(settings: Settings) -> bool:
    from orderpay.config import SETTINGS

    if settings.provider == "mpesa" or "mpesa" in settings.route_table.values():
        return True
    return any(
        _is_set(getattr(settings, name))
        for name, setting in SETTINGS.items()
        if setting.variable.startswith("MPESA_")
    )


def _is_set(value: Any) -> bool:
    from orderpay.providers.mpesa_config import plain

    if value is None:
        return False
    if hasattr(value, "get_secret_value"):
        return bool((plain(value) or "").strip())
    return bool(str(value).strip())


def mpesa_check(settings: Settings) -> Check:
    """Everything Daraja needs of us: the settings complete, a token fetched now, a callback
    URL Daraja accepts and can reach that holds the listener's path token, the refund
    certificate readable; and which refunds are possible."""
    import copy

    from orderpay.config_values import Secret
    from orderpay.errors import ProviderUnavailable
    from orderpay.providers.mpesa import MpesaProvider
    from orderpay.providers.mpesa_config import initiator_from

    wrong: list[str] = []  # the operator's to fix
    down: list[str] = []  # may pass
    warnings: list[str] = []
    said: list[str] = []

    callback_ok = _mpesa_callback(settings, wrong, warnings)
    initiator_ok = True
    try:
        initiator_from(settings)
    except ConfigurationError as error:
        wrong.append(error.message)
        initiator_ok = False

    # The client, built without what was reported above, so that the token is asked anyway.
    checked = settings
    if not callback_ok or not initiator_ok:
        checked = copy.copy(settings)
        if not callback_ok:
            checked.__dict__["mpesa_callback_url"] = Secret(_NEUTRAL_CALLBACK_URL)
        if not initiator_ok:
            checked.__dict__.update(dict.fromkeys(_INITIATOR_FIELDS))
    try:
        provider = MpesaProvider.from_settings(checked)
    except ConfigurationError as error:
        wrong.append(error.message)
    else:
        try:
            provider.check_credentials()
            said.append(f"token fetched from {provider.base_url}")
        except ProviderUnavailable as error:
            if error.details.get("reason") == "credentials_refused":
                wrong.append(error.message)
            else:
                down.append(error.message)
        finally:
            provider.close()
        if initiator_ok:
            said.append(_mpesa_refunds(provider.refund_modes))

    detail = "; ".join(wrong + down + [f"warning: {warning}" for warning in warnings] + said)
    if wrong:
        return Check("mpesa", State.FAIL, detail, Failure.CONFIGURATION)
    if down:
        return Check("mpesa", State.FAIL, detail, Failure.OUTAGE)
    if warnings:
        return Check("mpesa", State.WARN, detail)
    return Check("mpesa", State.OK, detail)


def _mpesa_callback(settings: Settings, wrong: list[str], warnings: list[str]) -> bool:
    """MPESA_CALLBACK_URL and MPESA_CALLBACK_TOKEN: every problem, appended; whether the URL
    would be taken by the client (no problem Daraja would refuse)."""
    from urllib.parse import urlsplit

    from orderpay.domain.secret_strength import SECRET_ADVICE, weaknesses
    from orderpay.providers.mpesa_config import callback_url_problems, plain

    url = (plain(settings.mpesa_callback_url) or "").strip()
    token = (plain(settings.mpesa_callback_token) or "").strip()
    if not token:
        wrong.append(
            "MPESA_CALLBACK_TOKEN is not set: the listener answers 404 on its M-Pesa route, so "
            f"every callback is lost (generate one with {SECRET_ADVICE})"
        )
    else:
        for weakness in weaknesses([("MPESA_CALLBACK_TOKEN", token)]):
            message = f"{weakness}: a guessable path token lets anyone post callbacks"
            if settings.insecure_secrets:
                warnings.append(f"{message} (allowed by ORDERPAY_INSECURE_SECRETS)")
            else:
                wrong.append(f"{message}; generate one with {SECRET_ADVICE}")
    if not url:
        wrong.append(
            "MPESA_CALLBACK_URL is not set: the public https URL of the listener's "
            "/api/webhooks/daraja/MPESA_CALLBACK_TOKEN/ route"
        )
        return False
    fake = _mpesa_base_is_loopback(settings)
    refused = callback_url_problems(url, local_fake=fake)  # what the client refuses too
    problems = list(refused)
    parts = urlsplit(url)
    host = parts.hostname or ""
    wrong.extend(f"MPESA_CALLBACK_URL: {problem}" for problem in problems)
    if token and token not in [segment for segment in parts.path.split("/") if segment]:
        wrong.append(
            "MPESA_CALLBACK_URL does not hold MPESA_CALLBACK_TOKEN as a path segment: the "
            "listener would answer Daraja's callbacks 404 (use .../api/webhooks/daraja/TOKEN/)"
        )
    if host and not fake and not _public_host(host):
        warnings.append(
            f"MPESA_CALLBACK_URL's host {host} is not a public address: Daraja cannot reach "
            "it, so only STK Query and the worker's catch-up will settle payments"
        )
    return not refused


def _mpesa_base_is_loopback(settings: Settings) -> bool:
    from urllib.parse import urlsplit

    from orderpay.providers.mtn_endpoints import is_loopback

    host = urlsplit((settings.mpesa_base_url or "").strip()).hostname
    return bool(host) and is_loopback(host or "")


def _public_host(host: str) -> bool:
    """Whether Daraja could reach `host`: a public IP address, or a dotted name that is not
    local by convention (localhost, .local, .internal, a compose service's bare name)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    local = ("localhost", ".localhost", ".local", ".internal", ".lan", ".home.arpa", ".invalid")
    return "." in name and not any(name == end.lstrip(".") or name.endswith(end) for end in local)


def _mpesa_refunds(modes: frozenset[Any]) -> str:
    from orderpay.providers.capabilities import RefundMode

    if RefundMode.PAYOUT in modes:
        return "refunds: reversal of whole payments, partial ones as B2C payouts"
    if RefundMode.FULL_BY_MONEY_ID in modes:
        return (
            "refunds: reversal of whole payments only (set MPESA_B2C_SHORTCODE for partial refunds)"
        )
    return (
        "refunds: none (set MPESA_INITIATOR_NAME, MPESA_INITIATOR_PASSWORD and "
        "MPESA_CERTIFICATE to reverse payments)"
    )


def routes_check(settings: Settings) -> Check:
    """ORDERPAY_PROVIDER_ROUTES: each provider it names can be built from its settings."""
    from orderpay.runtime import Runtime

    table = settings.route_table
    shown = ", ".join(
        f"{region + ':' if region else ''}{network}={provider}"
        for (region, network), provider in table.items()
    )
    broken = []
    runtime = Runtime(settings)
    try:
        for name in dict.fromkeys(table.values()):
            try:
                runtime.provider_for(name)
            except OrderpayError as error:
                broken.append(f"{name}: {error.message}")
    finally:
        runtime.close()
    if broken:
        return Check(
            "routes",
            State.FAIL,
            f"{shown}: " + "; ".join(broken),
            Failure.CONFIGURATION,
        )
    return Check(
        "routes",
        State.OK,
        f"{shown}; payers on other networks are refused unless --provider names one",
    )
