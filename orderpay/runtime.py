"""Wiring for entrypoints: settings -> database, providers, channels. Nothing runs at import."""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from orderpay.config_values import PROVIDER_NAMES
from orderpay.errors import UsageError

if TYPE_CHECKING:
    from orderpay.config import Settings
    from orderpay.config_values import Secret
    from orderpay.domain.schedule import CatchUpSchedule
    from orderpay.notify.channels import Channel
    from orderpay.notify.delivery import RetryPolicy
    from orderpay.notify.sending import Sender
    from orderpay.payments.charge import ProviderChoice
    from orderpay.providers.base import Provider
    from orderpay.store.db import Database
    from orderpay.store.notifications import NotifyTarget
    from orderpay.store.wakeups import Nudger


class Runtime:
    """What one process needs, built on first use and closed once.

    Providers and channels are built by name, on first use, and kept: a payment is always
    handled by its own provider and a notification sent through its own channel, whatever the
    settings say new ones use. One of each per process, so a token cache outlives a request.
    """

    def __init__(self, settings: Settings | None = None, **engine_options: Any) -> None:
        self._given_settings = settings
        self._engine_options = engine_options
        self._schema_checked = False
        self._lock = threading.Lock()
        self._providers: dict[str, Provider] = {}
        self._channels: dict[str, Channel] = {}

    def guard_sessions(self) -> None:
        """Bound this long-running process's Postgres sessions (lock, statement and idle
        transaction timeouts: store.db.SESSION_GUARDS). Before the database is first used."""
        assert "raw_database" not in self.__dict__, "the database is already connected"
        self._engine_options["session_guards"] = True

    @cached_property
    def settings(self) -> Settings:
        if self._given_settings is not None:
            return self._given_settings
        from orderpay.config import load_settings

        return load_settings()

    @cached_property
    def raw_database(self) -> Database:
        """The database without the schema check (for `db upgrade` and health checks)."""
        from orderpay.store.db import Database

        _freeze_start_up()
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

    @property
    def provider(self) -> Provider:
        """The provider of new charges (ORDERPAY_PROVIDER)."""
        return self.provider_for(self.settings.provider)

    def charge_choice(self, explicit: str | None = None) -> ProviderChoice:
        """How a new charge picks its provider: `explicit` (--provider), else the payer's
        network (ORDERPAY_PROVIDER_ROUTES), else ORDERPAY_PROVIDER."""
        from orderpay.payments.charge import ProviderChoice

        if explicit is not None and explicit not in PROVIDER_NAMES:
            raise UsageError(
                f"unknown provider {explicit!r} (known: {', '.join(PROVIDER_NAMES)})",
            )
        return ProviderChoice(
            self.provider_for, self.settings.route_table, self.settings.provider, explicit
        )

    def provider_for(self, name: str) -> Provider:
        """The provider called `name`; ConfigurationError when its settings are missing."""
        with self._lock:
            if name not in self._providers:
                from orderpay.providers import build_provider

                self._providers[name] = build_provider(name, self.settings)
            return self._providers[name]

    def notify_target(self) -> NotifyTarget:
        from orderpay.store.notifications import NotifyTarget

        return NotifyTarget(self.settings.notify_channel, self.settings.notify_webhook_url)

    @property
    def channel(self) -> Channel:
        """The channel of new notifications (ORDERPAY_NOTIFY_CHANNEL)."""
        return self.channel_for(self.settings.notify_channel)

    def channel_for(self, name: str) -> Channel:
        """The channel called `name`; ConfigurationError when its settings are missing."""
        with self._lock:
            if name not in self._channels:
                from orderpay.notify.channels import build_channel

                settings = self.settings
                self._channels[name] = build_channel(
                    name,
                    timeout=settings.notify_timeout_seconds,
                    sms_url=settings.sms_url,
                    sms_username=settings.sms_username,
                    sms_api_key=_secret(settings.sms_api_key),
                    sms_sender_id=settings.sms_sender_id,
                    webhook_url=settings.notify_webhook_url,
                    webhook_secret=_secret(settings.notify_webhook_secret),
                )
            return self._channels[name]

    @cached_property
    def sender(self) -> Sender:
        """This process's concurrent sends (notify.sending), paced per channel as configured."""
        from orderpay.notify.sending import ChannelLimits, Sender

        settings = self.settings
        limits = {
            "sms": ChannelLimits(settings.sms_max_in_flight, settings.sms_max_per_second),
            "webhook": ChannelLimits(
                settings.notify_webhook_max_in_flight, settings.notify_webhook_max_per_second
            ),
        }
        return Sender(lambda name: limits.get(name, ChannelLimits(1)))

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        from orderpay.notify.delivery import RetryPolicy

        return RetryPolicy(self.settings.retry_intervals, self.settings.notify_lease_seconds)

    @cached_property
    def catch_up_schedule(self) -> CatchUpSchedule:
        """ORDERPAY_CATCHUP_SCHEDULE and ORDERPAY_CATCHUP_DEADLINE, read; a configuration error
        naming them when they do not read."""
        from orderpay.domain.schedule import CatchUpSchedule
        from orderpay.errors import ConfigurationError, InvalidField

        settings = self.settings
        try:
            return CatchUpSchedule.parse(settings.catchup_schedule, settings.catchup_deadline)
        except (InvalidField, ValueError) as error:
            raise ConfigurationError(
                f"ORDERPAY_CATCHUP_SCHEDULE ({settings.catchup_schedule!r}) or "
                f"ORDERPAY_CATCHUP_DEADLINE ({settings.catchup_deadline!r}): "
                f"{getattr(error, 'message', error)}; write ages such as 1m,5m,1h and 7d"
            ) from None

    @cached_property
    def nudger(self) -> Nudger:
        """Wakes the notification relay after commits that wrote outbox rows."""
        from orderpay.store.wakeups import Nudger

        return Nudger(self.raw_database.engine)

    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's connections and clients without closing them
        (closing would close the parent's); what is needed is made again on first use."""
        if "raw_database" in self.__dict__:
            self.raw_database.engine.dispose(close=False)
        self.__dict__.pop("nudger", None)
        if "sender" in self.__dict__:
            self.sender.forget_inherited()
        self._lock = threading.Lock()
        self._providers, self._channels = {}, {}

    def close(self) -> None:
        if "nudger" in self.__dict__:
            self.nudger.close()
        if "sender" in self.__dict__:
            self.sender.close()
        for channel in self._channels.values():
            channel.close()
        for provider in self._providers.values():
            provider.close()
        self._channels, self._providers = {}, {}
        if "raw_database" in self.__dict__:
            self.raw_database.dispose()


_frozen = threading.Event()


def _freeze_start_up() -> None:
    """Once per process, when it first opens the database: move what start-up made (modules,
    classes, the schema, the command tree) out of the cycle collector's sight.

    Those objects live as long as the process. Left in view, every full collection walks all
    of them again, and the allocations of the command's own work (its last imports, compiling
    and running its queries) set off several: a large share of a short command's CPU time.
    gc.freeze() leaves reference counting alone and collection on for everything made after;
    once per process, so that a process making several runtimes (the tests) freezes only its
    start-up, not garbage made since.
    """
    if not _frozen.is_set():
        _frozen.set()
        import gc

        gc.freeze()


def _secret(value: Secret | None) -> str | None:
    return value.get_secret_value() if value is not None else None
