"""Payment providers: the Provider protocol (base) and capability records (capabilities), the
simulator, MTN MoMo, M-Pesa Daraja."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderpay.config_values import PROVIDER_NAMES

if TYPE_CHECKING:
    from orderpay.config import Settings
    from orderpay.providers.base import Provider


def build_provider(name: str, settings: Settings) -> Provider:
    """The provider called `name`, from the settings; ConfigurationError when it cannot be
    built (MTN without its MTN_MOMO_* settings, or a name orderpay does not know)."""
    from orderpay.errors import ConfigurationError

    if name == "mtn":
        from orderpay.providers.mtn import MtnProvider

        return MtnProvider.from_settings(settings)
    if name == "mpesa":
        from orderpay.providers.mpesa import MpesaProvider

        return MpesaProvider.from_settings(settings)
    if name == "simulator":
        from orderpay.providers.simulator import SimulatorProvider

        secrets = settings.webhook_secrets()
        return SimulatorProvider(
            callback_url=settings.simulator_callback_url,
            secret=secrets[0] if secrets else None,
        )
    raise ConfigurationError(
        f"unknown payment provider {name!r} (known: {', '.join(PROVIDER_NAMES)})"
    )
