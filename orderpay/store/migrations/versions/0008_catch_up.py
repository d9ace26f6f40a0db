"""The catch-up's schedule on payments and refunds; what a review item says of the money.

payments and refunds get `next_check_at` (when their provider is next asked, while they are
open or awaiting confirmation) and `checks_made`; every such row is due at once. review_items
get `money` (domain.reviews.FindingMoney) and the reasons `no_final_answer` and
`sender_id_conflict`. An open item's `money` is read from what it is about: a success reported
for a payment not recorded succeeded says money was taken; a failure reported for a succeeded
one, that it may not have been.

Revision ID: 0008_catch_up
Revises: 0007_no_database_functions
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_catch_up"
down_revision = "0007_no_database_functions"
branch_labels = None
depends_on = None

REVIEW_REASONS = (
    "reason IN ('amount_mismatch', 'no_final_answer', 'outcome_conflict', 'refund_conflict', "
    "'second_payment', 'sender_id_conflict', 'success_after_cancel', "
    "'success_on_cancelled_order')"
)
OLD_REVIEW_REASONS = (
    "reason IN ('amount_mismatch', 'outcome_conflict', 'refund_conflict', 'second_payment', "
    "'success_after_cancel', 'success_on_cancelled_order')"
)
MONEY = "money IS NULL OR money IN ('maybe_not_taken', 'taken')"
OPEN_PAYMENTS = "status IN ('initiated', 'pending') OR awaiting_confirmation"
OPEN_REFUNDS = "status IN ('initiated', 'pending')"
# What each finding about a payment says of its money (the rest say nothing).
MONEY_OF_FINDINGS = """
UPDATE review_items SET money = CASE
    WHEN reason IN ('success_after_cancel', 'success_on_cancelled_order') THEN 'taken'
    WHEN reason = 'second_payment' AND payment_id IS NOT NULL THEN 'taken'
    WHEN reason = 'amount_mismatch' AND subject LIKE '%\\:succeeded' THEN
        CASE WHEN (SELECT status FROM payments WHERE payments.id = review_items.payment_id)
                  = 'succeeded' THEN NULL ELSE 'taken' END
    WHEN reason = 'amount_mismatch' AND subject LIKE '%\\:failed' THEN 'maybe_not_taken'
    WHEN reason = 'outcome_conflict' THEN
        CASE WHEN (SELECT status FROM payments WHERE payments.id = review_items.payment_id)
                  = 'succeeded' THEN 'maybe_not_taken' ELSE 'taken' END
END
WHERE resolved_at IS NULL AND payment_id IS NOT NULL
"""


def upgrade() -> None:
    for table, open_rows in (("payments", OPEN_PAYMENTS), ("refunds", OPEN_REFUNDS)):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True)))
            batch.add_column(
                sa.Column("checks_made", sa.Integer(), nullable=False, server_default="0")
            )
        op.create_index(
            f"ix_{table}_next_check_at",
            table,
            ["next_check_at"],
            postgresql_where=sa.text("next_check_at IS NOT NULL"),
            sqlite_where=sa.text("next_check_at IS NOT NULL"),
        )
        op.execute(f"UPDATE {table} SET next_check_at = updated_at WHERE {open_rows}")
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("money", sa.String(length=16), nullable=True))
        batch.drop_constraint(op.f("ck_review_items_reason_known"), type_="check")
        batch.create_check_constraint(op.f("ck_review_items_reason_known"), REVIEW_REASONS)
        batch.create_check_constraint(op.f("ck_review_items_money_known"), MONEY)
    op.execute(MONEY_OF_FINDINGS)


def downgrade() -> None:
    held = op.get_bind().execute(
        sa.text(
            "SELECT count(*) FROM review_items"
            " WHERE reason IN ('no_final_answer', 'sender_id_conflict')"
        )
    )
    if held.scalar_one():
        raise RuntimeError(
            "this database holds review items of reasons the schema before 0008 does not "
            "know (no_final_answer, sender_id_conflict); downgrading would lose them"
        )
    with op.batch_alter_table("review_items") as batch:
        batch.drop_constraint(op.f("ck_review_items_money_known"), type_="check")
        batch.drop_constraint(op.f("ck_review_items_reason_known"), type_="check")
        batch.create_check_constraint(op.f("ck_review_items_reason_known"), OLD_REVIEW_REASONS)
        batch.drop_column("money")
    for table in ("refunds", "payments"):
        op.drop_index(f"ix_{table}_next_check_at", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("checks_made")
            batch.drop_column("next_check_at")
