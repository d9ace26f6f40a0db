"""The schema as SQLAlchemy Core tables (DESIGN.md section 3).

Alembic migrations in orderpay/store/migrations create it; tests check that the migrations and these
tables never drift apart. Constraint names come from the naming convention so migrations can
refer to them on every dialect.
"""

from __future__ import annotations

import threading
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

# Reached as `metadata` (module __getattr__ below), which first attaches the partial indexes.
_metadata = MetaData(naming_convention=NAMING_CONVENTION)


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


# Integer primary keys that autoincrement on SQLite too (SQLite only does it for INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")

customers = Table(
    "customers",
    _metadata,
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
    _metadata,
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
    _metadata,
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
    _metadata,
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
    _metadata,
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
    # What we sent the provider to name the request when it is not the row's id (M-Pesa's
    # AccountReference); NULL: the id itself.
    Column("our_reference", String(32), nullable=True),
    # When a request that may have reached the provider left (NULL: never sent, or certainly
    # not received): a provider that cannot take a request twice is never sent one again.
    Column("sent_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(_in("status", PaymentStatus), name="status_known"),
    UniqueConstraint("idempotency_key"),
    UniqueConstraint("provider", "provider_reference"),
    Index(None, "order_id"),
    Index(None, "status", "updated_at"),
    Index(None, "payer_phone", "created_at"),
)

refunds = Table(
    "refunds",
    _metadata,
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
    # What we sent the provider to name the request when it is not the row's id (M-Pesa's
    # AccountReference); NULL: the id itself.
    Column("our_reference", String(32), nullable=True),
    # When a request that may have reached the provider left (NULL: never sent, or certainly
    # not received): a provider that cannot take a request twice is never sent one again.
    Column("sent_at", UTCDateTime(), nullable=True),
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
)

# What needs an operator's decision. `subject` names what the item is about (a payment, a
# refund, an order and a reference) so that the same finding, reported again, does not open a
# second item while the first is open; a resolved item stays, with who resolved it and why.
review_items = Table(
    "review_items",
    _metadata,
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
    Index(None, "opened_at"),
    Index(None, "order_id"),
)

webhook_events = Table(
    "webhook_events",
    _metadata,
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
    _metadata,
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
    Index(None, "gateway_message_id"),
    Index(None, "order_id"),
)

order_events = Table(
    "order_events",
    _metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", Uuid(), ForeignKey("orders.id"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("event", String(64), nullable=False),
    Column("detail", Text(), nullable=False, server_default=""),
    Column("operator", String(64), nullable=True),  # who acted, for an operator's action
    Index(None, "order_id", "id"),
)


# Partial indexes, attached to their tables when the metadata is first asked for (see
# __getattr__ below), not at import: naming a dialect's option (`postgresql_where`) makes
# SQLAlchemy import that dialect, and Postgres's imports every driver it supports. Reading and
# writing rows never needs the index objects (the predicates ON CONFLICT names are spelled out
# where it is written); creating the schema, migrating and comparing it always reach
# `metadata`.
def _partial_indexes() -> None:
    def partial(name: str, table: Table, *columns: str, where: str, unique: bool = False) -> None:
        Index(
            name,
            *(table.c[column] for column in columns),
            unique=unique,
            postgresql_where=text(where),
            sqlite_where=text(where),
        )

    # The catch-up's due rows: only those still to be asked are indexed.
    for table in (payments, refunds):
        partial(
            f"ix_{table.name}_next_check_at",
            table,
            "next_check_at",
            where="next_check_at IS NOT NULL",
        )
    # Partial: most payments have no transaction id yet, and a charge's insert need not
    # index them.
    partial(
        "uq_payments_provider_provider_transaction_id",
        payments,
        "provider",
        "provider_transaction_id",
        where="provider_transaction_id IS NOT NULL",
        unique=True,
    )
    for table in (payments, refunds):
        partial(
            f"uq_{table.name}_provider_our_reference",
            table,
            "provider",
            "our_reference",
            where="our_reference IS NOT NULL",
            unique=True,
        )
    partial(
        "uq_payments_order_id_live",
        payments,
        "order_id",
        where=_in("status", LIVE_PAYMENT_STATUSES),
        unique=True,
    )
    # One open item per subject, whatever its reason: a finding reported again may read as
    # another reason (payments/review.py), and is still the one item to decide.
    partial(
        "uq_review_items_open_subject",
        review_items,
        "subject",
        where="resolved_at IS NULL",
        unique=True,
    )
    # One notification of a kind per payment, and per refund: a payment may have several.
    partial(
        "uq_notifications_payment_id_kind",
        notifications,
        "payment_id",
        "kind",
        where="refund_id IS NULL",
        unique=True,
    )
    partial(
        "uq_notifications_refund_id_kind",
        notifications,
        "refund_id",
        "kind",
        where="refund_id IS NOT NULL",
        unique=True,
    )
    partial("ix_notifications_due", notifications, "due_at", where="status = 'pending'")


metadata: MetaData  # every table and index: set by __getattr__ on first use
_attaching = threading.Lock()


def __getattr__(name: str) -> Any:
    if name != "metadata":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _attaching:  # once: a second Index of the same name would be a second index
        if "metadata" not in globals():
            _partial_indexes()
            globals()["metadata"] = _metadata  # later lookups do not come here
    return _metadata
