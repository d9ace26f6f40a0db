"""A product's price is more than zero (DESIGN.md section 3: price > 0).

An order of products priced 0 totals 0 and can never be charged (a payment's amount is more
than zero), so the schema now refuses such a price, as the services already do.

Products priced 0 before this revision cannot keep that price under the new rule. They are
not deleted (orders refer to them) and no price is made up for them to be sold at: each is
deactivated (an inactive product cannot be ordered), its price is set to the smallest unit (1)
only so the row satisfies the rule, and its description says so, for whoever lists or shows
it: the merchant sets the real price (`orderpay product update ID --price ...`) before
reactivating it. Orders already made keep their own unit prices (order_items), untouched.
Refusing the upgrade instead would leave the operator no way out but SQL (every command
refuses to run on a schema that is behind), and a constraint left NOT VALID would exist on
Postgres only and make any later update of such a row fail.

Downgrading restores the old rule (price >= 0); it does not give those products back their
zero price.

Revision ID: 0003_price_positive
Revises: 0002_ledger_integrity
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_price_positive"
down_revision = "0002_ledger_integrity"
branch_labels = None
depends_on = None

ZERO_PRICE_NOTE = (
    "[orderpay 0003: this product was priced 0, which can never be charged; it was deactivated "
    "and its price set to the smallest unit. Set its real price with `orderpay product update "
    "ID --price ...` before reactivating it.]"
)

_products = sa.table(
    "products",
    sa.column("price", sa.BigInteger()),
    sa.column("active", sa.Boolean()),
    sa.column("description", sa.Text()),
)


def upgrade() -> None:
    description = _products.c.description
    op.execute(
        _products.update()
        .where(_products.c.price == 0)
        .values(
            active=False,
            price=1,
            description=sa.case(
                (description == "", sa.literal(ZERO_PRICE_NOTE)),
                else_=description + sa.literal("\n\n" + ZERO_PRICE_NOTE),
            ),
        )
    )
    # Batch mode: SQLite cannot alter a constraint in place and rebuilds the table.
    with op.batch_alter_table("products") as batch:
        batch.drop_constraint(op.f("ck_products_price_not_negative"), type_="check")
        batch.create_check_constraint(op.f("ck_products_price_positive"), "price > 0")


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_constraint(op.f("ck_products_price_positive"), type_="check")
        batch.create_check_constraint(op.f("ck_products_price_not_negative"), "price >= 0")
