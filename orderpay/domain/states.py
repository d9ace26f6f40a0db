"""Statuses and their transition tables (DESIGN.md section 4). Pure: no I/O."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class PaymentStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    # Refunds move a paid order once they succeed: all of the payment back, or part of it.
    OrderStatus.PAID: frozenset({OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}),
    OrderStatus.PARTIALLY_REFUNDED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.REFUNDED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# A provider's outcome may arrive before we have recorded its receipt (the callback can beat
# the charge's third step), so `initiated` may go straight to a terminal state.
PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.INITIATED: frozenset(
        {PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}
    ),
    PaymentStatus.PENDING: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}),
    PaymentStatus.SUCCEEDED: frozenset(),
    PaymentStatus.FAILED: frozenset(),
}

# A refund follows a payment's rules (DESIGN.md section 4): its outcome may beat the record of
# the provider's receipt, and `succeeded` and `failed` are terminal.
REFUND_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.INITIATED: frozenset(
        {RefundStatus.PENDING, RefundStatus.SUCCEEDED, RefundStatus.FAILED}
    ),
    RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    RefundStatus.SUCCEEDED: frozenset(),
    RefundStatus.FAILED: frozenset(),
}

NOTIFICATION_TRANSITIONS: dict[NotificationStatus, frozenset[NotificationStatus]] = {
    NotificationStatus.PENDING: frozenset({NotificationStatus.SENT, NotificationStatus.FAILED}),
    NotificationStatus.SENT: frozenset(
        {NotificationStatus.DELIVERED, NotificationStatus.UNDELIVERED}
    ),
    NotificationStatus.DELIVERED: frozenset(),
    NotificationStatus.UNDELIVERED: frozenset(),
    NotificationStatus.FAILED: frozenset({NotificationStatus.PENDING}),
}

# Payments that hold an order: at most one per order (a partial unique index enforces it).
LIVE_PAYMENT_STATUSES = frozenset(
    {PaymentStatus.INITIATED, PaymentStatus.PENDING, PaymentStatus.SUCCEEDED}
)
OPEN_PAYMENT_STATUSES = frozenset({PaymentStatus.INITIATED, PaymentStatus.PENDING})
TERMINAL_PAYMENT_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})
# Orders whose payment succeeded: refunds since do not make them payable again.
PAID_ORDER_STATUSES = frozenset(
    {OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
)
OPEN_REFUND_STATUSES = frozenset({RefundStatus.INITIATED, RefundStatus.PENDING})


def payment_can_move(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in PAYMENT_TRANSITIONS[current]


def order_can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ORDER_TRANSITIONS[current]


def refund_can_move(current: RefundStatus, target: RefundStatus) -> bool:
    return target in REFUND_TRANSITIONS[current]


def notification_can_move(current: NotificationStatus, target: NotificationStatus) -> bool:
    return target in NOTIFICATION_TRANSITIONS[current]
