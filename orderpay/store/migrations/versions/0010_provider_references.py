"""Payments and refunds keep our own reference apart from the provider's, and whether a request
may have reached the provider.

payments and refunds get `our_reference` (what we sent the provider to name the request when
it is not the row's id: M-Pesa's AccountReference, at most 12 characters, shown to the payer;
NULL for the rows already made, whose reference is their id) and `sent_at` (when a request
that may have reached the provider left; NULL: never sent, or certainly not received). A
provider that cannot take a request twice (M-Pesa) is never sent one again once `sent_at` is
set. Downgrading drops them.

Revision ID: 0010_provider_references
Revises: 0009_order_idempotency_keys
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_provider_references"
down_revision = "0009_order_idempotency_keys"
branch_labels = None
depends_on = None

TABLES = ("payments", "refunds")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("our_reference", sa.String(length=32), nullable=True))
            batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        op.create_index(
            f"uq_{table}_provider_our_reference",
            table,
            ["provider", "our_reference"],
            unique=True,
            postgresql_where=sa.text("our_reference IS NOT NULL"),
            sqlite_where=sa.text("our_reference IS NOT NULL"),
        )
    # A charge through a provider that prompts one payer at a time looks at the payer's
    # recent payments.
    op.create_index("ix_payments_payer_phone_created_at", "payments", ["payer_phone", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_payer_phone_created_at", table_name="payments")
    for table in TABLES:
        op.drop_index(f"uq_{table}_provider_our_reference", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("sent_at")
            batch.drop_column("our_reference")
