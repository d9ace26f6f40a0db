"""The schema as SQLAlchemy Core tables (DESIGN.md section 3).

Alembic migrations in orderpay/store/migrations create it; tests check that the migrations and these
tables never drift apart. Constraint names come from the naming convention so migrations can
refer to them on every dialect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)

from orderpay.domain.reviews import FindingMoney, ReviewReason
from orderpay.domain.states import (
    LIVE_PAYMENT_STATUSES,
    NotificationStatus,
    OrderStatus,
    PaymentStatus,
    RefundStatus,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    Postgres keeps `timestamptz`; SQLite has no time zones, so values are stored as naive UTC
    and given back their UTC zone when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def _in(column: str, values: Any) -> str:
    quoted = ", ".join(f"'{v}'" for v in sorted(str(v) for v in values))
    return f"{column} IN ({quoted})"


def _catch_up_columns() -> list[Column[Any]]:
    """When the provider is next asked about a payment or refund that is open or awaiting its
    confirmation (NULL: never; payments/catch_up.py), and how often it has been asked."""
    return [
        Column("next_check_at", UTCDateTime(), nullable=True),
        Column("checks_made", Integer(), nullable=False, server_default=text("0")),
    ]


def _due_index(table: str) -> Index:
    """The catch-up's due rows: only those still to be asked are indexed."""
    return Index(
        f"ix_{table}_next_check_at",
        "next_check_at",
        postgresql_where=text("next_check_at IS NOT NULL"),
        sqlite_where=text("next_check_at IS NOT NULL"),
    )


# Integer primary keys that autoincrement on SQLite too (SQLite only does it for INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")

customers = Table(
    "customers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("phone", String(16), nullable=False),
    Column("email", String(254), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint("length(name) >= 1", name="name_not_empty"),
    Index(None, "phone"),
)

products = Table(
    "products",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text(), nullable=False, server_default=""),
    Column("price", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("active", Boolean(), nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime(), nullable=False),
    # Zero too: an order of it would total 0, which no payment can collect (0003_price_positive).
    CheckConstraint("price > 0", name="price_positive"),
    CheckConstraint("length(name) >= 1", name="name_not_empty"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("customer_id", BigId, ForeignKey("customers.id"), nullable=False),
    Column("status", String(32), nullable=False),  # partially_refunded: 18 characters
    Column("currency", String(3), nullable=False),
    Column("total", BigInteger(), nullable=False),
    # The Idempotency-Key of the request that made the order, and the fingerprint of what it
    # asked for; both NULL for an order made without a key (the CLI, or a request without one).
    Column("idempotency_key", String(255), nullable=True),
    Column("fingerprint", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("total >= 0", name="total_not_negative"),
    CheckConstraint(_in("status", OrderStatus), name="status_known"),
    CheckConstraint(
        "(idempotency_key IS NULL) = (fingerprint IS NULL)", name="key_with_fingerprint"
    ),
    UniqueConstraint("idempotency_key"),
    Index(None, "customer_id"),
    Index(None, "status", "created_at"),
)

order_items = Table(
    "order_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("product_id", Uuid(), ForeignKey("products.id"), nullable=False),
    Column("quantity", Integer(), nullable=False),
    Column("unit_price", BigInteger(), nullable=False),
    CheckConstraint("quantity >= 1", name="quantity_positive"),
    CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
    UniqueConstraint("order_id", "product_id"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("amount", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payer_phone", String(16), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_reference", String(128), nullable=True),
    # What the provider reports as its own id of the money movement: a signing sender's
    # transaction id, MTN's financialTransactionId (the id on the customer's statement).
    Column("provider_transaction_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("failure_reason", Text(), nullable=True),
    # Failed by an operator without the provider's word (cancel --force): the provider is still
    # asked until it gives a definite outcome; a success then is kept for review.
    Column("awaiting_confirmation", Boolean(), nullable=False, server_default=text("false")),
    # While set and in the future, one process is talking to the provider for this payment;
    # others with the same key answer idempotency_key_in_use instead of calling again.
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    *_catch_up_columns(),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(_in("status", PaymentStatus), name="status_known"),
    UniqueConstraint("idempotency_key"),
    UniqueConstraint("provider", "provider_reference"),
    # Partial: most payments have no transaction id yet, and a charge's insert need not
    # index them.
    Index(
        "uq_payments_provider_provider_transaction_id",
        "provider",
        "provider_transaction_id",
        unique=True,
        postgresql_where=text("provider_transaction_id IS NOT NULL"),
        sqlite_where=text("provider_transaction_id IS NOT NULL"),
    ),
    Index(
        "uq_payments_order_id_live",
        "order_id",
        unique=True,
        postgresql_where=text(_in("status", LIVE_PAYMENT_STATUSES)),
        sqlite_where=text(_in("status", LIVE_PAYMENT_STATUSES)),
    ),
    Index(None, "order_id"),
    Index(None, "status", "updated_at"),
    _due_index("payments"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("payment_id", Uuid(), ForeignKey("payments.id"), nullable=False),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("amount", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_reference", String(128), nullable=True),
    Column("provider_transaction_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text(), nullable=False),  # the operator's, why the money goes back
    Column("failure_reason", Text(), nullable=True),  # the provider's, when it refused
    Column("operator", String(64), nullable=False),
    # As on payments: while in the future, one process is talking to the provider about it.
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    *_catch_up_columns(),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(_in("status", RefundStatus), name="status_known"),
    CheckConstraint("length(reason) >= 1", name="reason_not_empty"),
    UniqueConstraint("idempotency_key"),
    UniqueConstraint("provider", "provider_reference"),
    Index(None, "payment_id"),
    Index(None, "order_id"),
    Index(None, "status", "updated_at"),
    _due_index("refunds"),
)

# What needs an operator's decision. `subject` names what the item is about (a payment, a
# refund, an order and a reference) so that the same finding, reported again, does not open a
# second item while the first is open; a resolved item stays, with who resolved it and why.
review_items = Table(
    "review_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("reason", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("payment_id", Uuid(), ForeignKey("payments.id"), nullable=True),
    Column("refund_id", Uuid(), ForeignKey("refunds.id"), nullable=True),
    Column("event_id", BigInteger(), nullable=True),  # the webhook event that reported it
    Column("reported", Text(), nullable=False),  # what the provider said
    # What it says of the payment's money (domain.reviews.FindingMoney), or NULL: nothing.
    Column("money", String(16), nullable=True),
    Column("suggested_action", Text(), nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime(), nullable=True),
    Column("resolved_by", String(64), nullable=True),
    Column("note", Text(), nullable=True),
    CheckConstraint("(resolved_at IS NULL) = (resolved_by IS NULL)", name="resolved_with_operator"),
    CheckConstraint(_in("reason", ReviewReason), name="reason_known"),
    CheckConstraint(f"money IS NULL OR {_in('money', FindingMoney)}", name="money_known"),
    # One open item per subject, whatever its reason: a finding reported again may read as
    # another reason (payments/review.py), and is still the one item to decide.
    Index(
        "uq_review_items_open_subject",
        "subject",
        unique=True,
        postgresql_where=text("resolved_at IS NULL"),
        sqlite_where=text("resolved_at IS NULL"),
    ),
    Index(None, "opened_at"),
    Index(None, "order_id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("dedupe_key", String(255), nullable=False),
    Column("payload", Text(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=True),
    Column("payment_id", Uuid(), ForeignKey("payments.id"), nullable=True),
    UniqueConstraint("source", "dedupe_key"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("payment_id", Uuid(), ForeignKey("payments.id"), nullable=False),
    # Set on a refund's notification (its payment_id is the refunded payment's).
    Column("refund_id", Uuid(), ForeignKey("refunds.id"), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(255), nullable=False),
    Column("body", Text(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default=text("0")),
    Column("last_error", Text(), nullable=True),
    Column("gateway_message_id", String(128), nullable=True),
    # The outbox: a pending row is sent once due_at has come (a retry's backoff moves it) and
    # no attempt holds it: an attempt claims the row by setting lease_until, and a row whose
    # lease ran out may be claimed again. enqueued_at: when the relay last handed it to RQ.
    Column("due_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("enqueued_at", UTCDateTime(), nullable=True),
    Column("sent_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    CheckConstraint(_in("status", NotificationStatus), name="status_known"),
    # One notification of a kind per payment, and per refund: a payment may have several.
    Index(
        "uq_notifications_payment_id_kind",
        "payment_id",
        "kind",
        unique=True,
        postgresql_where=text("refund_id IS NULL"),
        sqlite_where=text("refund_id IS NULL"),
    ),
    Index(
        "uq_notifications_refund_id_kind",
        "refund_id",
        "kind",
        unique=True,
        postgresql_where=text("refund_id IS NOT NULL"),
        sqlite_where=text("refund_id IS NOT NULL"),
    ),
    Index(None, "gateway_message_id"),
    Index(None, "order_id"),
    Index(
        "ix_notifications_due",
        "due_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("event", String(64), nullable=False),
    Column("detail", Text(), nullable=False, server_default=""),
    Column("operator", String(64), nullable=True),  # who acted, for an operator's action
    Index(None, "order_id", "id"),
)
