"""Refunds, the review queue, and who acted (DESIGN.md sections 3 and 4).

- `refunds`: its own ledger (one writer: store/refunds.py), keyed like payments.
- `review_items`: what needs an operator's decision; at most one open item per subject (a
  finding, whatever reason it reads as), and a reason from the known codes.
- `notifications.refund_id`: a refund's notification. A payment may have several refunds, so
  "one notification of a kind per payment" now holds for payment notifications only, and
  "one per refund" for refund notifications (two partial unique indexes replace the unique
  constraint; the conflict target of the settling insert names the first one's predicate).
- orders may be `partially_refunded` or `refunded`.
- `order_events.operator`: who did it, for an operator's action.

Revision ID: 0004_refunds_review
Revises: 0003_price_positive
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_refunds_review"
down_revision = "0003_price_positive"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ORDER_STATUSES = "status IN ('cancelled', 'paid', 'partially_refunded', 'pending', 'refunded')"
OLD_ORDER_STATUSES = "status IN ('cancelled', 'paid', 'pending')"
REVIEW_REASONS = (
    "reason IN ('amount_mismatch', 'outcome_conflict', 'refund_conflict', 'second_payment', "
    "'success_after_cancel', 'success_on_cancelled_order')"
)


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_reference", sa.String(length=128), nullable=True),
        sa.Column("provider_transaction_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("length(reason) >= 1", name=op.f("ck_refunds_reason_not_empty")),
        sa.CheckConstraint(
            "status IN ('failed', 'initiated', 'pending', 'succeeded')",
            name=op.f("ck_refunds_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_refunds_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_refunds_idempotency_key")),
        sa.UniqueConstraint(
            "provider", "provider_reference", name=op.f("uq_refunds_provider_provider_reference")
        ),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"])
    op.create_index(op.f("ix_refunds_order_id"), "refunds", ["order_id"])
    op.create_index(op.f("ix_refunds_status_updated_at"), "refunds", ["status", "updated_at"])

    op.create_table(
        "review_items",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column("refund_id", sa.Uuid(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("reported", sa.Text(), nullable=False),
        sa.Column("suggested_action", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(resolved_at IS NULL) = (resolved_by IS NULL)",
            name=op.f("ck_review_items_resolved_with_operator"),
        ),
        sa.CheckConstraint(REVIEW_REASONS, name=op.f("ck_review_items_reason_known")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_review_items_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_review_items_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_review_items_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
    )
    op.create_index(
        "uq_review_items_open_subject",
        "review_items",
        ["subject"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(op.f("ix_review_items_opened_at"), "review_items", ["opened_at"])
    op.create_index(op.f("ix_review_items_order_id"), "review_items", ["order_id"])

    # Batch mode: SQLite rebuilds these tables to change a constraint.
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("refund_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_notifications_refund_id_refunds"), "refunds", ["refund_id"], ["id"]
        )
        batch.drop_constraint(op.f("uq_notifications_payment_id_kind"), type_="unique")
    op.create_index(
        "uq_notifications_payment_id_kind",
        "notifications",
        ["payment_id", "kind"],
        unique=True,
        postgresql_where=sa.text("refund_id IS NULL"),
        sqlite_where=sa.text("refund_id IS NULL"),
    )
    op.create_index(
        "uq_notifications_refund_id_kind",
        "notifications",
        ["refund_id", "kind"],
        unique=True,
        postgresql_where=sa.text("refund_id IS NOT NULL"),
        sqlite_where=sa.text("refund_id IS NOT NULL"),
    )
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(op.f("ck_orders_status_known"), type_="check")
        # `partially_refunded` is 18 characters.
        batch.alter_column(
            "status",
            type_=sa.String(length=32),
            existing_type=sa.String(length=16),
            existing_nullable=False,
        )
        batch.create_check_constraint(op.f("ck_orders_status_known"), ORDER_STATUSES)
    with op.batch_alter_table("order_events") as batch:
        batch.add_column(sa.Column("operator", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # The schema before has no place for refunds: refuse rather than drop money movements.
    held = op.get_bind().execute(sa.text("SELECT count(*) FROM refunds")).scalar_one()
    if held:
        raise RuntimeError(
            f"this database holds {held} refund(s), which the schema before 0004 cannot keep; "
            "downgrading would lose them"
        )
    with op.batch_alter_table("order_events") as batch:
        batch.drop_column("operator")
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(op.f("ck_orders_status_known"), type_="check")
        batch.alter_column(
            "status",
            type_=sa.String(length=16),
            existing_type=sa.String(length=32),
            existing_nullable=False,
        )
        batch.create_check_constraint(op.f("ck_orders_status_known"), OLD_ORDER_STATUSES)
    op.drop_index("uq_notifications_refund_id_kind", table_name="notifications")
    op.drop_index("uq_notifications_payment_id_kind", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint(op.f("fk_notifications_refund_id_refunds"), type_="foreignkey")
        batch.drop_column("refund_id")
        batch.create_unique_constraint(
            op.f("uq_notifications_payment_id_kind"), ["payment_id", "kind"]
        )
    op.drop_index(op.f("ix_review_items_order_id"), table_name="review_items")
    op.drop_index(op.f("ix_review_items_opened_at"), table_name="review_items")
    op.drop_index("uq_review_items_open_subject", table_name="review_items")
    op.drop_table("review_items")
    op.drop_index(op.f("ix_refunds_status_updated_at"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_order_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_table("refunds")
