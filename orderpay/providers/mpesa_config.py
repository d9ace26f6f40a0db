"""What an MpesaProvider is built from, and the rules Daraja keeps for its URLs (kept apart
from the client, providers/mpesa.py, so that doctor and the tests read them on their own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from orderpay.domain.money import Money, exponent
from orderpay.errors import ConfigurationError
from orderpay.providers.mtn_endpoints import is_loopback

if TYPE_CHECKING:
    from orderpay.config import Settings

# Words Daraja refuses in a callback URL (reference/providers.md; the last two: SDK reports).
FORBIDDEN_URL_WORDS = ("mpesa", "safaricom", "sql", "query", "exec", "cmd")


@dataclass(frozen=True, slots=True)
class MpesaAccount:
    """The merchant's STK Push account: shortcode and passkey, a Till or a PayBill."""

    shortcode: str
    passkey: str = field(repr=False)
    till_number: str | None = None


@dataclass(frozen=True, slots=True)
class MpesaInitiator:
    """Who refunds: the initiator's name and SecurityCredential, and the B2C shortcode that
    pays partial refunds out (None: refunds are reversals of whole payments only)."""

    name: str
    security_credential: str = field(repr=False)
    b2c_shortcode: str | None = None


def whole_shillings(amount: Money) -> int:
    """Daraja's amount codec: whole shillings as an integer. A fraction is refused before
    anything is stored (Capabilities.check_amount), so here it is a bug."""
    whole, fraction = divmod(amount.minor_units, 10 ** exponent(amount.currency))
    if fraction:
        raise ConfigurationError(f"M-Pesa takes whole amounts only, not {amount}")
    return int(whole)


def with_reference(url: str, name: str, value: str) -> str:
    """The callback URL naming our reference, so a result whose answer was lost still finds
    its payment or refund."""
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def check_base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "MPESA_BASE_URL must be an absolute URL, e.g. https://api.safaricom.co.ke"
        )
    if parts.scheme != "https" and not is_loopback(parts.hostname):
        raise ConfigurationError("MPESA_BASE_URL must be https (plain http only to a local fake)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError("MPESA_BASE_URL must have no credentials, query or fragment")
    return url.strip().rstrip("/")


def callback_url_problems(url: str, *, local_fake: bool = False) -> list[str]:
    """What Daraja would refuse in a callback URL (doctor says all of them). `local_fake`: the
    base URL is a fake on this machine, which may call back over plain http to loopback."""
    parts = urlsplit(url.strip())
    problems = []
    local = local_fake and bool(parts.hostname) and is_loopback(parts.hostname or "")
    if parts.scheme != "https" and not local:
        problems.append("it must be https (Daraja calls back over TLS only)")
    if not parts.hostname:
        problems.append("it must be an absolute URL")
    lowered = url.lower()
    words = [word for word in FORBIDDEN_URL_WORDS if word in lowered]
    if words:
        problems.append(
            f"it holds {', '.join(repr(w) for w in words)}, which Daraja refuses in a callback "
            "URL: use the listener's /api/webhooks/daraja/TOKEN/ route"
        )
    return problems


def check_callback_url(url: str, *, local_fake: bool = False) -> str:
    problems = callback_url_problems(url, local_fake=local_fake)
    if problems:
        raise ConfigurationError("MPESA_CALLBACK_URL: " + "; ".join(problems))
    return url.strip()


def initiator_from(settings: Settings) -> MpesaInitiator | None:
    name = (settings.mpesa_initiator_name or "").strip()
    password = plain(settings.mpesa_initiator_password)
    certificate = (settings.mpesa_certificate or "").strip()
    if not (name or password or certificate):
        return None
    if not (name and password and certificate):
        missing = [
            variable
            for variable, value in (
                ("MPESA_INITIATOR_NAME", name),
                ("MPESA_INITIATOR_PASSWORD", password),
                ("MPESA_CERTIFICATE", certificate),
            )
            if not value
        ]
        raise ConfigurationError(
            f"mpesa refunds need {', '.join(missing)} as well", missing=missing
        )
    from orderpay.providers.mpesa_credentials import load_certificate, security_credential

    credential = security_credential(load_certificate(certificate), password)
    b2c = (settings.mpesa_b2c_shortcode or "").strip() or None
    return MpesaInitiator(name, credential, b2c)


def plain(secret: Any) -> str | None:
    """A Secret setting's value (None: unset)."""
    return secret.get_secret_value() if secret is not None else None
