"""What each provider can do: its capability record (DESIGN.md section 1, "providers differ;
the flows do not"; the facts: reference/providers.md).

The records are plain data, importable without a provider's client (httpx and its settings):
the charge, refund, cancel, confirmation and catch-up flows read them by the payment's
provider name, and never test the name itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from orderpay.domain.money import Money, exponent
from orderpay.domain.phones import mask_phone
from orderpay.errors import (
    ConfigurationError,
    InvalidAmount,
    InvalidPhone,
    RefundNotSupported,
)


class ReferenceOwner(StrEnum):
    OURS = "ours"  # the provider keeps the id we send (MTN's X-Reference-Id)
    PROVIDER = "provider"  # the provider picks its own (M-Pesa's CheckoutRequestID)


class CallbackTrust(StrEnum):
    SIGNED = "signed"  # a verified signature settles (the simulator's momo callbacks)
    HINT = "hint"  # unsigned: confirmed by the provider's status call before anything moves


class RefundMode(StrEnum):
    PARTIAL = "partial"  # any amount up to what is left, by our reference
    FULL_BY_MONEY_ID = "full by the provider's money id"  # M-Pesa reversal: the receipt
    PAYOUT = "partial as a payout"  # M-Pesa B2C: a new payment to the payer


class AmountCodec(StrEnum):
    MAJOR_STRING = "major units as a string"  # MTN: "12.50"
    WHOLE_MAJOR = "whole major units as an integer"  # Daraja: 12 (no fraction allowed)


@dataclass(frozen=True, slots=True)
class Capabilities:
    name: str
    reference_owner: ReferenceOwner
    # Whether the same request may be sent again after an unknown answer (the provider
    # deduplicates it); without it a lost answer is never re-sent automatically.
    resend_safe: bool
    status_query: str  # how the status is asked, for the operator
    callbacks: CallbackTrust
    refund_modes: frozenset[RefundMode]
    amount_codec: AmountCodec
    phone_format: str  # how the payer's number goes on the wire, for the operator
    currencies: frozenset[str] | None  # None: whatever the market takes
    statement_source: str
    # The provider refuses a second prompt to a payer while one is open, and the same amount
    # to the same payer within this many seconds (Daraja's rule 17): charges to one payer are
    # serialised and such a charge waits, rather than being refused at the provider.
    one_prompt_per_payer: bool = False
    # Refund results come only by callback (M-Pesa's result URL), maybe before the request's
    # own answer: the refund flow then applies one that arrived early.
    refund_results_by_callback: bool = False
    # Its status call confirms an outcome without the money id (M-Pesa's STK Query gives no
    # receipt): the success callback's is kept once the status call agrees.
    receipt_from_callback: bool = False
    # A request that may have reached a provider that cannot take it twice, with no answer
    # since: given to an operator this long after it was made (None: at the catch-up deadline).
    lost_answer_review_seconds: int | None = None
    same_amount_window_seconds: int = 0
    # Largest and smallest amount per charge, in minor units (None: no limit of ours).
    min_amount: int | None = None
    max_amount: int | None = None
    # The payer numbers it serves, as digits without "+" (None: any), and what to say of others.
    payer_pattern: str | None = None
    payer_description: str = ""

    def check_payer(self, phone: str) -> None:
        """Refuse, before anything is stored, a payer the provider cannot prompt."""
        if self.payer_pattern is not None and not re.fullmatch(self.payer_pattern, phone[1:]):
            raise InvalidPhone(
                f"{self.name} prompts {self.payer_description} only; {mask_phone(phone)} is "
                "not one: charge it through another provider (--provider)",
                provider=self.name,
            )

    def check_amount(self, amount: Money) -> None:
        """Refuse, before anything is stored, an amount the provider cannot take."""
        if self.currencies is not None and amount.currency not in self.currencies:
            raise InvalidAmount(
                f"{self.name} collects {', '.join(sorted(self.currencies))} only, not "
                f"{amount.currency}",
                provider=self.name,
            )
        if self.amount_codec is AmountCodec.WHOLE_MAJOR and amount.minor_units % (
            10 ** exponent(amount.currency)
        ):
            raise InvalidAmount(
                f"{self.name} takes whole {amount.currency} only; {amount} has a fractional "
                "part (change the order's total, or charge through another provider)",
                provider=self.name,
            )
        if self.min_amount is not None and amount.minor_units < self.min_amount:
            least = Money(self.min_amount, amount.currency)
            raise InvalidAmount(f"{self.name} collects at least {least}", provider=self.name)
        if self.max_amount is not None and amount.minor_units > self.max_amount:
            most = Money(self.max_amount, amount.currency)
            raise InvalidAmount(f"{self.name} collects at most {most}", provider=self.name)

    def describe(self) -> dict[str, str]:
        """The record as an operator reads it (README table, `doctor --json`)."""
        return {
            "provider": self.name,
            "reference": self.reference_owner.value,
            "re-send": "safe" if self.resend_safe else "never automatic",
            "status": self.status_query,
            "callbacks": self.callbacks.value,
            "refunds": ", ".join(sorted(mode.value for mode in self.refund_modes)),
            "amount": self.amount_codec.value,
            "phone": self.phone_format,
            "statements": self.statement_source,
        }


SIMULATOR = Capabilities(
    name="simulator",
    reference_owner=ReferenceOwner.OURS,
    resend_safe=True,
    status_query="derived from the payer's number (no network)",
    callbacks=CallbackTrust.SIGNED,
    refund_modes=frozenset({RefundMode.PARTIAL}),
    amount_codec=AmountCodec.MAJOR_STRING,
    phone_format="digits, no +",
    currencies=None,
    statement_source="none",
)
MTN = Capabilities(
    name="mtn",
    reference_owner=ReferenceOwner.OURS,
    resend_safe=True,  # 409 RESOURCE_ALREADY_EXIST for a repeated X-Reference-Id
    status_query="GET requesttopay/{reference}, synchronous (404 while not yet visible)",
    callbacks=CallbackTrust.HINT,
    refund_modes=frozenset({RefundMode.PARTIAL}),
    amount_codec=AmountCodec.MAJOR_STRING,
    phone_format="digits, no +",
    currencies=None,
    statement_source="partner-portal export",
)
MPESA = Capabilities(
    name="mpesa",
    reference_owner=ReferenceOwner.PROVIDER,
    resend_safe=False,  # a second STK push prompts the payer again
    status_query='STK Query, synchronous ("being processed" while the payer has not answered)',
    callbacks=CallbackTrust.HINT,
    refund_modes=frozenset({RefundMode.FULL_BY_MONEY_ID, RefundMode.PAYOUT}),
    amount_codec=AmountCodec.WHOLE_MAJOR,
    phone_format="2547 or 2541 and 8 digits",
    currencies=frozenset({"KES"}),
    statement_source="Pull Transactions API (48 h) and the organisation portal export",
    one_prompt_per_payer=True,
    same_amount_window_seconds=120,
    refund_results_by_callback=True,
    receipt_from_callback=True,
    lost_answer_review_seconds=600,  # a prompt has long ended; its callback would have come
    min_amount=100,  # KES 1
    max_amount=25_000_000,  # KES 250,000 per transaction
    payer_pattern=r"254[17]\d{8}",
    payer_description="Kenyan mobile numbers (+2547..., +2541...)",
)

CAPABILITIES = {record.name: record for record in (SIMULATOR, MTN, MPESA)}


def capabilities_of(name: str) -> Capabilities:
    """The record of the provider called `name` (a payment's own provider)."""
    try:
        return CAPABILITIES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown payment provider {name!r} (known: {', '.join(CAPABILITIES)})"
        ) from None


def refund_mode_for(
    provider: str,
    modes: frozenset[RefundMode],
    *,
    payment_amount: Money,
    amount: Money,
    refunded_before: int,
    money_id: str | None,
) -> RefundMode:
    """How a refund of `amount` of a payment is made with the modes a provider allows;
    RefundNotSupported, before anything is stored, saying what it can do instead."""
    whole = amount == payment_amount and refunded_before == 0
    if RefundMode.PARTIAL in modes:
        return RefundMode.PARTIAL
    if whole and money_id and RefundMode.FULL_BY_MONEY_ID in modes:
        return RefundMode.FULL_BY_MONEY_ID
    if RefundMode.PAYOUT in modes:
        return RefundMode.PAYOUT
    if not whole:
        raise RefundNotSupported(
            f"{provider} refunds only a whole payment ({payment_amount}), by reversing it; "
            f"{amount} is part of it"
            + (
                " (partial refunds are paid out as a new payment where the provider has one "
                "configured: see the README's section on it)"
                if RefundMode.PAYOUT in CAPABILITIES[provider].refund_modes
                else ""
            ),
            provider=provider,
        )
    raise RefundNotSupported(
        f"{provider} reverses a payment by its receipt, and this payment's is not known yet "
        "(its callback did not bring it); wait for it, or configure payouts for refunds",
        provider=provider,
    )
