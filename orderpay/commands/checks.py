"""What `orderpay doctor` checks, and what each failure means.

Every check runs, even when an earlier one failed or a setting is invalid (a check that
depends on an invalid setting is skipped, saying which). A failure is either the operator's to
fix (configuration, paths, permissions: exit 2) or an outage that may pass (exit 7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from orderpay.errors import ConfigurationError, InvalidInput, OrderpayError

if TYPE_CHECKING:
    from orderpay.config import Settings


class State(StrEnum):
    OK = "ok"
    FAIL = "fail"
    SKIPPED = "skipped"
    INFO = "info"
    WARN = "warn"  # works, but likely not as meant (e.g. a callback URL Daraja cannot reach)


class Failure(StrEnum):
    CONFIGURATION = "configuration"  # fix a setting, a path or a permission; retrying won't help
    OUTAGE = "outage"  # something is down; it may come back


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str
    failure: Failure | None = None


# Which settings each check depends on (variable names, or prefixes ending in "_").
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "database": ("DATABASE_URL", "POSTGRES_"),
    "redis": ("REDIS_URL",),
    "provider": (
        "ORDERPAY_PROVIDER",
        "MTN_MOMO_",
        "ORDERPAY_SIMULATOR_",
        "ORDERPAY_CHARGE_",
        "MOMO_WEBHOOK_SECRET",
        "MPESA_",
    ),
    "refunds": ("MTN_MOMO_DISBURSEMENT_",),
    "mpesa": ("MPESA_", "ORDERPAY_CHARGE_", "ORDERPAY_INSECURE_SECRETS"),
    "routes": (
        "ORDERPAY_PROVIDER_ROUTES",
        "MTN_MOMO_",
        "MPESA_",
        "ORDERPAY_SIMULATOR_",
        "ORDERPAY_CHARGE_",
        "MOMO_WEBHOOK_SECRET",
    ),
    "notify channel": ("ORDERPAY_NOTIFY_", "ORDERPAY_SMS_", "ORDERPAY_MERCHANT_NAME"),
}


def run_checks(load: Callable[..., Settings]) -> list[Check]:
    """Every check, in order. `load(**overrides)` reads the settings."""
    checks: list[Check] = []
    invalid: list[str] = []
    try:
        settings = load()
        checks.append(Check("configuration", State.OK, "every setting is valid"))
    except ConfigurationError as error:
        checks.append(Check("configuration", State.FAIL, error.message, Failure.CONFIGURATION))
        invalid = list(error.details.get("variables", []))
        try:
            settings = load(**_defaults_for(invalid))
        except ConfigurationError:
            return checks  # nothing else can be read
    named: list[tuple[str, Callable[[Settings], Check]]] = [
        ("database", _database),
        ("redis", _redis),
        ("provider", _provider),
    ]
    # Refunds go through the payment's own provider, not ORDERPAY_PROVIDER: MTN payments
    # made before a switch to the simulator still need Disbursement, so any of its settings
    # being set asks for the check too (and a half-set one fails it).
    if settings.provider == "mtn" or _disbursement_set(settings):
        named.append(("refunds", _mtn_refunds))
    # M-Pesa: whenever it may be asked to collect (the provider, or a route to it) or any of
    # its settings is set (its payments are refunded and confirmed through it whatever
    # ORDERPAY_PROVIDER says now).
    from orderpay.commands.provider_checks import mpesa_check, mpesa_wanted, routes_check

    if mpesa_wanted(settings) or any(v.startswith("MPESA_") for v in invalid):
        named.append(("mpesa", mpesa_check))
    if (settings.provider_routes or "").strip() or "ORDERPAY_PROVIDER_ROUTES" in invalid:
        named.append(("routes", routes_check))
    named.append(("notify channel", _channel))
    for name, check in named:
        blocking = [v for v in invalid if _depends(name, v)] if invalid else []
        if not invalid or not blocking:
            checks.append(check(settings))
        else:
            checks.append(Check(name, State.SKIPPED, f"fix {', '.join(blocking)} first"))
    database_ok = any(c.name == "database" and c.state is State.OK for c in checks)
    checks.append(
        _review_queue(settings)
        if database_ok
        else Check("review queue", State.SKIPPED, "needs the database")
    )
    secrets = settings.webhook_secrets()
    checks.append(
        Check(
            "callback secret",
            State.INFO,
            f"{len(secrets)} configured" if secrets else "missing: serve-webhooks will not start",
        )
    )
    token = settings.api_token
    enabled = bool(token and token.get_secret_value())
    checks.append(Check("rest api", State.INFO, "enabled" if enabled else "disabled"))
    return checks


def verdict(checks: list[Check]) -> OrderpayError | None:
    """The error doctor exits with: configuration problems first (exit 2), then outages (7)."""
    from orderpay.errors import Unavailable

    failed = [check for check in checks if check.state is State.FAIL]
    if not failed:
        return None
    names = ", ".join(check.name for check in failed)
    if any(check.failure is Failure.CONFIGURATION for check in failed):
        return ConfigurationError(f"doctor: {len(failed)} check(s) failed ({names}); see above")
    return Unavailable(f"doctor: {len(failed)} check(s) failed ({names}); retry later")


def _depends(check: str, variable: str) -> bool:
    return any(
        variable.startswith(item) if item.endswith("_") else variable == item
        for item in DEPENDS_ON.get(check, ())
    )


def _defaults_for(variables: list[str]) -> dict[str, Any]:
    """The default of each named setting, by variable name."""
    from orderpay.config import SETTINGS

    return {
        setting.variable: setting.default
        for setting in SETTINGS.values()
        if setting.variable in variables
    }


def _failed(name: str, error: OrderpayError) -> Check:
    kind = Failure.CONFIGURATION if isinstance(error, InvalidInput) else Failure.OUTAGE
    return Check(name, State.FAIL, error.message, kind)


def _database(settings: Settings) -> Check:
    from orderpay.store.db import Database

    try:
        database = Database(settings.database_url)
    except OrderpayError as error:
        return _failed("database", error)
    try:
        database.check_schema()
        database.check_writable()
    except OrderpayError as error:
        return _failed("database", error)
    finally:
        database.dispose()
    return Check("database", State.OK, f"{database.label}: schema current, writable")


def _review_queue(settings: Settings) -> Check:
    """How many findings wait for an operator, and how long the oldest open question to a
    provider has waited: said, never a failure (work to do, not a broken deployment)."""
    from orderpay.clock import utcnow
    from orderpay.domain.times import age_text
    from orderpay.payments.catch_up import oldest_awaiting
    from orderpay.store.db import Database
    from orderpay.store.reviews import count_open

    database = Database(settings.database_url)
    try:
        with database.transaction() as conn:
            waiting = count_open(conn)
            since = oldest_awaiting(conn)
    except OrderpayError as error:  # it answered the database check a moment ago
        return Check("review queue", State.SKIPPED, f"not read: {error.message}")
    finally:
        database.dispose()
    queue = f"{waiting} open: see `orderpay review list`" if waiting else "0 open"
    if since is not None:
        queue += (
            f"; oldest awaiting a provider's answer: {age_text(utcnow() - since)} "
            "(the worker asks again on its own)"
        )
    return Check("review queue", State.INFO, queue)


def _redis(settings: Settings) -> Check:
    url = settings.redis_url
    if not url:
        return Check("redis", State.INFO, "not configured: workers deliver from the database")
    from sqlalchemy.engine import make_url

    from orderpay.jobs import connect_redis

    shown = make_url(url).render_as_string(hide_password=True)
    try:
        client = connect_redis(url)
    except ValueError as error:
        return Check(
            "redis", State.FAIL, f"REDIS_URL does not parse: {error}", Failure.CONFIGURATION
        )
    try:
        client.ping()
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Check(
            "redis",
            State.FAIL,
            f"cannot reach {shown}: {type(error).__name__}: {reason}",
            Failure.OUTAGE,
        )
    finally:
        client.close()
    return Check("redis", State.OK, f"{shown} answers")


def _provider(settings: Settings) -> Check:
    from orderpay.runtime import Runtime

    runtime = Runtime(settings)
    try:
        return Check("provider", State.OK, runtime.provider.name)
    except OrderpayError as error:
        return _failed("provider", error)
    finally:
        runtime.close()


def _disbursement_set(settings: Settings) -> bool:
    from orderpay.providers.mtn_disbursement import ENV

    return len(_disbursement_missing(settings)) < len(ENV)


def _disbursement_missing(settings: Settings) -> list[str]:
    from orderpay.providers.mtn_disbursement import disbursement_credentials

    subscription_key = settings.mtn_disbursement_subscription_key
    api_key = settings.mtn_disbursement_api_key
    _, missing = disbursement_credentials(
        subscription_key.get_secret_value() if subscription_key is not None else None,
        settings.mtn_disbursement_api_user,
        api_key.get_secret_value() if api_key is not None else None,
    )
    return missing


def _mtn_refunds(settings: Settings) -> Check:
    """MTN refunds go through the Disbursement product. None of its settings is a choice (MTN
    payments are then not refundable: info); some of them is a mistake (fail)."""
    from orderpay.providers.mtn_disbursement import ENV

    missing = _disbursement_missing(settings)
    if not missing:
        return Check("refunds", State.OK, "MTN Disbursement configured")
    if len(missing) == len(ENV):
        return Check(
            "refunds", State.INFO, f"refunds not configured: MTN refunds need {', '.join(missing)}"
        )
    return Check(
        "refunds",
        State.FAIL,
        f"MTN Disbursement is missing {', '.join(missing)}",
        Failure.CONFIGURATION,
    )


def _channel(settings: Settings) -> Check:
    from orderpay.runtime import Runtime

    runtime = Runtime(settings)
    try:
        return Check("notify channel", State.OK, runtime.channel.name)
    except OrderpayError as error:
        return _failed("notify channel", error)
    finally:
        runtime.close()
