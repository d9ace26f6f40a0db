"""The callback functions of revisions 0005 and 0006 dropped: no rule lives in the database.

Every write is made by the Python module that owns its table (tests/test_layout.py checks
that the schema holds no function). Downgrading puts nothing back: code of revisions 0005
and 0006 settles callbacks without the functions when they are missing.

Revision ID: 0007_no_database_functions
Revises: 0006_callbacks_in_batches
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0007_no_database_functions"
down_revision = "0006_callbacks_in_batches"
branch_labels = None
depends_on = None

# The functions as the earlier runs of 0005 and 0006 created them (their signatures).
DROPPED = (
    "orderpay_settle_callback(text, text, text, uuid, uuid, text, text, numeric, text, text, "
    "text, text, timestamptz, text[], text[], integer[])",
    "orderpay_settle_callbacks(text[], text[], text[], uuid[], uuid[], text[], text[], "
    "numeric[], text[], text[], text, text, timestamptz, text[], text[], integer[])",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in DROPPED:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")


def downgrade() -> None:
    pass
