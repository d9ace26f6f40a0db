"""Configuration from the environment and a `.env` file (DESIGN.md section 2).

Only entrypoints (cli, server, jobs) read it, and they pass plain values down. Secrets are
`SecretStr`, so they never show in `repr()`, logs or `orderpay config show`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orderpay.database_urls import database_url
from orderpay.errors import ConfigurationError, OrderpayError

DEFAULT_DATABASE_URL = "sqlite:///orderpay.db"
ENV_FILE = ".env"

ProviderName = Literal["simulator", "mtn"]
ChannelName = Literal["log", "sms", "webhook"]


def _env(name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=False,
    )

    # URLs may carry passwords, so they are secrets too; read them through the properties.
    database_url_secret: SecretStr | None = _env("DATABASE_URL")
    postgres_db: str | None = _env("POSTGRES_DB")
    postgres_user: str | None = _env("POSTGRES_USER")
    postgres_password: SecretStr | None = _env("POSTGRES_PASSWORD")
    postgres_host: str | None = _env("POSTGRES_HOST")
    postgres_port: int | None = _env("POSTGRES_PORT")

    redis_url_secret: SecretStr | None = _env("REDIS_URL")

    webhook_secret: SecretStr | None = _env("MOMO_WEBHOOK_SECRET")
    api_token: SecretStr | None = _env("ORDERPAY_API_TOKEN")
    # 1: the listener starts with placeholder or short secrets (a test or a demo, on purpose).
    insecure_secrets: bool = Field(
        default=False, validation_alias=AliasChoices("ORDERPAY_INSECURE_SECRETS")
    )

    provider: ProviderName = Field(
        default="simulator", validation_alias=AliasChoices("ORDERPAY_PROVIDER")
    )
    default_region: str = Field(
        default="GH", validation_alias=AliasChoices("ORDERPAY_DEFAULT_REGION")
    )
    # How long one process may talk to the provider for a payment before another run of the
    # same key may take over (seconds). Longer than the provider client's whole timeout.
    charge_lease_seconds: float = Field(
        default=90.0, ge=0, validation_alias=AliasChoices("ORDERPAY_CHARGE_LEASE_SECONDS")
    )
    simulator_callback_url: str | None = _env("ORDERPAY_SIMULATOR_CALLBACK_URL")

    mtn_base_url: str | None = _env("MTN_MOMO_BASE_URL")
    mtn_subscription_key: SecretStr | None = _env("MTN_MOMO_SUBSCRIPTION_KEY")
    mtn_api_user: str | None = _env("MTN_MOMO_API_USER")
    mtn_api_key: SecretStr | None = _env("MTN_MOMO_API_KEY")
    mtn_target_environment: str | None = _env("MTN_MOMO_TARGET_ENVIRONMENT")
    mtn_callback_url: str | None = _env("MTN_MOMO_CALLBACK_URL")
    # The Disbursement product (refunds) has its own subscription key and API user.
    mtn_disbursement_subscription_key: SecretStr | None = _env(
        "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY"
    )
    mtn_disbursement_api_user: str | None = _env("MTN_MOMO_DISBURSEMENT_API_USER")
    mtn_disbursement_api_key: SecretStr | None = _env("MTN_MOMO_DISBURSEMENT_API_KEY")

    merchant_name: str = Field(
        default="orderpay shop", validation_alias=AliasChoices("ORDERPAY_MERCHANT_NAME")
    )
    notify_channel: ChannelName = Field(
        default="log", validation_alias=AliasChoices("ORDERPAY_NOTIFY_CHANNEL")
    )
    # Seconds between delivery tries; one retry per number (so 6 tries over about 9 minutes).
    notify_retry_intervals: str = Field(
        default="10,30,60,120,300", validation_alias=AliasChoices("ORDERPAY_NOTIFY_RETRY_INTERVALS")
    )
    # Declared before the lease, which is checked against it.
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, validation_alias=AliasChoices("ORDERPAY_NOTIFY_TIMEOUT_SECONDS")
    )
    # How long one delivery attempt may take before another worker may take the row over;
    # longer than a channel's whole timeout (a send ends before it). Also how long the message
    # of a worker killed mid-send waits before it is sent again.
    notify_lease_seconds: float = Field(
        default=20.0, gt=0, validation_alias=AliasChoices("ORDERPAY_NOTIFY_LEASE_SECONDS")
    )
    # A row the relay handed to RQ this long ago that is still pending and due is asked about:
    # if its job is in no queue, no scheduled registry and with no live worker, it was lost
    # (Redis flushed or restarted, a worker died holding it) and is handed out again.
    relay_lost_after_seconds: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("ORDERPAY_RELAY_LOST_AFTER_SECONDS")
    )
    # The relay wakes on Postgres NOTIFY; it also polls this often (SQLite, and as a fallback).
    relay_poll_seconds: float = Field(
        default=2.0, gt=0, validation_alias=AliasChoices("ORDERPAY_RELAY_POLL_SECONDS")
    )
    # The catch-up: the waits between questions to a provider about an open payment or refund
    # (then daily), and how long until an operator is asked to decide (a review item).
    catchup_schedule: str = Field(
        default="1m,5m,15m,1h,6h,24h", validation_alias=AliasChoices("ORDERPAY_CATCHUP_SCHEDULE")
    )
    catchup_deadline: str = Field(
        default="7d", validation_alias=AliasChoices("ORDERPAY_CATCHUP_DEADLINE")
    )
    # The listener's defences against connections held without being used (DESIGN.md
    # section 6): a request head and a body must each arrive within their deadline, an idle
    # keep-alive connection is closed, and a worker holds at most so many connections (unset:
    # what its open-file limit leaves after its own files, see http/shedding.py).
    listener_head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("ORDERPAY_LISTENER_HEAD_TIMEOUT_SECONDS"),
    )
    listener_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("ORDERPAY_LISTENER_BODY_TIMEOUT_SECONDS"),
    )
    listener_keepalive_seconds: int = Field(
        default=5,
        ge=1,
        le=3600,
        validation_alias=AliasChoices("ORDERPAY_LISTENER_KEEPALIVE_SECONDS"),
    )
    listener_max_connections: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("ORDERPAY_LISTENER_MAX_CONNECTIONS")
    )
    # At most one log line per reason for shedding in this many seconds, with the count.
    listener_shed_log_seconds: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("ORDERPAY_LISTENER_SHED_LOG_SECONDS")
    )
    sms_url: str = Field(
        default="https://api.africastalking.com", validation_alias=AliasChoices("ORDERPAY_SMS_URL")
    )
    sms_username: str | None = _env("ORDERPAY_SMS_USERNAME")
    sms_api_key: SecretStr | None = _env("ORDERPAY_SMS_API_KEY")
    sms_sender_id: str | None = _env("ORDERPAY_SMS_SENDER_ID")
    sms_dlr_token: SecretStr | None = _env("ORDERPAY_SMS_DLR_TOKEN")
    notify_webhook_url: str | None = _env("ORDERPAY_NOTIFY_WEBHOOK_URL")
    notify_webhook_secret: SecretStr | None = _env("ORDERPAY_NOTIFY_WEBHOOK_SECRET")
    # Each worker process keeps up to so many sends in flight per channel, and starts at most
    # so many per second (unset: no limit of ours; a 429 from the gateway pauses the channel
    # whatever these say). Per process: N workers may have N times as many.
    sms_max_in_flight: int = Field(
        default=100, ge=1, le=1000, validation_alias=AliasChoices("ORDERPAY_SMS_MAX_IN_FLIGHT")
    )
    sms_max_per_second: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("ORDERPAY_SMS_MAX_PER_SECOND")
    )
    notify_webhook_max_in_flight: int = Field(
        default=16,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("ORDERPAY_NOTIFY_WEBHOOK_MAX_IN_FLIGHT"),
    )
    notify_webhook_max_per_second: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("ORDERPAY_NOTIFY_WEBHOOK_MAX_PER_SECOND")
    )

    # Who is acting, recorded with operator actions (cancel, refund, retry, resolve); unset:
    # the OS user (Settings.operator_name).
    operator: str | None = _env("ORDERPAY_OPERATOR")

    # Read by the CLI's error handler straight from the environment (the settings may be the
    # very thing that is broken); declared here so that `config show` lists it.
    debug: bool = Field(default=False, validation_alias=AliasChoices("ORDERPAY_DEBUG"))

    # Names of the settings given as flags (load_settings' overrides), for `config show`.
    _flags: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("notify_retry_intervals")
    @classmethod
    def _intervals(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts or not all(part.isdigit() and 0 < int(part) <= 86_400 for part in parts):
            raise ValueError("a comma-separated list of whole seconds (1-86400), e.g. 10,30,60")
        return ",".join(parts)

    @field_validator("notify_lease_seconds")
    @classmethod
    def _lease_outlasts_a_send(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("notify_timeout_seconds")
        if timeout is not None and value < timeout:
            # A shorter lease lets another worker take over a send still in flight.
            raise ValueError("must be at least ORDERPAY_NOTIFY_TIMEOUT_SECONDS")
        return value

    @property
    def operator_name(self) -> str:
        """Who is acting: ORDERPAY_OPERATOR, else the OS user (as getpass finds it)."""
        if self.operator and self.operator.strip():
            return self.operator.strip()[:64]
        import getpass

        try:
            return getpass.getuser()[:64]
        except (KeyError, OSError):  # no user name for this uid (a bare container)
            import os

            return f"uid {os.getuid()}"

    @property
    def retry_intervals(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.notify_retry_intervals.split(","))

    @field_validator("default_region")
    @classmethod
    def _region_known(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("an ISO 3166 alpha-2 region that has phone numbers, e.g. GH, UG")
        return region

    @field_validator("database_url_secret")
    @classmethod
    def _database_url_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            # Refused here, so every command (doctor included) says so before connecting.
            try:
                database_url(value.get_secret_value())
            except OrderpayError as error:
                raise ValueError(error.message) from None
        return value

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
        for name, field in type(self).model_fields.items():
            env_name = _env_name(name, field.validation_alias)
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
            elif isinstance(value, SecretStr):
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
        for name, field in type(self).model_fields.items():
            env_name = _env_name(name, field.validation_alias)
            if env_name in self._flags:
                found[env_name] = "flag"
            elif env_name in environment:
                found[env_name] = "environment"
            elif env_name in dotenv:
                found[env_name] = ".env"
            else:
                found[env_name] = "default"
        return found


class ExplicitSettings(Settings):
    """Settings from the values given and the defaults only: no environment, no `.env`.

    For `orderpay demo`, which must behave the same whatever the machine is configured for.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    def sources(self) -> dict[str, str]:
        names = (_env_name(n, f.validation_alias) for n, f in type(self).model_fields.items())
        return {name: "flag" if name in self._flags else "default" for name in names}


def dotenv_value(name: str) -> str | None:
    """One variable of `./.env`, read without loading the settings."""
    from dotenv import dotenv_values

    if not (os.path.isfile(ENV_FILE) and os.access(ENV_FILE, os.R_OK)):
        return None
    for key, value in dotenv_values(ENV_FILE).items():
        if key.upper() == name:
            return value
    return None


def _env_name(name: str, alias: Any) -> str:
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else name.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env` now (never at import time); `overrides` are flags,
    by variable name (`DATABASE_URL=...`), and beat both."""
    return _build(Settings, overrides)


def explicit_settings(**values: Any) -> Settings:
    """Settings from `values` (by variable name) and the defaults, ignoring the environment
    and `.env`."""
    return _build(ExplicitSettings, values)


def _build(kind: type[Settings], overrides: dict[str, Any]) -> Settings:
    from pydantic import ValidationError

    try:
        settings = kind(**overrides)
    except ValidationError as error:
        # Name the variables and the rule, never the values: they may be secrets.
        problems, variables = [], []
        for item in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
            if where:
                variables.append(where)
        raise ConfigurationError(
            f"invalid configuration: {'; '.join(problems)}", variables=variables
        ) from None
    settings._flags = frozenset(overrides)
    return settings
