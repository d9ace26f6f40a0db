"""`orderpay product create|list`: exact prices, shapes of DESIGN.md section 8, and bad input
refused with nothing stored (section 7)."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import select

from orderpay.store.db import Database
from orderpay.store.schema import products
from tests.conftest import (
    Cli,
    count_rows,
)


def test_product_create_prints_the_product_with_its_exact_price(any_cli: Cli) -> None:
    product = any_cli.ok(
        "product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "GHS"
    )

    assert uuid.UUID(product["id"])
    assert {k: product[k] for k in ("name", "price", "currency")} == {
        "name": "Kenkey",
        "price": "12.50",
        "currency": "GHS",
    }
    assert datetime.fromisoformat(product["created_at"]).utcoffset() is not None


def test_product_price_is_stored_in_minor_units(any_cli: Cli, any_db: Database) -> None:
    product = any_cli.ok(
        "product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "GHS"
    )

    with any_db.transaction() as conn:
        stored = conn.execute(
            select(products.c.price, products.c.currency).where(
                products.c.id == uuid.UUID(product["id"])
            )
        ).one()
    assert tuple(stored) == (1250, "GHS")


def test_product_in_a_currency_without_decimals_keeps_whole_units(cli: Cli) -> None:
    product = cli.ok("product", "create", "--name", "Rolex", "--price", "3000", "--currency", "UGX")

    assert (product["price"], product["currency"]) == ("3000", "UGX")


def test_product_price_is_shown_with_the_currency_decimals(cli: Cli) -> None:
    product = cli.ok(
        "product", "create", "--name", "Kenkey", "--price", "12.5", "--currency", "GHS"
    )

    assert product["price"] == "12.50"


def test_product_currency_is_case_insensitive(cli: Cli) -> None:
    product = cli.ok(
        "product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "ghs"
    )

    assert product["currency"] == "GHS"


def test_a_free_product_is_refused_because_its_orders_could_never_be_charged(
    cli: Cli, db: Database
) -> None:
    before = count_rows(db)

    outcome = cli(
        "product",
        "create",
        "--name",
        "Sachet water",
        "--price",
        "0",
        "--currency",
        "GHS",
        "--json",
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_amount"
    assert "more than zero" in outcome.error()["message"]
    assert count_rows(db) == before


def test_product_create_without_json_prints_a_table_on_stdout(cli: Cli) -> None:
    outcome = cli("product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "GHS")

    assert outcome.exit_code == 0
    assert "Kenkey" in outcome.stdout
    assert "12.50 GHS" in outcome.stdout


def test_product_list_shows_products_newest_first(any_cli: Cli) -> None:
    kenkey = any_cli.ok(
        "product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "GHS"
    )
    rolex = any_cli.ok(
        "product", "create", "--name", "Rolex", "--price", "3000", "--currency", "UGX"
    )

    listed = any_cli.items("product", "list")

    assert listed == [rolex, kenkey]


def test_product_list_of_an_empty_shop_is_an_empty_list(any_cli: Cli) -> None:
    listed = any_cli.items("product", "list")

    assert listed == []


@pytest.mark.parametrize(
    ("price", "currency", "code"),
    [
        ("12.505", "GHS", "invalid_amount"),
        ("10.5", "UGX", "invalid_amount"),
        ("-1.00", "GHS", "invalid_amount"),
        ("NaN", "GHS", "invalid_amount"),
        ("1e3", "UGX", "invalid_amount"),
        ("abc", "GHS", "invalid_amount"),
        ("", "GHS", "invalid_amount"),
        ("1" * 40, "UGX", "invalid_amount"),
        ("12.50", "XYZ", "unknown_currency"),
    ],
    ids=[
        "three-decimals-GHS",
        "decimals-UGX",
        "negative",
        "nan",
        "exponent",
        "words",
        "empty",
        "too-large",
        "unknown-code",
    ],
)
def test_bad_price_is_refused_with_exit_2_and_nothing_is_stored(
    cli: Cli, db: Database, price: str, currency: str, code: str
) -> None:
    before = count_rows(db)

    outcome = cli(
        "product", "create", "--name", "Kenkey", "--price", price, "--currency", currency, "--json"
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == code
    assert outcome.stdout == ""
    assert count_rows(db) == before


def test_price_with_too_many_decimals_is_refused_and_nothing_is_stored_on_either_database(
    any_cli: Cli, any_db: Database
) -> None:
    any_cli.ok("product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "GHS")
    before = count_rows(any_db)

    outcome = any_cli(
        "product", "create", "--name", "Kenkey", "--price", "12.505", "--currency", "GHS", "--json"
    )

    assert (outcome.exit_code, outcome.error()["code"]) == (2, "invalid_amount")
    assert count_rows(any_db) == before


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (("--name", ""), "invalid_field"),
        (("--name", "   "), "invalid_field"),
        (("--name", "K" * 201), "invalid_field"),
        (("--name", "Kenkey", "--description", "d" * 2001), "invalid_field"),
    ],
    ids=["name-empty", "name-blank", "name-201-chars", "description-2001-chars"],
)
def test_bad_product_text_is_refused_with_exit_2_and_nothing_is_stored(
    cli: Cli, db: Database, options: tuple[str, ...], code: str
) -> None:
    before = count_rows(db)

    outcome = cli("product", "create", *options, "--price", "12.50", "--currency", "GHS", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == code
    assert count_rows(db) == before


def test_a_description_with_a_nul_character_is_refused_and_nothing_is_stored(
    cli: Cli, db: Database
) -> None:
    before = count_rows(db)

    outcome = cli(
        "product",
        "create",
        "--name",
        "Kenkey",
        "--price",
        "12.50",
        "--currency",
        "GHS",
        "--description",
        "spicy\x00",
        "--json",
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(db) == before
