"""Wiring for entrypoints: settings -> database, provider. Nothing here runs at import time."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import SecretStr

    from orderpay.channels import Channel
    from orderpay.config import Settings
    from orderpay.db import Database
    from orderpay.delivery import RetryPolicy
    from orderpay.outbox import NotifyTarget
    from orderpay.providers import Provider
    from orderpay.wakeups import Nudger


class Runtime:
    """What one process needs, built on first use and closed once."""

    def __init__(self, settings: Settings | None = None, **engine_options: Any) -> None:
        self._given_settings = settings
        self._engine_options = engine_options
        self._schema_checked = False

    @cached_property
    def settings(self) -> Settings:
        if self._given_settings is not None:
            return self._given_settings
        from orderpay.config import load_settings

        return load_settings()

    @cached_property
    def raw_database(self) -> Database:
        """The database without the schema check (for `db upgrade` and health checks)."""
        from orderpay.db import Database

        return Database(self.settings.database_url, **self._engine_options)

    def check_schema(self) -> None:
        """Raise (exit 7) unless the database is at this code's schema; asked once."""
        if not self._schema_checked:
            self.raw_database.check_schema()
            self._schema_checked = True

    @property
    def database(self) -> Database:
        """The database, once it is known to be at this code's schema."""
        self.check_schema()
        return self.raw_database

    @cached_property
    def provider(self) -> Provider:
        """One provider per process, so a provider's token cache outlives a request."""
        settings = self.settings
        if settings.provider == "mtn":
            from orderpay.mtn import MtnProvider

            return MtnProvider.from_settings(settings)
        from orderpay.providers import SimulatorProvider

        secrets = settings.webhook_secrets()
        return SimulatorProvider(
            callback_url=settings.simulator_callback_url,
            secret=secrets[0] if secrets else None,
        )

    def notify_target(self) -> NotifyTarget:
        from orderpay.outbox import NotifyTarget

        return NotifyTarget(self.settings.notify_channel, self.settings.notify_webhook_url)

    @cached_property
    def channel(self) -> Channel:
        from orderpay.channels import build_channel

        settings = self.settings
        return build_channel(
            settings.notify_channel,
            timeout=settings.notify_timeout_seconds,
            sms_url=settings.sms_url,
            sms_username=settings.sms_username,
            sms_api_key=_secret(settings.sms_api_key),
            sms_sender_id=settings.sms_sender_id,
            webhook_url=settings.notify_webhook_url,
            webhook_secret=_secret(settings.notify_webhook_secret),
        )

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        from orderpay.delivery import RetryPolicy

        return RetryPolicy(self.settings.retry_intervals, self.settings.notify_lease_seconds)

    @cached_property
    def nudger(self) -> Nudger:
        """Wakes the notification relay after commits that wrote outbox rows."""
        from orderpay.wakeups import Nudger

        return Nudger(self.raw_database.engine)

    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's connections and clients without closing them
        (closing would close the parent's); what is needed is made again on first use."""
        if "raw_database" in self.__dict__:
            self.raw_database.engine.dispose(close=False)
        for inherited in ("channel", "provider", "nudger"):
            self.__dict__.pop(inherited, None)

    def close(self) -> None:
        if "nudger" in self.__dict__:
            self.nudger.close()
        if "channel" in self.__dict__:
            self.channel.close()
        if "provider" in self.__dict__:
            self.provider.close()
        if "raw_database" in self.__dict__:
            self.raw_database.dispose()


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
