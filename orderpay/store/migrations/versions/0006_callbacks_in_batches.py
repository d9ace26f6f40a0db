"""Once: a database function that settled batches of signed callbacks. Now nothing.

See 0005: the function is dropped by 0007 where an earlier run of this revision created it.

Revision ID: 0006_callbacks_in_batches
Revises: 0005_callback_in_one_trip
Create Date: 2026-11-30
"""

from __future__ import annotations

revision = "0006_callbacks_in_batches"
down_revision = "0005_callback_in_one_trip"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
