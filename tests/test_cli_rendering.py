"""Human output on an ordinary terminal: tables fit 80 columns and never cut what matters.

Amounts with their currency, statuses, phone numbers, keys and (short) ids are printed whole,
or the row is printed as a block; times carry their zone. `order show` tells the order's story.
Run through the CLI with COLUMNS set, as a terminal of that width would.
"""

from __future__ import annotations

import re

import pytest

from orderpay.store.db import Database
from tests.builders import a_key, an_order
from tests.conftest import Cli
from tests.live_server import a_pending_payment

WIDTHS = ["80", "120"]
# A long key, as operators make them: the one `order show` tells them to re-run.
LONG_KEY = "shop-2026-11-29-order-000123-attempt-2"


def lines_of(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture
def paid_order(cli: Cli, db: Database) -> str:
    """An order with a long product name, a succeeded payment and a long key."""
    order = an_order(db, price="1234567.89", quantity=3, product="Kenkey and fried fish (large)")
    cli.ok("charge", str(order.id), "--key", LONG_KEY)
    return str(order.id)


@pytest.mark.parametrize("columns", WIDTHS)
def test_payment_list_fits_the_terminal_and_keeps_every_amount_whole(
    cli: Cli, db: Database, columns: str
) -> None:
    for _ in range(3):
        a_pending_payment(db)

    outcome = cli("payment", "list", COLUMNS=columns)

    assert outcome.exit_code == 0, outcome.stderr
    assert all(len(line) <= int(columns) for line in lines_of(outcome.stdout))
    assert outcome.stdout.count("25.00 GHS") == 3
    assert outcome.stdout.count("pending") == 3
    assert "…" not in outcome.stdout


@pytest.mark.parametrize("columns", WIDTHS)
def test_order_show_fits_the_terminal_and_keeps_amounts_and_the_key_whole(
    cli: Cli, paid_order: str, columns: str
) -> None:
    outcome = cli("order", "show", paid_order, COLUMNS=columns)

    assert outcome.exit_code == 0, outcome.stderr
    assert all(len(line) <= int(columns) for line in lines_of(outcome.stdout))
    assert "…" not in outcome.stdout
    assert "3,703,703.67 GHS" in outcome.stdout or "3703703.67 GHS" in outcome.stdout
    assert "1234567.89 GHS" in outcome.stdout  # the unit price, whole
    assert LONG_KEY in outcome.stdout


def test_order_show_tells_the_orders_story(cli: Cli, paid_order: str) -> None:
    outcome = cli("order", "show", paid_order, COLUMNS="120")

    text = outcome.stdout
    assert "Ama Mensah" in text
    assert "+233*****4567" in text  # the customer's phone, masked
    assert "+233241234567" not in text  # nowhere in full: not in payments, not in the order events
    assert "Kenkey and fried fish (large)" in text  # items by name
    assert "simulator" in text  # the payment's provider
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", text)  # times with their zone


def test_order_show_counts_products_not_units(cli: Cli, paid_order: str) -> None:
    outcome = cli("order", "show", paid_order, COLUMNS="120")

    assert "1 product (3 units)" in outcome.stdout
    assert "3 items" not in outcome.stdout


def test_a_table_too_narrow_for_its_essentials_is_printed_as_blocks(cli: Cli, db: Database) -> None:
    a_pending_payment(db)

    outcome = cli("payment", "list", COLUMNS="30")

    assert outcome.exit_code == 0, outcome.stderr
    assert "25.00 GHS" in outcome.stdout
    assert re.search(r"^status\s+pending$", outcome.stdout, re.MULTILINE)


def test_columns_left_out_at_this_width_are_named(cli: Cli, db: Database) -> None:
    a_pending_payment(db)

    outcome = cli("payment", "list", COLUMNS="80")

    assert "not shown at this width:" in outcome.stdout
    assert "--json" in outcome.stdout


@pytest.mark.parametrize(
    "command",
    [
        ("customer", "list"),
        ("product", "list"),
        ("order", "list"),
        ("payment", "list"),
        ("notification", "list"),
    ],
    ids=lambda c: " ".join(c),
)
def test_an_empty_list_says_so(cli: Cli, command: tuple[str, ...]) -> None:
    outcome = cli(*command)

    assert outcome.exit_code == 0, outcome.stderr
    assert re.search(r": no \w+", outcome.stdout), outcome.stdout


def test_lists_show_short_ids_that_commands_take_back(cli: Cli, db: Database) -> None:
    payment = a_pending_payment(db)
    short = str(payment.id)[:8]

    listed = cli("payment", "list", COLUMNS="80")
    shown = cli.ok("payment", "show", short)

    assert short in listed.stdout
    assert str(payment.id) not in listed.stdout
    assert shown["id"] == str(payment.id)


def test_the_key_to_re_run_is_printed_whole_in_payment_list_at_120_columns(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    cli.ok("charge", str(order.id), "--key", LONG_KEY)
    cli.ok("charge", str(an_order(db).id), "--key", a_key())

    outcome = cli("payment", "list", COLUMNS="120")

    assert LONG_KEY in outcome.stdout
