"""JSON shapes of DESIGN.md section 8, shared by the CLI's --json and the REST API.

Amounts are decimal strings in major units next to their currency, as the seed's API had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Types only: a command that shapes an order must not load every writer of the ledger.
    from datetime import datetime

    from orderpay.payments.replay import Replayed
    from orderpay.shop.customers import Customer
    from orderpay.shop.products import Product
    from orderpay.store.notifications import Notification
    from orderpay.store.order_events import OrderEvent
    from orderpay.store.orders import Order, OrderDetail
    from orderpay.store.payments import Payment
    from orderpay.store.refund_rows import Refund
    from orderpay.store.reviews import ReviewItem
    from orderpay.store.webhook_events import StoredEvent

Shape = dict[str, Any]


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def customer_shape(customer: Customer) -> Shape:
    return {
        "id": customer.id,
        "name": customer.name,
        "phone": customer.phone,
        "email": customer.email,
        "created_at": timestamp(customer.created_at),
    }


def product_shape(product: Product) -> Shape:
    return {
        "id": str(product.id),
        "name": product.name,
        "description": product.description,
        "price": product.price.as_string(),
        "currency": product.price.currency,
        "active": product.active,
        "created_at": timestamp(product.created_at),
    }


def payment_shape(payment: Payment, *, replayed: bool | None = None) -> Shape:
    shape: Shape = {
        "id": str(payment.id),
        "order": str(payment.order_id),
        "status": payment.status.value,
        "amount": payment.amount.as_string(),
        "currency": payment.amount.currency,
        "idempotency_key": payment.idempotency_key,
        "provider": payment.provider,
        "our_reference": payment.our_reference or str(payment.id),
        "provider_reference": payment.provider_reference,
        "provider_transaction_id": payment.provider_transaction_id,
        "awaiting_confirmation": payment.awaiting_confirmation,
        "payer_phone": payment.payer_phone,
        "failure_reason": payment.failure_reason,
        "created_at": timestamp(payment.created_at),
        "updated_at": timestamp(payment.updated_at),
    }
    if replayed is not None:
        shape["replayed"] = replayed
    return shape


def refund_shape(refund: Refund, *, replayed: bool | None = None) -> Shape:
    shape: Shape = {
        "id": str(refund.id),
        "payment": str(refund.payment_id),
        "order": str(refund.order_id),
        "status": refund.status.value,
        "amount": refund.amount.as_string(),
        "currency": refund.amount.currency,
        "idempotency_key": refund.idempotency_key,
        "reason": refund.reason,
        "provider": refund.provider,
        "our_reference": refund.our_reference or str(refund.id),
        "provider_reference": refund.provider_reference,
        "provider_transaction_id": refund.provider_transaction_id,
        "failure_reason": refund.failure_reason,
        "operator": refund.operator,
        "created_at": timestamp(refund.created_at),
        "updated_at": timestamp(refund.updated_at),
    }
    if replayed is not None:
        shape["replayed"] = replayed
    return shape


def notification_shape(notification: Notification) -> Shape:
    return {
        "id": notification.id,
        "order": str(notification.order_id),
        "payment": str(notification.payment_id),
        "refund": None if notification.refund_id is None else str(notification.refund_id),
        "kind": notification.kind,
        "channel": notification.channel,
        "recipient": notification.recipient,
        "status": notification.status.value,
        "attempts": notification.attempts,
        "last_error": notification.last_error,
        "gateway_message_id": notification.gateway_message_id,
        "created_at": timestamp(notification.created_at),
        "sent_at": timestamp(notification.sent_at),
    }


def order_event_shape(event: OrderEvent) -> Shape:
    return {
        "at": timestamp(event.at),
        "event": event.event,
        "detail": event.detail,
        "operator": event.operator,  # who acted, for an operator's action; else null
    }


def review_item_shape(item: ReviewItem) -> Shape:
    return {
        "id": item.id,
        "reason": item.reason,
        "open": item.is_open,
        "order": str(item.order_id),
        "payment": None if item.payment_id is None else str(item.payment_id),
        "refund": None if item.refund_id is None else str(item.refund_id),
        "event": item.event_id,
        "reported": item.reported,
        "suggested_action": item.suggested_action,
        "opened_at": timestamp(item.opened_at),
        "resolved_at": timestamp(item.resolved_at),
        "resolved_by": item.resolved_by,
        "note": item.note,
    }


def order_summary_shape(order: Order) -> Shape:
    return {
        "id": str(order.id),
        "customer": order.customer_id,
        "status": order.status.value,
        "currency": order.total.currency,
        "total_amount": order.total.as_string(),
        "created_at": timestamp(order.created_at),
        "updated_at": timestamp(order.updated_at),
    }


def order_shape(detail: OrderDetail) -> Shape:
    shape = order_summary_shape(detail.order)
    shape["customer_name"] = detail.customer_name
    shape["items"] = [
        {
            "product": str(item.product_id),
            "name": item.name,
            "quantity": item.quantity,
            "unit_price": item.unit_price.as_string(),
            "line_total": item.line_total.as_string(),
        }
        for item in detail.items
    ]
    shape["payments"] = [payment_shape(p) for p in detail.payments]
    shape["refunds"] = [refund_shape(r) for r in detail.refunds]
    shape["notifications"] = [notification_shape(n) for n in detail.notifications]
    shape["events"] = [order_event_shape(e) for e in detail.events]
    return shape


def webhook_event_shape(event: StoredEvent) -> Shape:
    return {
        "id": event.id,
        "source": event.source,
        "received_at": event.received_at.isoformat(),
        "outcome": event.outcome,
        "order": str(event.order_id) if event.order_id else None,
        "payment": str(event.payment_id) if event.payment_id else None,
        "dedupe_key": event.dedupe_key,
    }


def replay_shape(replayed: Replayed) -> Shape:
    shape: Shape = {
        "event": replayed.event_id,
        "source": replayed.source,
        "outcome": replayed.outcome,
        "payment": str(replayed.payment_id) if replayed.payment_id else None,
        "notification_queued": replayed.notification_queued,
    }
    c = replayed.confirmation
    if c is not None:
        shape["confirmation"] = {
            "before": c.before,
            "after": c.after,
            "provider_said": c.remote,
            "note": c.note,
        }
    return shape
