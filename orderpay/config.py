"""Configuration from the environment and a `.env` file (DESIGN.md section 2).

Only entrypoints (cli, server, jobs) read it, and they pass plain values down. Secrets are
`SecretStr`, so they never show in `repr()`, logs or `orderpay config show`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///orderpay.db"

ProviderName = Literal["simulator", "mtn"]
ChannelName = Literal["log", "sms", "webhook"]


def _env(name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
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
    # How long one delivery attempt may take before another worker may take the row over;
    # longer than a channel's whole timeout.
    notify_lease_seconds: float = Field(
        default=60.0, gt=0, validation_alias=AliasChoices("ORDERPAY_NOTIFY_LEASE_SECONDS")
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, validation_alias=AliasChoices("ORDERPAY_NOTIFY_TIMEOUT_SECONDS")
    )
    # The relay wakes on Postgres NOTIFY; it also polls this often (SQLite, and as a fallback).
    relay_poll_seconds: float = Field(
        default=2.0, gt=0, validation_alias=AliasChoices("ORDERPAY_RELAY_POLL_SECONDS")
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

    @field_validator("notify_retry_intervals")
    @classmethod
    def _intervals(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts or not all(part.isdigit() and 0 < int(part) <= 86_400 for part in parts):
            raise ValueError("a comma-separated list of whole seconds (1-86400), e.g. 10,30,60")
        return ",".join(parts)

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        if self.notify_lease_seconds < self.notify_timeout_seconds:
            # A shorter lease lets another worker take over a send still in flight.
            raise ValueError(
                "ORDERPAY_NOTIFY_LEASE_SECONDS must be at least ORDERPAY_NOTIFY_TIMEOUT_SECONDS"
            )
        return self

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
    def _database_url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value.get_secret_value())
            except ArgumentError:
                raise ValueError(
                    "not a database URL, e.g. postgresql+psycopg2://user@host/db"
                ) from None
        return value

    @property
    def database_url(self) -> str:
        """DATABASE_URL; else a Postgres URL from the seed's POSTGRES_* variables; else SQLite."""
        if self.database_url_secret and self.database_url_secret.get_secret_value():
            return self.database_url_secret.get_secret_value()
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

    def public_view(self) -> dict[str, str | None]:
        """Every setting as an operator may see it: secrets masked, URL passwords hidden."""
        from sqlalchemy.engine import make_url

        view: dict[str, str | None] = {}
        for name, field in type(self).model_fields.items():
            if name in {"database_url_secret", "redis_url_secret"}:
                continue
            alias = field.validation_alias
            env_name = alias.choices[0] if isinstance(alias, AliasChoices) else name
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                view[str(env_name)] = "********" if value.get_secret_value() else ""
            else:
                view[str(env_name)] = None if value is None else str(value)
        view["DATABASE_URL"] = make_url(self.database_url).render_as_string(hide_password=True)
        view["REDIS_URL"] = (
            make_url(self.redis_url).render_as_string(hide_password=True)
            if self.redis_url
            else None
        )
        return dict(sorted(view.items()))


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env` now (never at import time)."""
    from pydantic import ValidationError

    from orderpay.errors import ConfigurationError

    try:
        return Settings(**overrides)
    except ValidationError as error:
        # Name the variables and the rule, never the values: they may be secrets.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
