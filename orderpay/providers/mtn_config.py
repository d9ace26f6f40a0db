"""What an MtnProvider is built from, grouped by what changes together.

- MtnEndpoint: where MTN is, which of its environments, and where it calls us back. The three
  are checked as a set (mtn_endpoints.checked): the target environment decides which
  URLs are acceptable.
- MtnKeys: one product's credentials as configured (Collection's; Disbursement's for refunds).
  Any may be missing: the provider says which. The secrets stay SecretStr and out of repr().
- MtnTiming: how long MTN is given, per HTTP phase and per operation, and how early a cached
  token is renewed.

MtnProvider.from_settings builds them from the MTN_MOMO_* settings; tests build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

# Per-phase limits of one HTTP call, and the budget of one whole operation (token fetch, call,
# one retry after a 401). The budget stays well under the charge lease (90 s by default) so a
# charge never outlives its lease while talking to MTN.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=5.0)
DEFAULT_BUDGET_SECONDS = 45.0
# A cached token is dropped this long before MTN says it expires (at most half its lifetime).
TOKEN_REFRESH_MARGIN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class MtnEndpoint:
    """MTN's base URL and target environment (`sandbox`, `mtnghana`...), shared by both
    products, and the URL MTN calls back with a payment's outcome (None: no callbacks)."""

    base_url: str
    target_environment: str
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class MtnKeys:
    """One MTN product's subscription key, API user and API key, as configured."""

    subscription_key: SecretStr | None = field(default=None, repr=False)
    api_user: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MtnTiming:
    """How long MTN is given: `timeout` per phase of one HTTP call, `budget_seconds` for one
    whole operation, and how long before expiry a cached token is fetched again."""

    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    token_refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS
