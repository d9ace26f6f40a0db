"""Orders remember the Idempotency-Key of the request that made them.

orders get `idempotency_key` (unique) and `fingerprint` (of what the request asked for), both
NULL for the orders already made and for those made without a key. Downgrading drops them:
the code before this revision takes no key on orders, so it has no use for them.

Revision ID: 0009_order_idempotency_keys
Revises: 0008_catch_up
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_order_idempotency_keys"
down_revision = "0008_catch_up"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(op.f("uq_orders_idempotency_key"), ["idempotency_key"])
        batch.create_check_constraint(
            op.f("ck_orders_key_with_fingerprint"),
            "(idempotency_key IS NULL) = (fingerprint IS NULL)",
        )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(op.f("ck_orders_key_with_fingerprint"), type_="check")
        batch.drop_constraint(op.f("uq_orders_idempotency_key"), type_="unique")
        batch.drop_column("fingerprint")
        batch.drop_column("idempotency_key")
