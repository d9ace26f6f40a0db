"""Customers and products over a shop's working day: shown, found, corrected, retired, and a
customer never created twice by accident."""

from __future__ import annotations

import pytest

from orderpay.store.db import Database
from tests.builders import a_customer, a_product, an_order
from tests.conftest import Cli, count_rows

AMA_LOCAL = "0241234567"


# --- Customers -------------------------------------------------------------------------------


def test_customer_show_prints_the_customer(cli: Cli, db: Database) -> None:
    made = a_customer(db, name="Ama Mensah")

    shown = cli.ok("customer", "show", str(made.id))

    assert (shown["id"], shown["name"], shown["phone"]) == (made.id, "Ama Mensah", made.phone)


def test_customer_show_of_an_unknown_customer_is_exit_3(cli: Cli) -> None:
    outcome = cli("customer", "show", "4242", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "customer_not_found"


def test_a_phone_a_customer_already_has_is_refused_and_nothing_is_stored(
    cli: Cli, db: Database
) -> None:
    existing = a_customer(db)
    before = count_rows(db)

    outcome = cli("customer", "create", "--name", "Ama M.", "--phone", AMA_LOCAL, "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "customer_exists"
    assert outcome.error()["customer"] == existing.id
    assert "--allow-duplicate" in outcome.error()["message"]
    assert count_rows(db) == before


def test_allow_duplicate_creates_a_second_customer_with_the_phone(cli: Cli, db: Database) -> None:
    existing = a_customer(db)

    made = cli.ok(
        "customer", "create", "--name", "Ama M.", "--phone", AMA_LOCAL, "--allow-duplicate"
    )

    assert made["id"] != existing.id
    assert made["phone"] == existing.phone


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("--name", "Ama K. Mensah", "Ama K. Mensah"),
        ("--phone", "020 123 4567", "+233201234567"),
        ("--email", "ama@example.com", "ama@example.com"),
    ],
    ids=["name", "phone", "email"],
)
def test_customer_update_corrects_one_field(
    cli: Cli, db: Database, field: str, value: str, stored: str
) -> None:
    made = a_customer(db)

    updated = cli.ok("customer", "update", str(made.id), field, value)

    assert updated[field.removeprefix("--")] == stored
    assert cli.ok("customer", "show", str(made.id)) == updated


@pytest.mark.parametrize(
    "args",
    [(), ("--phone", "12"), ("--email", "not-an-email"), ("--name", "")],
    ids=["nothing", "bad-phone", "bad-email", "empty-name"],
)
def test_a_bad_customer_update_is_exit_2_and_changes_nothing(
    cli: Cli, db: Database, args: tuple[str, ...]
) -> None:
    made = a_customer(db)
    before = cli.ok("customer", "show", str(made.id))

    outcome = cli("customer", "update", str(made.id), *args, "--json")

    assert outcome.exit_code == 2
    assert cli.ok("customer", "show", str(made.id)) == before


def test_giving_a_customer_another_customers_phone_is_refused_and_changes_nothing(
    cli: Cli, db: Database
) -> None:
    ama = a_customer(db, name="Ama Mensah", phone="+233241234567")
    kofi = a_customer(db, name="Kofi Boateng", phone="+233201234567")
    before = cli.ok("customer", "show", str(kofi.id))

    outcome = cli("customer", "update", str(kofi.id), "--phone", "024 123 4567", "--json")

    assert (outcome.exit_code, outcome.error()["code"]) == (4, "customer_exists")
    assert outcome.error()["customer"] == ama.id
    assert cli.ok("customer", "show", str(kofi.id)) == before


def test_allow_duplicate_gives_a_customer_a_phone_another_customer_has(
    cli: Cli, db: Database
) -> None:
    a_customer(db, name="Ama Mensah", phone="+233241234567")
    kofi = a_customer(db, name="Kofi Boateng", phone="+233201234567")

    updated = cli.ok(
        "customer", "update", str(kofi.id), "--phone", "0241234567", "--allow-duplicate"
    )

    assert updated["phone"] == "+233241234567"


def test_a_customer_keeps_its_own_phone_when_updated_with_it(cli: Cli, db: Database) -> None:
    ama = a_customer(db, name="Ama Mensah", phone="+233241234567")

    updated = cli.ok("customer", "update", str(ama.id), "--phone", "0241234567")

    assert updated["phone"] == "+233241234567"


@pytest.mark.parametrize("term", ["mensah", "AMA", "024 123 4567", "+233241234567", "4567"])
def test_customer_list_search_finds_by_name_or_any_form_of_the_phone(
    cli: Cli, db: Database, term: str
) -> None:
    ama = a_customer(db, name="Ama Mensah")
    a_customer(db, name="Kofi Boateng", phone="+233209876543")

    found = cli.items("customer", "list", "--search", term)

    assert [c["id"] for c in found] == [ama.id]


def test_customer_list_search_takes_percent_signs_literally(cli: Cli, db: Database) -> None:
    a_customer(db, name="Ama Mensah")

    assert cli.items("customer", "list", "--search", "%") == []


# --- Products --------------------------------------------------------------------------------


def test_product_show_takes_the_start_of_its_id(cli: Cli, db: Database) -> None:
    made = a_product(db, name="Kenkey")

    shown = cli.ok("product", "show", str(made.id)[:8])

    assert (shown["id"], shown["name"], shown["price"]) == (str(made.id), "Kenkey", "12.50")


def test_a_new_price_applies_to_new_orders_and_existing_orders_keep_theirs(
    cli: Cli, db: Database
) -> None:
    product = a_product(db, price="12.50")
    customer = a_customer(db)
    before = cli.ok("order", "create", "--customer", str(customer.id), "--item", f"{product.id}:2")

    cli.ok("product", "update", str(product.id), "--price", "14.00")
    after = cli.ok("order", "create", "--customer", str(customer.id), "--item", f"{product.id}:2")

    assert cli.ok("order", "show", before["id"])["total_amount"] == "25.00"
    assert after["total_amount"] == "28.00"


def test_an_inactive_product_cannot_be_ordered_until_it_is_active_again(
    cli: Cli, db: Database
) -> None:
    product = a_product(db)
    customer = a_customer(db)
    order = ["order", "create", "--customer", str(customer.id), "--item", str(product.id)]

    retired = cli.ok("product", "update", str(product.id)[:8], "--inactive")
    refused = cli(*order, "--json")
    cli.ok("product", "update", str(product.id), "--active")
    ordered = cli(*order, "--json")

    assert retired["active"] is False
    assert (refused.exit_code, refused.error()["code"]) == (4, "product_inactive")
    assert ordered.exit_code == 0, ordered.stderr


def test_product_list_filters_by_activity_and_searches_names(cli: Cli, db: Database) -> None:
    kenkey, sobolo = a_product(db, name="Kenkey"), a_product(db, name="Sobolo")
    cli.ok("product", "update", str(sobolo.id), "--inactive")

    active = cli.items("product", "list", "--active")
    retired = cli.items("product", "list", "--inactive")
    found = cli.items("product", "list", "--search", "KEN")

    assert [p["id"] for p in active] == [str(kenkey.id)]
    assert [p["id"] for p in retired] == [str(sobolo.id)]
    assert [p["id"] for p in found] == [str(kenkey.id)]


@pytest.mark.parametrize(
    "args",
    [(), ("--price", "0"), ("--price", "12.505"), ("--name", "")],
    ids=["nothing", "zero-price", "too-many-decimals", "empty-name"],
)
def test_a_bad_product_update_is_exit_2_and_changes_nothing(
    cli: Cli, db: Database, args: tuple[str, ...]
) -> None:
    made = a_product(db)
    before = cli.ok("product", "show", str(made.id))

    outcome = cli("product", "update", str(made.id), *args, "--json")

    assert outcome.exit_code == 2
    assert cli.ok("product", "show", str(made.id)) == before


def test_renaming_a_product_shows_in_the_orders_made_with_it(cli: Cli, db: Database) -> None:
    order = an_order(db, product="Kenkey")
    (item,) = cli.ok("order", "show", str(order.id))["items"]

    cli.ok("product", "update", item["product"], "--name", "Kenkey (Ga)")

    (renamed,) = cli.ok("order", "show", str(order.id))["items"]
    assert renamed["name"] == "Kenkey (Ga)"
    assert renamed["unit_price"] == item["unit_price"]
