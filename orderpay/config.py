"""Configuration from the environment and a `.env` file (DESIGN.md section 2).

Only entrypoints (cli, server, jobs) read it, and they pass plain values down. Secrets are
`Secret`s, so they never show in `repr()`, logs or `orderpay config show`.

Read by hand rather than with pydantic-settings: every command reads the settings first, and
loading pydantic cost a read command more than everything else it does beyond SQLAlchemy. The
rules are pydantic's own (what each type accepts, the constraint messages, a default checked
like a given value and named by its field), so the messages are the ones operators saw before;
tests/test_config_values.py pins them.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Literal

from orderpay.config_rules import RULES, route_table
from orderpay.config_values import PROVIDER_NAMES, BadValue, Secret, Setting
from orderpay.database_urls import database_url
from orderpay.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///orderpay.db"
ENV_FILE = ".env"

ProviderName = Literal["simulator", "mtn", "mpesa"]
ChannelName = Literal["log", "sms", "webhook"]
PROVIDERS: tuple[ProviderName, ...] = PROVIDER_NAMES  # type: ignore[assignment]
CHANNELS: tuple[ChannelName, ...] = ("log", "sms", "webhook")


def _setting(
    variable: str,
    kind: Any = str,
    *,
    default: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    # Typed Any so that each class attribute keeps the type of the value an instance holds.
    return Setting(variable, kind, default, ge, gt, le)


class Settings:
    """Every setting, read and checked when made (load_settings), never at import time."""

    # URLs may carry passwords, so they are secrets too; read them through the properties.
    database_url_secret: Secret | None = _setting("DATABASE_URL", Secret)
    postgres_db: str | None = _setting("POSTGRES_DB")
    postgres_user: str | None = _setting("POSTGRES_USER")
    postgres_password: Secret | None = _setting("POSTGRES_PASSWORD", Secret)
    postgres_host: str | None = _setting("POSTGRES_HOST")
    postgres_port: int | None = _setting("POSTGRES_PORT", int)

    redis_url_secret: Secret | None = _setting("REDIS_URL", Secret)

    webhook_secret: Secret | None = _setting("MOMO_WEBHOOK_SECRET", Secret)
    api_token: Secret | None = _setting("ORDERPAY_API_TOKEN", Secret)
    # 1: the listener starts with placeholder or short secrets (a test or a demo, on purpose).
    insecure_secrets: bool = _setting("ORDERPAY_INSECURE_SECRETS", bool, default=False)

    provider: ProviderName = _setting("ORDERPAY_PROVIDER", PROVIDERS, default="simulator")
    # The payer's network to a provider (domain/routing.py): `Safaricom=mpesa,MTN=mtn`,
    # `KE:Airtel=airtel` (one region's network), `RW:*=pawapay` (a whole region). Unset:
    # ORDERPAY_PROVIDER for every payer.
    provider_routes: str | None = _setting("ORDERPAY_PROVIDER_ROUTES")
    default_region: str = _setting("ORDERPAY_DEFAULT_REGION", default="GH")
    # How long one process may talk to the provider for a payment before another run of the
    # same key may take over (seconds). Longer than the provider client's whole timeout.
    charge_lease_seconds: float = _setting(
        "ORDERPAY_CHARGE_LEASE_SECONDS", float, default=90.0, ge=0
    )
    simulator_callback_url: str | None = _setting("ORDERPAY_SIMULATOR_CALLBACK_URL")

    mtn_base_url: str | None = _setting("MTN_MOMO_BASE_URL")
    mtn_subscription_key: Secret | None = _setting("MTN_MOMO_SUBSCRIPTION_KEY", Secret)
    mtn_api_user: str | None = _setting("MTN_MOMO_API_USER")
    mtn_api_key: Secret | None = _setting("MTN_MOMO_API_KEY", Secret)
    mtn_target_environment: str | None = _setting("MTN_MOMO_TARGET_ENVIRONMENT")
    mtn_callback_url: str | None = _setting("MTN_MOMO_CALLBACK_URL")
    # The Disbursement product (refunds) has its own subscription key and API user.
    mtn_disbursement_subscription_key: Secret | None = _setting(
        "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY", Secret
    )
    mtn_disbursement_api_user: str | None = _setting("MTN_MOMO_DISBURSEMENT_API_USER")
    mtn_disbursement_api_key: Secret | None = _setting("MTN_MOMO_DISBURSEMENT_API_KEY", Secret)

    # M-Pesa Daraja (providers/mpesa.py): STK Push to a PayBill or a Till.
    mpesa_base_url: str | None = _setting("MPESA_BASE_URL")
    mpesa_consumer_key: Secret | None = _setting("MPESA_CONSUMER_KEY", Secret)
    mpesa_consumer_secret: Secret | None = _setting("MPESA_CONSUMER_SECRET", Secret)
    mpesa_shortcode: str | None = _setting("MPESA_SHORTCODE")
    mpesa_passkey: Secret | None = _setting("MPESA_PASSKEY", Secret)
    # Set for a Till (CustomerBuyGoodsOnline, PartyB the till); unset: a PayBill.
    mpesa_till_number: str | None = _setting("MPESA_TILL_NUMBER")
    # Where Daraja posts results: the public HTTPS URL of the listener's M-Pesa route, which
    # holds MPESA_CALLBACK_TOKEN (an unguessable path segment) and none of the words Daraja
    # refuses in a callback URL ("mpesa", "safaricom", ...: use /api/webhooks/daraja/TOKEN/).
    # A secret: it holds MPESA_CALLBACK_TOKEN (`config show` masks it).
    mpesa_callback_url: Secret | None = _setting("MPESA_CALLBACK_URL", Secret)
    mpesa_callback_token: Secret | None = _setting("MPESA_CALLBACK_TOKEN", Secret)
    # Addresses (IPs or CIDRs) whose callbacks are accepted; unset: any. X-Forwarded-For is
    # honoured only from MPESA_TRUSTED_PROXIES.
    mpesa_allowed_ips: str | None = _setting("MPESA_ALLOWED_IPS")
    mpesa_trusted_proxies: str | None = _setting("MPESA_TRUSTED_PROXIES")
    # Refunds: reversal (full, by receipt) and B2C (partial) act as an initiator whose password
    # is encrypted with Safaricom's certificate (a PEM file).
    mpesa_initiator_name: str | None = _setting("MPESA_INITIATOR_NAME")
    mpesa_initiator_password: Secret | None = _setting("MPESA_INITIATOR_PASSWORD", Secret)
    mpesa_certificate: str | None = _setting("MPESA_CERTIFICATE")
    # The B2C shortcode that pays partial refunds out; unset: refunds are reversals (full).
    mpesa_b2c_shortcode: str | None = _setting("MPESA_B2C_SHORTCODE")

    merchant_name: str = _setting("ORDERPAY_MERCHANT_NAME", default="orderpay shop")
    notify_channel: ChannelName = _setting("ORDERPAY_NOTIFY_CHANNEL", CHANNELS, default="log")
    # Seconds between delivery tries; one retry per number (so 6 tries over about 9 minutes).
    notify_retry_intervals: str = _setting(
        "ORDERPAY_NOTIFY_RETRY_INTERVALS", default="10,30,60,120,300"
    )
    # Declared before the lease, which is checked against it.
    notify_timeout_seconds: float = _setting(
        "ORDERPAY_NOTIFY_TIMEOUT_SECONDS", float, default=10.0, gt=0, le=60
    )
    # How long one delivery attempt may take before another worker may take the row over;
    # longer than a channel's whole timeout (a send ends before it). Also how long the message
    # of a worker killed mid-send waits before it is sent again.
    notify_lease_seconds: float = _setting(
        "ORDERPAY_NOTIFY_LEASE_SECONDS", float, default=20.0, gt=0
    )
    # A row the relay handed to RQ this long ago that is still pending and due is asked about:
    # if its job is in no queue, no scheduled registry and with no live worker, it was lost
    # (Redis flushed or restarted, a worker died holding it) and is handed out again.
    relay_lost_after_seconds: float = _setting(
        "ORDERPAY_RELAY_LOST_AFTER_SECONDS", float, default=10.0, gt=0
    )
    # The relay wakes on Postgres NOTIFY; it also polls this often (SQLite, and as a fallback).
    relay_poll_seconds: float = _setting("ORDERPAY_RELAY_POLL_SECONDS", float, default=2.0, gt=0)
    # The catch-up: the waits between questions to a provider about an open payment or refund
    # (then daily), and how long until an operator is asked to decide (a review item).
    catchup_schedule: str = _setting("ORDERPAY_CATCHUP_SCHEDULE", default="1m,5m,15m,1h,6h,24h")
    catchup_deadline: str = _setting("ORDERPAY_CATCHUP_DEADLINE", default="7d")
    # The listener's defences against connections held without being used (DESIGN.md
    # section 6): a request head and a body must each arrive within their deadline, an idle
    # keep-alive connection is closed, and a worker holds at most so many connections (unset:
    # what its open-file limit leaves after its own files, see http/shedding.py).
    listener_head_timeout_seconds: float = _setting(
        "ORDERPAY_LISTENER_HEAD_TIMEOUT_SECONDS", float, default=10.0, gt=0, le=3600
    )
    listener_body_timeout_seconds: float = _setting(
        "ORDERPAY_LISTENER_BODY_TIMEOUT_SECONDS", float, default=30.0, gt=0, le=3600
    )
    listener_keepalive_seconds: int = _setting(
        "ORDERPAY_LISTENER_KEEPALIVE_SECONDS", int, default=5, ge=1, le=3600
    )
    listener_max_connections: int | None = _setting(
        "ORDERPAY_LISTENER_MAX_CONNECTIONS", int, default=None, ge=1
    )
    # At most one log line per reason for shedding in this many seconds, with the count.
    listener_shed_log_seconds: float = _setting(
        "ORDERPAY_LISTENER_SHED_LOG_SECONDS", float, default=10.0, gt=0
    )
    sms_url: str = _setting("ORDERPAY_SMS_URL", default="https://api.africastalking.com")
    sms_username: str | None = _setting("ORDERPAY_SMS_USERNAME")
    sms_api_key: Secret | None = _setting("ORDERPAY_SMS_API_KEY", Secret)
    sms_sender_id: str | None = _setting("ORDERPAY_SMS_SENDER_ID")
    sms_dlr_token: Secret | None = _setting("ORDERPAY_SMS_DLR_TOKEN", Secret)
    notify_webhook_url: str | None = _setting("ORDERPAY_NOTIFY_WEBHOOK_URL")
    notify_webhook_secret: Secret | None = _setting("ORDERPAY_NOTIFY_WEBHOOK_SECRET", Secret)
    # Each worker process keeps up to so many sends in flight per channel, and starts at most
    # so many per second (unset: no limit of ours; a 429 from the gateway pauses the channel
    # whatever these say). Per process: N workers may have N times as many.
    sms_max_in_flight: int = _setting("ORDERPAY_SMS_MAX_IN_FLIGHT", int, default=100, ge=1, le=1000)
    sms_max_per_second: float | None = _setting("ORDERPAY_SMS_MAX_PER_SECOND", float, gt=0)
    notify_webhook_max_in_flight: int = _setting(
        "ORDERPAY_NOTIFY_WEBHOOK_MAX_IN_FLIGHT", int, default=16, ge=1, le=1000
    )
    notify_webhook_max_per_second: float | None = _setting(
        "ORDERPAY_NOTIFY_WEBHOOK_MAX_PER_SECOND", float, gt=0
    )

    # Who is acting, recorded with operator actions (cancel, refund, retry, resolve); unset:
    # the OS user (Settings.operator_name).
    operator: str | None = _setting("ORDERPAY_OPERATOR")

    # Read by the CLI's error handler straight from the environment (the settings may be the
    # very thing that is broken); declared here so that `config show` lists it.
    debug: bool = _setting("ORDERPAY_DEBUG", bool, default=False)

    # Names of the settings given as flags (load_settings' overrides), for `config show`.
    _flags: frozenset[str] = frozenset()

    def __init__(self, **overrides: Any) -> None:
        values = self._given(overrides)
        checked: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for name, setting in SETTINGS.items():
            given = setting.variable in values
            try:
                value = setting.read(values[setting.variable] if given else setting.default)
                rule = RULES.get(name)
                if rule is not None:
                    value = rule(value, checked)
            except BadValue as error:
                # pydantic's naming: a default that breaks a rule is named by its field.
                problems.append((setting.variable if given else name, str(error)))
                continue
            checked[name] = value
        if problems:
            # Name the variables and the rule, never the values: they may be secrets.
            raise ConfigurationError(
                "invalid configuration: "
                + "; ".join(f"{where}: {message}" for where, message in problems),
                variables=[where for where, _ in problems],
            )
        self.__dict__.update(checked)

    @classmethod
    def _given(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """The values given, by variable name: flags, then the environment, then `.env`."""
        names = {setting.variable for setting in SETTINGS.values()}
        values: dict[str, Any] = {}
        if os.path.isfile(ENV_FILE) and os.access(ENV_FILE, os.R_OK):
            from dotenv import dotenv_values

            for key, value in dotenv_values(ENV_FILE, encoding="utf-8").items():
                if key.upper() in names and value is not None:
                    values[key.upper()] = value
        for key, value in os.environ.items():
            if key.upper() in names:
                values[key.upper()] = value
        values.update((key, value) for key, value in overrides.items() if key in names)
        return values

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in SETTINGS)
        return f"{type(self).__name__}({shown})"

    @property
    def operator_name(self) -> str:
        """Who is acting: ORDERPAY_OPERATOR, else the OS user (as getpass finds it)."""
        if self.operator and self.operator.strip():
            return self.operator.strip()[:64]
        import getpass

        try:
            return getpass.getuser()[:64]
        except (KeyError, OSError):  # no user name for this uid (a bare container)
            return f"uid {os.getuid()}"

    @functools.cached_property
    def route_table(self) -> dict[tuple[str, str], str]:
        """ORDERPAY_PROVIDER_ROUTES, read once (domain/routing.py looks a payer up in it, for
        every charge); empty: ORDERPAY_PROVIDER for every payer."""
        return route_table(self.provider_routes or "", PROVIDERS)

    @property
    def retry_intervals(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.notify_retry_intervals.split(","))

    @property
    def database_url(self) -> str:
        """DATABASE_URL; else a Postgres URL from the seed's POSTGRES_* variables; else SQLite.

        `postgres://` and `postgresql://` come back as `postgresql+psycopg2://`, the driver
        that `pip install .` installs.
        """
        if self.database_url_secret and self.database_url_secret.get_secret_value():
            url = database_url(self.database_url_secret.get_secret_value())
            return url.render_as_string(hide_password=False)
        if self.postgres_host:
            from sqlalchemy.engine import URL

            return URL.create(
                "postgresql+psycopg2",
                username=self.postgres_user,
                password=self.postgres_password.get_secret_value()
                if self.postgres_password
                else None,
                host=self.postgres_host,
                port=self.postgres_port,
                database=self.postgres_db,
            ).render_as_string(hide_password=False)
        return DEFAULT_DATABASE_URL

    @property
    def redis_url(self) -> str | None:
        if self.redis_url_secret and self.redis_url_secret.get_secret_value():
            return self.redis_url_secret.get_secret_value()
        return None

    def webhook_secrets(self) -> list[bytes]:
        """Every configured callback secret (comma-separated during a rotation)."""
        if self.webhook_secret is None:
            return []
        raw = self.webhook_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

    def listener_secrets(self) -> list[tuple[str, str]]:
        """(name, value) of each secret the listener checks callers against: every callback
        secret, the API token, the delivery-report token, when set."""
        parts = [part.decode() for part in self.webhook_secrets()]
        named = [
            (f"secret {n} of {len(parts)} in MOMO_WEBHOOK_SECRET", part)
            for n, part in enumerate(parts, 1)
        ]
        if len(parts) == 1:
            named = [("MOMO_WEBHOOK_SECRET", parts[0])]
        tokens = {
            "ORDERPAY_API_TOKEN": self.api_token,
            "ORDERPAY_SMS_DLR_TOKEN": self.sms_dlr_token,
            "MPESA_CALLBACK_TOKEN": self.mpesa_callback_token,
        }
        for name, token in tokens.items():
            if token is not None and token.get_secret_value():  # empty: unset, its route is 404
                named.append((name, token.get_secret_value()))
        return named

    def public_view(self) -> dict[str, dict[str, str | None]]:
        """Every setting as an operator may see it, and where its value came from (`flag`,
        `environment`, `.env` or `default`): secrets masked, URL passwords hidden."""
        from sqlalchemy.engine import make_url

        sources = self.sources()
        view: dict[str, dict[str, str | None]] = {}
        for name, setting in SETTINGS.items():
            env_name = setting.variable
            value = getattr(self, name)
            if name == "database_url_secret":
                shown: str | None = make_url(self.database_url).render_as_string(hide_password=True)
                source = sources[env_name]
                if source == "default" and self.postgres_host:
                    source = f"POSTGRES_* ({sources['POSTGRES_HOST']})"
            elif name == "redis_url_secret":
                url = self.redis_url
                shown = make_url(url).render_as_string(hide_password=True) if url else None
                source = sources[env_name]
            elif isinstance(value, Secret):
                shown, source = ("********" if value.get_secret_value() else ""), sources[env_name]
            else:
                shown, source = (None if value is None else str(value)), sources[env_name]
            view[env_name] = {"value": shown, "source": source}
        return dict(sorted(view.items()))

    def sources(self) -> dict[str, str]:
        """Where each setting's value came from, by variable name; flags beat the
        environment, which beats `.env`, which beats the default."""
        from dotenv import dotenv_values

        environment = {name.upper() for name in os.environ}
        dotenv: set[str] = set()
        if os.path.isfile(ENV_FILE) and os.access(ENV_FILE, os.R_OK):
            dotenv = {name.upper() for name in dotenv_values(ENV_FILE)}
        found: dict[str, str] = {}
        for setting in SETTINGS.values():
            env_name = setting.variable
            if env_name in self._flags:
                found[env_name] = "flag"
            elif env_name in environment:
                found[env_name] = "environment"
            elif env_name in dotenv:
                found[env_name] = ".env"
            else:
                found[env_name] = "default"
        return found


# Each setting by attribute name, in the order they are checked (a rule may read earlier ones).
SETTINGS: dict[str, Setting] = {
    name: value for name, value in vars(Settings).items() if isinstance(value, Setting)
}


class ExplicitSettings(Settings):
    """Settings from the values given and the defaults only: no environment, no `.env`.

    For `orderpay demo`, which must behave the same whatever the machine is configured for.
    """

    @classmethod
    def _given(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        names = {setting.variable for setting in SETTINGS.values()}
        return {key: value for key, value in overrides.items() if key in names}

    def sources(self) -> dict[str, str]:
        names = (setting.variable for setting in SETTINGS.values())
        return {name: "flag" if name in self._flags else "default" for name in names}


def dotenv_value(name: str) -> str | None:
    """One variable of `./.env`, read without loading the settings."""
    if not (os.path.isfile(ENV_FILE) and os.access(ENV_FILE, os.R_OK)):
        return None
    from dotenv import dotenv_values

    for key, value in dotenv_values(ENV_FILE).items():
        if key.upper() == name:
            return value
    return None


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env` now (never at import time); `overrides` are flags,
    by variable name (`DATABASE_URL=...`), and beat both."""
    return _build(Settings, overrides)


def explicit_settings(**values: Any) -> Settings:
    """Settings from `values` (by variable name) and the defaults, ignoring the environment
    and `.env`."""
    return _build(ExplicitSettings, values)


def _build(kind: type[Settings], overrides: dict[str, Any]) -> Settings:
    settings = kind(**overrides)
    settings._flags = frozenset(overrides)
    return settings
