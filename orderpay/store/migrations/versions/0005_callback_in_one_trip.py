"""Once: a database function that settled one signed callback. Now nothing.

The function repeated in PL/pgSQL the rules that live in Python; the listener now settles
batches of callbacks with SQL built from the ordinary path's own statements. A database that
ran this revision when it created the function has it dropped by 0007; code of any revision
falls back to the ordinary path where the function is missing, so no revision needs it.

Revision ID: 0005_callback_in_one_trip
Revises: 0004_refunds_review
Create Date: 2026-11-30
"""

from __future__ import annotations

revision = "0005_callback_in_one_trip"
down_revision = "0004_refunds_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
