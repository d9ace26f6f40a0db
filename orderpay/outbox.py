"""The notification outbox: rows written in the settling transaction, moved to RQ by the relay.

A row is inserted in the same transaction that marks the payment succeeded, so there is no
notification without a payment and no payment without its notification. On Postgres the insert
also NOTIFYs the relay, which Postgres delivers only if the transaction commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql, sqlite

from orderpay.clock import utcnow
from orderpay.models import notifications
from orderpay.states import NotificationStatus

OUTBOX_CHANNEL = "orderpay_outbox"  # the Postgres LISTEN/NOTIFY channel the relay listens on
PAYMENT_RECEIVED = "payment_received"


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """How this deployment notifies: the channel, and the merchant's URL for `webhook`."""

    channel: str = "log"
    webhook_url: str | None = None

    def recipient_for(self, customer_phone: str) -> str:
        if self.channel == "webhook" and self.webhook_url:
            return self.webhook_url
        return customer_phone


def add_notification(
    conn: Connection,
    *,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    recipient: str,
    target: NotifyTarget,
    kind: str = PAYMENT_RECEIVED,
) -> int | None:
    """Insert the outbox row; None if this payment already has one of this kind."""
    now = utcnow()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = conn.execute(
        dialect.insert(notifications)
        .values(
            order_id=order_id,
            payment_id=payment_id,
            kind=kind,
            channel=target.channel,
            recipient=recipient,
            # Rendered by the job when it sends, with the merchant's current name.
            body="",
            status=NotificationStatus.PENDING.value,
            attempts=0,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["payment_id", "kind"])
        .returning(notifications.c.id)
    ).scalar_one_or_none()
    if inserted is not None and conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :id)"),
            {"channel": OUTBOX_CHANNEL, "id": str(inserted)},
        )
    return inserted
