"""Payment providers: the interface the charge and refund flows talk to.

A provider is called outside any transaction. It answers `Accepted` (it took the request and
will report the outcome), `Declined` (a refusal), or raises `ProviderUnavailable` when the
answer is unknown (timeouts, 5xx): then the payment stays `initiated` and is asked again. A
duplicate-reference answer means "already submitted" and is `Accepted`. Its status call maps
the provider's words to domain.answers.RemoteState, which says what they prove.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orderpay.domain.answers import RemoteState
from orderpay.domain.money import Money
from orderpay.providers.capabilities import Capabilities, RefundMode

__all__ = [
    "Accepted",
    "CollectionRequest",
    "Declined",
    "PaymentRef",
    "Provider",
    "ProviderAnswer",
    "RefundRef",
    "RefundRequest",
    "RemoteState",
    "StatusAnswer",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CollectionRequest:
    reference: uuid.UUID  # our payment id; MTN's X-Reference-Id
    order_id: uuid.UUID
    amount: Money
    payer_phone: str  # E.164
    # Our short reference where the provider shows one to the payer (M-Pesa's
    # AccountReference); None: `reference` is ours.
    account_reference: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    provider_reference: str


@dataclass(frozen=True, slots=True)
class Declined:
    reason: str


ProviderAnswer = Accepted | Declined


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    state: RemoteState
    reason: str | None = None
    amount: Money | None = None
    # The provider's own id of the money movement (MTN: financialTransactionId), once settled.
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentRef:
    """What a status query needs to know about a payment."""

    reference: uuid.UUID
    provider_reference: str | None
    order_id: uuid.UUID
    amount: Money
    payer_phone: str
    created_at: datetime
    transaction_id: str | None = None  # the provider's money id, once known (M-Pesa's receipt)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Give back `amount` of a succeeded payment to its payer."""

    reference: uuid.UUID  # our refund id; MTN's X-Reference-Id of the refund
    payment: PaymentRef  # the payment refunded (MTN: referenceIdToRefund)
    amount: Money
    reason: str  # the operator's, for the payer's statement where the provider shows one
    account_reference: str | None = None  # as CollectionRequest's


@dataclass(frozen=True, slots=True)
class RefundRef:
    """What a refund's status query needs to know about it."""

    reference: uuid.UUID
    provider_reference: str | None
    payment: PaymentRef
    amount: Money
    created_at: datetime
    account_reference: str | None = None  # as RefundRequest's


class Provider(Protocol):
    name: str
    capabilities: Capabilities  # what it can do (providers/capabilities.py)

    # The refund modes this instance's settings allow (a subset of its capabilities': M-Pesa
    # pays partial refunds out through B2C only when its shortcode is configured).
    @property
    def refund_modes(self) -> frozenset[RefundMode]: ...

    def request_payment(self, request: CollectionRequest) -> ProviderAnswer: ...

    def payment_status(self, payment: PaymentRef) -> StatusAnswer: ...

    # Refunds follow the same answers: Accepted (will settle; a duplicate reference is
    # "already submitted"), Declined (definite), ProviderUnavailable (unknown: stays
    # `initiated`, the same key resumes it).
    def request_refund(self, request: RefundRequest) -> ProviderAnswer: ...

    def refund_status(self, refund: RefundRef) -> StatusAnswer: ...

    # Raises ConfigurationError when refunds need settings that are missing, before anything
    # is stored or asked.
    def check_refunds_configured(self) -> None: ...

    def close(self) -> None: ...
