"""Payments keep the provider's transaction id and whether a failure awaits the provider's
word; notification leases get their own column.

Revision ID: 0002_ledger_integrity
Revises: 0001_initial
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ledger_integrity"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("provider_transaction_id", sa.String(length=128), nullable=True))
        batch.add_column(
            sa.Column(
                "awaiting_confirmation",
                sa.Boolean(),
                server_default=sa.text("false"),
                nullable=False,
            )
        )
    op.create_index(
        "uq_payments_provider_provider_transaction_id",
        "payments",
        ["provider", "provider_transaction_id"],
        unique=True,
        postgresql_where=sa.text("provider_transaction_id IS NOT NULL"),
        sqlite_where=sa.text("provider_transaction_id IS NOT NULL"),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    # A lease used to live on due_at: a row mid-attempt had due_at in the future. Those rows
    # stay as they are (due once that moment passes), which is what the old lease meant too.


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("lease_until")
    op.drop_index("uq_payments_provider_provider_transaction_id", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("awaiting_confirmation")
        batch.drop_column("provider_transaction_id")
