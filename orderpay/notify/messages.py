"""What the customer reads: a notification's message, rendered when it is sent (with the
merchant's current name), and the order reference it quotes."""

from __future__ import annotations

import uuid

from orderpay.domain.money import Money, exponent
from orderpay.notify.channels import OutgoingMessage
from orderpay.store.notification_attempts import Attempt


def order_reference(order_id: uuid.UUID) -> str:
    """A short reference a customer can quote: the order id's first 8 hex digits."""
    return order_id.hex[:8].upper()


def format_amount(amount: Money) -> str:
    """'GHS 1,250.00', 'UGX 3,000': grouped, with the currency's decimals."""
    return f"{amount.currency} {amount.as_decimal():,.{exponent(amount.currency)}f}"


def render(attempt: Attempt, merchant_name: str) -> OutgoingMessage:
    first_name = attempt.customer_name.split()[0] if attempt.customer_name.split() else ""
    greeting = f"Hi {first_name}, w" if first_name else "W"
    reference = order_reference(attempt.order_id)
    if attempt.refund_id is not None:  # refund_sent: the refund's amount, not the payment's
        text = (
            f"{greeting}e have sent you a refund of {format_amount(attempt.amount)} for order "
            f"{reference}. - {merchant_name}"
        )
    else:
        text = (
            f"{greeting}e received your payment of {format_amount(attempt.amount)} for order "
            f"{reference}. Thank you! - {merchant_name}"
        )
    event = {
        "notification": attempt.notification_id,
        "order": str(attempt.order_id),
        "payment": str(attempt.payment_id),
        "amount": attempt.amount.as_string(),
        "currency": attempt.amount.currency,
        "reference": reference,
        "merchant": merchant_name,
        "message": text,
    }
    if attempt.refund_id is None:
        return OutgoingMessage(attempt.notification_id, attempt.recipient, text, event)
    event["refund"] = str(attempt.refund_id)
    return OutgoingMessage(attempt.notification_id, attempt.recipient, text, event, "refund.sent")
