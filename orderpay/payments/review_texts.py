"""The review queue's words: what a provider said, and what an operator should do about it,
one place for their wording (payments/review.py keeps the findings)."""

from __future__ import annotations

from orderpay.domain.money import Money
from orderpay.domain.phones import mask_phones_in
from orderpay.domain.reviews import ReviewReason
from orderpay.domain.states import OrderStatus, PaymentStatus

# Region for local-form phone numbers in a provider's free text when the payer's is unknown.
FALLBACK_REGION = "GH"


def suggested_action(
    reason: ReviewReason,
    *,
    provider: str,
    amount: Money | None,
    reported: Money | str | None = None,
    succeeded: bool = True,
    order_status: OrderStatus | None = None,
    payment_status: PaymentStatus | None = None,
) -> str:
    """A short imperative for the operator; amounts with their currency.

    `amount`: our payment's amount (None when no payment matched); `reported`: what the
    provider reported instead; `succeeded`: whether the provider reports a success;
    `order_status`: the order's status now; `payment_status`: our record of the payment.
    """
    money = str(amount) if amount is not None else "the amount"
    if reason is ReviewReason.SUCCESS_AFTER_CANCEL:
        return f"refund {money}: {provider} took it after the operator's forced cancel"
    # No payment of ours matched the report: `orderpay refund` has nothing to refund.
    outside = (
        f"give it back through {provider} (its portal: no payment of ours matches it) and "
        "resolve this item"
    )
    if reason is ReviewReason.SUCCESS_ON_CANCELLED_ORDER:
        if amount is None:
            money = str(reported) if isinstance(reported, Money) else "what was taken"
            return f"refund {money}: the order was cancelled; {outside}"
        return f"refund {money} (`orderpay refund`): the order was cancelled"
    if reason is ReviewReason.SECOND_PAYMENT:
        if amount is not None:  # a payment of ours succeeded on an order another one paid
            return f"refund {money} (`orderpay refund`): the order was already paid by another"
        if succeeded:
            what = str(reported) if reported is not None else "money"
            return f"check with {provider} whether {what} was taken twice; if so, {outside}"
        return f"check the reference with {provider}; a failure took no money"
    if reason is ReviewReason.AMOUNT_MISMATCH:
        if not succeeded:
            return f"check with {provider}; a failure took no money"
        if payment_status is not None and payment_status is not PaymentStatus.SUCCEEDED:
            # Nothing was recorded as paid by it: all of what was taken goes back.
            taken = str(reported) if isinstance(reported, Money) else f"what was taken ({reported})"
            return f"refund {taken}: {provider} reports it taken, our record says {payment_status}"
        return (
            f"check with {provider} what was taken ({reported} reported, {money} charged); "
            "refund any excess"
        )
    if reason is ReviewReason.OUTCOME_CONFLICT and succeeded:
        return f"check with {provider} whether {money} was taken; if so, refund it"
    if reason is ReviewReason.OUTCOME_CONFLICT:  # a failure after a success
        marked = f" (marked {order_status})" if order_status is not None else ""
        return (
            f"check with {provider} whether {money} was taken; if not, hold the order{marked} "
            "and collect it again"
        )
    return f"check with {provider} and decide"


def reported_text(
    source: str,
    outcome: PaymentStatus,
    *,
    amount: Money | str | None = None,
    currency: str | None = None,
    reference: str | None = None,
    transaction_id: str | None = None,
    reason: str | None = None,
    payer_phone: str | None = None,
) -> str:
    """What the provider said, for a person: status, amount, reference, its transaction id
    and reason. Phone numbers in the provider's free text (its reason) are masked; ids and
    references are kept as they came, as `db prune` keeps them."""
    parts = [f"{source}: {outcome}"]
    if amount is not None:
        parts.append(str(amount))
    elif currency is not None:
        parts.append(f"currency {currency}")
    if reference is not None:
        parts.append(f"reference {reference}")
    if transaction_id is not None and transaction_id != reference:
        parts.append(f"transaction {transaction_id}")
    if reason:
        parts.append(f"reason {mask_phones_in(reason, _region_of(payer_phone))}")
    return ", ".join(parts)


def _region_of(phone: str | None) -> str:
    """The region of the payer's number: local-form numbers in free text are read there."""
    if phone:
        import phonenumbers

        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
        except phonenumbers.NumberParseException:
            region = None
        if region:
            return str(region)
    return FALLBACK_REGION
