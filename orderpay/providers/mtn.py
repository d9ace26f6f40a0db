"""MTN MoMo behind the Provider protocol: a thin httpx client (reference/specs.md s.3).

Charges go through MTN's Collection product, refunds through its Disbursement product
(providers/mtn_disbursement.py). Each product has its own credentials and token cache
(providers/mtn_api.py); they share the base URL, the target environment and one HTTP client.

Two calls per charge at most: `POST /collection/token/` (only when no cached token is fresh)
and `POST /collection/v1_0/requesttopay` with our payment id as `X-Reference-Id`. The status
query is `GET /collection/v1_0/requesttopay/{reference}`. How answers map:

- requesttopay: 202 -> Accepted; 409 `RESOURCE_ALREADY_EXIST` -> Accepted (already submitted);
  a 4xx with a definite refusal code -> Declined(code); timeouts, connection errors, 5xx,
  `SERVICE_UNAVAILABLE`, `INTERNAL_PROCESSING_ERROR` and anything unreadable -> raise
  ProviderUnavailable (the payment stays `initiated`; the same key retries with the same
  reference, which MTN deduplicates).
- status: SUCCESSFUL -> SUCCEEDED (with the amount MTN reports); FAILED -> FAILED with MTN's
  reason (both terminal, whatever the reason: a FAILED transfer is over on MTN's side, and
  the order must be chargeable again); PENDING, CREATED and unknown statuses -> PENDING;
  404 `RESOURCE_NOT_FOUND` -> UNKNOWN ("not visible yet"); transport errors, 5xx, other
  errors -> raise ProviderUnavailable. Ambiguity is never FAILED.

A 401 from an API call drops the cached token, fetches a new one and retries that call once.
Every operation (token fetch, call, retry) shares one time budget well under the charge lease.
Secrets (subscription keys, API keys, tokens) stay out of repr(), logs and exception messages.

Without the MTN_MOMO_DISBURSEMENT_* settings charges work as before; refunds then raise
ConfigurationError naming what is missing (`check_refunds_configured()` says so up front).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from orderpay.domain.phones import mask_phone, msisdn
from orderpay.errors import ConfigurationError
from orderpay.providers.base import (
    CollectionRequest,
    PaymentRef,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    StatusAnswer,
)
from orderpay.providers.capabilities import MTN
from orderpay.providers.mtn_api import Credentials, MtnApi, reference_of
from orderpay.providers.mtn_config import (
    DEFAULT_BUDGET_SECONDS,
    DEFAULT_TIMEOUT,
    MtnEndpoint,
    MtnKeys,
    MtnTiming,
)
from orderpay.providers.mtn_disbursement import (
    MtnDisbursement,
    disbursement_credentials,
    refunds_not_configured,
)
from orderpay.providers.mtn_endpoints import checked
from orderpay.tls import tls_context

if TYPE_CHECKING:
    from orderpay.config import Settings
    from orderpay.config_values import Secret

log = logging.getLogger(__name__)

TOKEN_PATH = "/collection/token/"
REQUEST_TO_PAY_PATH = "/collection/v1_0/requesttopay"

NO_KEYS = MtnKeys()  # no Disbursement settings: charges work, refunds say what is missing
DEFAULT_TIMING = MtnTiming()

_ENV = {
    "base_url": "MTN_MOMO_BASE_URL",
    "subscription_key": "MTN_MOMO_SUBSCRIPTION_KEY",
    "api_user": "MTN_MOMO_API_USER",
    "api_key": "MTN_MOMO_API_KEY",
    "target_environment": "MTN_MOMO_TARGET_ENVIRONMENT",
}


class MtnProvider:
    """The MTN MoMo provider. One instance per process; thread-safe; close() it.

    Build it with `MtnProvider.from_settings(settings)`, or from the groups of providers/
    mtn_config.py (tests). The base URL and target environment are checked as a pair (see
    `check_endpoint`): `sandbox` goes with the sandbox host or a loopback fake, a production
    target with any other https host. TLS certificates are always verified. The `disbursement`
    keys are optional: without them the provider charges but does not refund.
    """

    name = "mtn"
    # MTN's refund takes an amount: part of a payment may be given back, in several refunds
    # (the fake MTN enforces "never more than the payment"; unobserved on the real sandbox).
    capabilities = MTN
    refund_modes = MTN.refund_modes

    def __init__(
        self,
        endpoint: MtnEndpoint,
        collection: MtnKeys,
        *,
        disbursement: MtnKeys = NO_KEYS,
        timing: MtnTiming = DEFAULT_TIMING,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`transport` replaces httpx's (tests); `clock` times the token caches."""
        endpoint = checked(endpoint)
        self.base_url = endpoint.base_url
        self.target_environment = endpoint.target_environment
        self.callback_url = endpoint.callback_url
        collection_credentials = _collection_credentials(collection)
        refund_credentials, self._refunds_missing = disbursement_credentials(
            disbursement.subscription_key, disbursement.api_user, disbursement.api_key
        )
        self._client = httpx.Client(
            verify=tls_context(),  # certificates and host names are always checked
            timeout=timing.timeout,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "orderpay"},
        )

        def api(credentials: Credentials) -> MtnApi:
            return MtnApi(self._client, credentials, endpoint, timing, clock=clock)

        self._collection = api(collection_credentials)
        self._disbursement = (
            MtnDisbursement(api(refund_credentials)) if refund_credentials else None
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> MtnProvider:
        """Build the provider from MTN_MOMO_* settings; ConfigurationError names what is wrong.
        The MTN_MOMO_DISBURSEMENT_* settings are only needed to refund."""
        values: dict[str, str | None] = {
            "base_url": settings.mtn_base_url,
            "subscription_key": settings.mtn_subscription_key.get_secret_value()
            if settings.mtn_subscription_key
            else None,
            "api_user": settings.mtn_api_user,
            "api_key": settings.mtn_api_key.get_secret_value() if settings.mtn_api_key else None,
            "target_environment": settings.mtn_target_environment,
        }
        missing = [_ENV[name] for name, value in values.items() if not (value and value.strip())]
        if missing:
            raise ConfigurationError(
                f"the mtn provider needs {', '.join(missing)} (environment or .env)",
                missing=missing,
            )
        budget = DEFAULT_BUDGET_SECONDS
        if settings.charge_lease_seconds > 0:
            budget = min(budget, settings.charge_lease_seconds / 2)
        return cls(
            MtnEndpoint(
                base_url=str(values["base_url"]),
                target_environment=str(values["target_environment"]),
                callback_url=settings.mtn_callback_url,
            ),
            MtnKeys(
                subscription_key=_secret(settings.mtn_subscription_key),
                api_user=settings.mtn_api_user,
                api_key=_secret(settings.mtn_api_key),
            ),
            disbursement=MtnKeys(
                subscription_key=_secret(settings.mtn_disbursement_subscription_key),
                api_user=settings.mtn_disbursement_api_user,
                api_key=_secret(settings.mtn_disbursement_api_key),
            ),
            timing=MtnTiming(timeout=timeout, budget_seconds=budget),
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"MtnProvider(base_url={self.base_url!r}, "
            f"target_environment={self.target_environment!r}, "
            f"callback={'on' if self.callback_url else 'off'}, "
            f"refunds={'on' if self._disbursement else 'off'})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MtnProvider:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Refund configuration.

    @property
    def refunds_missing(self) -> list[str]:
        """The MTN_MOMO_DISBURSEMENT_* variables refunds still need (empty: configured)."""
        return list(self._refunds_missing)

    def check_refunds_configured(self) -> None:
        """Raise ConfigurationError (exit 2) naming the missing MTN_MOMO_DISBURSEMENT_*
        variables. The refund flow calls it before it stores anything."""
        if self._disbursement is None:
            raise refunds_not_configured(self._refunds_missing)

    # The Provider protocol.

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer:
        reference = str(request.reference)
        body = {
            "amount": request.amount.as_string(),
            "currency": request.amount.currency,
            "externalId": str(request.order_id),
            "payer": {"partyIdType": "MSISDN", "partyId": msisdn(request.payer_phone)},
            "payerMessage": f"Payment for order {str(request.order_id)[:8]}",
            "payeeNote": f"order {request.order_id}",
        }
        headers = {"X-Callback-Url": self.callback_url} if self.callback_url else {}
        answer, status = self._collection.submit(
            REQUEST_TO_PAY_PATH, reference, body, what="payment request", headers=headers
        )
        log.info(
            "MTN requesttopay %s (payer %s): HTTP %s, %s",
            reference,
            mask_phone(request.payer_phone),
            status,
            answer,
        )
        return answer

    def payment_status(self, payment: PaymentRef) -> StatusAnswer:
        reference = reference_of(payment.provider_reference, payment.reference)
        return self._collection.status_of(
            f"{REQUEST_TO_PAY_PATH}/{reference}", reference, what="status query"
        )

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        return self._refunds().request_refund(request)

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        return self._refunds().refund_status(refund)

    def _refunds(self) -> MtnDisbursement:
        if self._disbursement is None:
            raise refunds_not_configured(self._refunds_missing)
        return self._disbursement


def _collection_credentials(keys: MtnKeys) -> Credentials:
    """Collection's credentials: charging needs all three."""
    api_user = (keys.api_user or "").strip()
    if not api_user:
        raise ConfigurationError("MTN_MOMO_API_USER is empty")
    collection = Credentials(
        product="collection",
        subscription_key=keys.subscription_key or SecretStr(""),
        api_user=api_user,
        api_key=keys.api_key or SecretStr(""),
        variables="MTN_MOMO_API_USER, MTN_MOMO_API_KEY and MTN_MOMO_SUBSCRIPTION_KEY",
    )
    if not (
        collection.api_key.get_secret_value() and collection.subscription_key.get_secret_value()
    ):
        raise ConfigurationError("MTN_MOMO_API_KEY and MTN_MOMO_SUBSCRIPTION_KEY must be set")
    return collection


def _secret(value: Secret | None) -> SecretStr | None:
    # The settings' secrets, as the MTN clients keep them (pydantic's type: they load it anyway).
    return SecretStr(value.get_secret_value()) if value is not None else None
