"""`orderpay order create|show|list|cancel`: computed totals, the order events, filters, the
cancellation rules (DESIGN.md section 4), and bad input refused with nothing stored."""

from __future__ import annotations

import json
import uuid

import pytest

from orderpay import errors
from orderpay.store.db import Database
from tests.builders import AMA, a_customer, a_key, a_product, an_order
from tests.conftest import (
    Cli,
    count_rows,
)

UNKNOWN_ORDER = "00000000-0000-4000-8000-000000000042"


def invalid_input_codes() -> set[str]:
    """The codes of the invalid-input row of DESIGN.md section 7 (exit 2)."""
    found = {errors.InvalidInput.code}
    pending = [errors.InvalidInput]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub.code)
            pending.append(sub)
    return found


def test_order_total_is_computed_from_the_product_price(any_cli: Cli, any_db: Database) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db, price="12.50", currency="GHS")

    order = any_cli.ok(
        "order", "create", "--customer", str(customer.id), "--item", f"{kenkey.id}:2"
    )

    assert (order["total_amount"], order["currency"]) == ("25.00", "GHS")


def test_order_create_prints_the_order_shape(any_cli: Cli, any_db: Database) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db, price="12.50", currency="GHS")

    order = any_cli.ok(
        "order", "create", "--customer", str(customer.id), "--item", f"{kenkey.id}:2"
    )

    assert uuid.UUID(order["id"])
    assert (order["customer"], order["status"]) == (customer.id, "pending")
    assert order["items"] == [
        {
            "product": str(kenkey.id),
            "name": "Kenkey",
            "quantity": 2,
            "unit_price": "12.50",
            "line_total": "25.00",
        }
    ]
    assert (order["payments"], order["notifications"]) == ([], [])
    assert {"created_at", "updated_at", "events"} <= order.keys()


def test_order_item_without_quantity_counts_one(cli: Cli, db: Database) -> None:
    customer = a_customer(db)
    kenkey = a_product(db, price="12.50")

    order = cli.ok("order", "create", "--customer", str(customer.id), "--item", str(kenkey.id))

    assert (order["items"][0]["quantity"], order["total_amount"]) == (1, "12.50")


def test_order_total_adds_up_several_products(cli: Cli, db: Database) -> None:
    customer = a_customer(db)
    kenkey = a_product(db, name="Kenkey", price="12.50")
    banku = a_product(db, name="Banku", price="7.25")

    order = cli.ok(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:2",
        "--item",
        f"{banku.id}:3",
    )

    assert order["total_amount"] == "46.75"


def test_order_in_a_currency_without_decimals_totals_whole_units(cli: Cli, db: Database) -> None:
    customer = a_customer(db)
    rolex = a_product(db, name="Rolex", price="3000", currency="UGX")

    order = cli.ok("order", "create", "--customer", str(customer.id), "--item", f"{rolex.id}:2")

    assert (order["total_amount"], order["currency"]) == ("6000", "UGX")


def test_repeated_item_of_one_product_merges_the_quantities(any_cli: Cli, any_db: Database) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db, price="12.50")

    order = any_cli.ok(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:1",
        "--item",
        f"{kenkey.id}:2",
    )

    assert order["items"] == [
        {
            "product": str(kenkey.id),
            "name": "Kenkey",
            "quantity": 3,
            "unit_price": "12.50",
            "line_total": "37.50",
        }
    ]
    assert order["total_amount"] == "37.50"


def test_order_create_starts_the_timeline_with_order_created(cli: Cli, db: Database) -> None:
    customer = a_customer(db)
    kenkey = a_product(db)

    order = cli.ok("order", "create", "--customer", str(customer.id), "--item", f"{kenkey.id}:2")

    assert [event["event"] for event in order["events"]] == ["order_created"]


def test_order_create_stores_one_order_and_its_items(cli: Cli, db: Database) -> None:
    customer = a_customer(db)
    kenkey = a_product(db, name="Kenkey")
    banku = a_product(db, name="Banku")
    before = count_rows(db)

    cli.ok(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:2",
        "--item",
        f"{banku.id}",
    )

    after = count_rows(db)
    assert (after["orders"] - before["orders"], after["order_items"] - before["order_items"]) == (
        1,
        2,
    )


@pytest.mark.parametrize("quantity", ["0", "-1", "abc", "2.5", "1000001"])
def test_bad_quantity_is_refused_with_exit_2_and_nothing_is_stored(
    cli: Cli, db: Database, quantity: str
) -> None:
    customer = a_customer(db)
    kenkey = a_product(db)
    before = count_rows(db)

    outcome = cli(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:{quantity}",
        "--json",
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_quantity"
    assert count_rows(db) == before


def test_quantity_zero_is_refused_and_nothing_is_stored_on_either_database(
    any_cli: Cli, any_db: Database
) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db)
    before = count_rows(any_db)

    outcome = any_cli(
        "order", "create", "--customer", str(customer.id), "--item", f"{kenkey.id}:0", "--json"
    )

    assert (outcome.exit_code, outcome.error()["code"]) == (2, "invalid_quantity")
    assert count_rows(any_db) == before


def test_merged_quantity_over_the_maximum_is_refused_and_nothing_is_stored(
    cli: Cli, db: Database
) -> None:
    customer = a_customer(db)
    kenkey = a_product(db)
    before = count_rows(db)

    outcome = cli(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:600000",
        "--item",
        f"{kenkey.id}:600000",
        "--json",
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_quantity"
    assert count_rows(db) == before


@pytest.mark.parametrize(
    "item", ["kenkey", ":2", "123:1", "12345678-1234-1234-1234-12345678901234:1"]
)
def test_malformed_product_id_is_refused_with_exit_2_and_nothing_is_stored(
    cli: Cli, db: Database, item: str
) -> None:
    customer = a_customer(db)
    before = count_rows(db)

    outcome = cli("order", "create", "--customer", str(customer.id), "--item", item, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert count_rows(db) == before


@pytest.mark.parametrize("customer_id", ["999999", "0", "99999999999999999999"])
def test_unknown_customer_is_refused_with_exit_3_and_nothing_is_stored(
    cli: Cli, db: Database, customer_id: str
) -> None:
    kenkey = a_product(db)
    before = count_rows(db)

    outcome = cli(
        "order", "create", "--customer", customer_id, "--item", f"{kenkey.id}:2", "--json"
    )

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "customer_not_found"
    assert count_rows(db) == before


def test_unknown_product_is_refused_with_exit_3_and_nothing_is_stored(
    any_cli: Cli, any_db: Database
) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db)
    before = count_rows(any_db)

    outcome = any_cli(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:1",
        "--item",
        f"{uuid.uuid4()}:1",
        "--json",
    )

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "product_not_found"
    assert count_rows(any_db) == before


def test_items_in_two_currencies_are_refused_with_exit_2_and_nothing_is_stored(
    any_cli: Cli, any_db: Database
) -> None:
    customer = a_customer(any_db)
    kenkey = a_product(any_db, name="Kenkey", price="12.50", currency="GHS")
    rolex = a_product(any_db, name="Rolex", price="3000", currency="UGX")
    before = count_rows(any_db)

    outcome = any_cli(
        "order",
        "create",
        "--customer",
        str(customer.id),
        "--item",
        f"{kenkey.id}:1",
        "--item",
        f"{rolex.id}:1",
        "--json",
    )

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "currency_mismatch"
    assert count_rows(any_db) == before


def test_order_without_any_item_is_refused_with_exit_2_and_nothing_is_stored(
    any_cli: Cli, any_db: Database
) -> None:
    customer = a_customer(any_db)
    before = count_rows(any_db)

    outcome = any_cli("order", "create", "--customer", str(customer.id), "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] in invalid_input_codes()
    assert "item" in outcome.error()["message"]
    assert count_rows(any_db) == before


def test_order_show_prints_the_timeline(cli: Cli, db: Database) -> None:
    order = an_order(db)

    outcome = cli("order", "show", str(order.id))

    assert outcome.exit_code == 0
    assert "order_created" in outcome.stdout
    assert "25.00 GHS" in outcome.stdout


def test_order_show_json_has_the_order_created_event(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)

    shown = any_cli.ok("order", "show", str(order.id))

    assert shown["id"] == str(order.id)
    assert shown["total_amount"] == "25.00"
    assert [e["event"] for e in shown["events"]] == ["order_created"]
    assert set(shown["events"][0]) >= {"at", "event", "detail"}


def test_order_show_of_an_unknown_order_exits_3(any_cli: Cli) -> None:
    outcome = any_cli("order", "show", UNKNOWN_ORDER, "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "order_not_found"


def test_order_show_of_a_malformed_id_exits_2(cli: Cli) -> None:
    outcome = cli("order", "show", "order-42", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"


def test_order_list_shows_orders_newest_first(any_cli: Cli, any_db: Database) -> None:
    first = an_order(any_db)
    second = an_order(any_db)

    listed = any_cli.items("order", "list")

    assert [o["id"] for o in listed] == [str(second.id), str(first.id)]


def test_order_list_filters_by_status(cli: Cli, db: Database) -> None:
    cancelled = an_order(db)
    pending = an_order(db)
    cli.ok("order", "cancel", str(cancelled.id), "--yes")

    listed = cli.items("order", "list", "--status", "pending")

    assert [o["id"] for o in listed] == [str(pending.id)]


def test_order_list_filters_by_cancelled_status(cli: Cli, db: Database) -> None:
    cancelled = an_order(db)
    an_order(db)
    cli.ok("order", "cancel", str(cancelled.id), "--yes")

    listed = cli.items("order", "list", "--status", "cancelled")

    assert [(o["id"], o["status"]) for o in listed] == [(str(cancelled.id), "cancelled")]


def test_order_list_filters_by_customer(cli: Cli, db: Database) -> None:
    amas = an_order(db)
    an_order(db, phone="+233201234567")

    listed = cli.items("order", "list", "--customer", str(amas.customer_id))

    assert [o["id"] for o in listed] == [str(amas.id)]


def test_order_list_phone_in_local_form_matches_the_stored_e164(
    any_cli: Cli, any_db: Database
) -> None:
    amas = an_order(any_db, phone=AMA)
    an_order(any_db, phone="+233201234567")

    listed = any_cli.items("order", "list", "--phone", "024 123 4567")

    assert [o["id"] for o in listed] == [str(amas.id)]


def test_order_list_phone_of_nobody_lists_nothing(cli: Cli, db: Database) -> None:
    an_order(db, phone=AMA)

    listed = cli.items("order", "list", "--phone", "0271234567")

    assert listed == []


def test_order_list_with_an_invalid_phone_exits_2(cli: Cli) -> None:
    outcome = cli("order", "list", "--phone", "12", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_phone"


def test_order_list_json_carries_full_order_shapes(cli: Cli, db: Database) -> None:
    order = an_order(db)

    listed = cli.items("order", "list")

    assert listed[0]["items"][0]["quantity"] == 2
    assert listed[0]["total_amount"] == "25.00"
    assert [e["event"] for e in listed[0]["events"]] == ["order_created"]
    assert listed[0]["id"] == str(order.id)


def test_order_cancel_cancels_a_pending_order(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)

    cancelled = any_cli.ok("order", "cancel", str(order.id), "--yes")

    assert cancelled["status"] == "cancelled"
    assert [e["event"] for e in cancelled["events"]] == ["order_created", "order_cancelled"]


def test_order_cancel_twice_is_harmless(any_cli: Cli, any_db: Database) -> None:
    order = an_order(any_db)
    any_cli.ok("order", "cancel", str(order.id), "--yes")

    again = any_cli.ok("order", "cancel", str(order.id), "--yes")

    assert again["status"] == "cancelled"
    assert [e["event"] for e in again["events"]] == ["order_created", "order_cancelled"]


def test_order_cancel_with_a_payment_in_flight_is_refused_with_exit_4(
    any_cli: Cli, any_db: Database
) -> None:
    order = an_order(any_db)
    any_cli.ok("charge", str(order.id), "--key", a_key())

    outcome = any_cli("order", "cancel", str(order.id), "--yes", "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "payment_in_progress"


def test_order_with_a_payment_in_flight_stays_pending_after_a_refused_cancel(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    cli.ok("charge", str(order.id), "--key", a_key())
    before = count_rows(db)

    cli("order", "cancel", str(order.id), "--yes", "--json")

    shown = cli.ok("order", "show", str(order.id))
    assert shown["status"] == "pending"
    assert "order_cancelled" not in [e["event"] for e in shown["events"]]
    assert count_rows(db) == before


def test_order_cancel_of_an_unknown_order_exits_3(cli: Cli) -> None:
    outcome = cli("order", "cancel", UNKNOWN_ORDER, "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "order_not_found"


def test_order_cancel_asks_first_and_without_a_terminal_changes_nothing(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    before = count_rows(db)

    outcome = cli("order", "cancel", str(order.id), "--json")

    assert (outcome.exit_code, outcome.error()["code"]) == (2, "confirmation_required")
    assert "Cancel order" in outcome.error()["message"]
    assert count_rows(db) == before


def test_order_cancel_of_a_cancelled_order_says_so_without_asking(cli: Cli, db: Database) -> None:
    order = an_order(db)
    cli.ok("order", "cancel", str(order.id), "--yes")

    outcome = cli("order", "cancel", str(order.id), "--json")

    assert outcome.exit_code == 0
    assert "cancelled already; nothing changed" in outcome.stderr
    assert json.loads(outcome.stdout)["status"] == "cancelled"
