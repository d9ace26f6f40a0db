"""Finding things: every list pages with --limit and a cursor (--after), filters by time
(--since, --until), and every command takes an id's unique prefix, as Git takes a commit's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from orderpay import clock
from orderpay.store.db import Database
from orderpay.store.schema import products
from tests.builders import an_order
from tests.conftest import Cli, count_rows
from tests.live_server import a_pending_payment


def all_pages(cli: Cli, *args: str) -> list[list[str]]:
    """The ids on each page of a list, following the cursors to the end."""
    pages: list[list[str]] = []
    cursor: list[str] = []
    while True:
        page = cli.ok(*args, *cursor)
        pages.append([str(item["id"]) for item in page["items"]])
        if page["next"] is None:
            return pages
        cursor = ["--after", page["next"]]


def test_a_list_is_paged_newest_first_and_every_row_is_on_exactly_one_page(
    cli: Cli, db: Database
) -> None:
    made = [str(a_pending_payment(db).id) for _ in range(7)]

    pages = all_pages(cli, "payment", "list", "--limit", "3")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [pid for page in pages for pid in page] == made[::-1]


def test_rows_written_meanwhile_do_not_shift_the_next_page(cli: Cli, db: Database) -> None:
    made = [str(a_pending_payment(db).id) for _ in range(4)]
    first = cli.ok("payment", "list", "--limit", "2")

    a_pending_payment(db)  # a newer payment arrives between the two pages
    second = cli.ok("payment", "list", "--limit", "2", "--after", first["next"])

    assert [p["id"] for p in second["items"]] == [made[1], made[0]]


def test_since_and_until_keep_the_rows_of_the_window(cli: Cli, db: Database) -> None:
    old = a_pending_payment(db)
    clock.advance(timedelta(days=3))
    recent = a_pending_payment(db)

    since = cli.items("payment", "list", "--since", "1d")
    until = cli.items("payment", "list", "--until", "2d")
    between = cli.items(
        "payment",
        "list",
        "--since",
        (old.created_at - timedelta(seconds=1)).isoformat(),
        "--until",
        (old.created_at + timedelta(days=1)).date().isoformat(),
    )

    assert [p["id"] for p in since] == [str(recent.id)]
    assert [p["id"] for p in until] == [str(old.id)]
    assert [p["id"] for p in between] == [str(old.id)]


@pytest.mark.parametrize(
    "command",
    [("customer", "list"), ("product", "list"), ("order", "list"), ("notification", "list")],
    ids=lambda c: c[0],
)
def test_every_list_returns_a_page_with_a_cursor(
    cli: Cli, db: Database, command: tuple[str, ...]
) -> None:
    for _ in range(3):
        an_order(db)

    page = cli.ok(*command, "--limit", "1")

    assert set(page) == {"items", "next"}
    assert len(page["items"]) <= 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("--after", "not-a-cursor"), ("--since", "yesterday"), ("--until", "2026-13-45")],
)
def test_a_bad_window_is_exit_2_and_prints_no_page(
    cli: Cli, db: Database, option: str, value: str
) -> None:
    a_pending_payment(db)

    outcome = cli("payment", "list", option, value, "--json")

    assert outcome.exit_code == 2
    assert outcome.stdout == ""
    assert outcome.error()["code"] == "invalid_field"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("payment", "list", "--order", "00000000-0000-4000-8000-000000000042"), "order_not_found"),
        (("notification", "list", "--order", "0000dead"), "order_not_found"),
        (("order", "list", "--customer", "4242"), "customer_not_found"),
    ],
    ids=["payments-of-unknown-order", "notifications-of-unknown-prefix", "unknown-customer"],
)
def test_a_filter_naming_nothing_is_not_found_rather_than_an_empty_list(
    cli: Cli, db: Database, args: tuple[str, ...], code: str
) -> None:
    a_pending_payment(db)

    outcome = cli(*args, "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == code


def test_commands_take_the_start_of_an_id(cli: Cli, db: Database) -> None:
    payment = a_pending_payment(db)

    order = cli.ok("order", "show", str(payment.order_id)[:8])
    listed = cli.items("payment", "list", "--order", str(payment.order_id)[:6])
    shown = cli.ok("payment", "show", str(payment.id)[:5].upper())

    assert order["id"] == str(payment.order_id)
    assert [p["id"] for p in listed] == [str(payment.id)]
    assert shown["id"] == str(payment.id)


def two_products_sharing_a_prefix(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    ids = (
        uuid.UUID("abcd0000-0000-4000-8000-000000000001"),
        uuid.UUID("abcd0000-0000-4000-8000-000000000002"),
    )
    with db.transaction() as conn:
        conn.execute(
            insert(products),
            [
                {
                    "id": pid,
                    "name": f"Kenkey {n}",
                    "price": 1250,
                    "currency": "GHS",
                    "created_at": datetime.now(UTC),
                }
                for n, pid in enumerate(ids)
            ],
        )
    return ids


def test_a_prefix_that_starts_several_ids_is_refused_naming_them(cli: Cli, db: Database) -> None:
    two_products_sharing_a_prefix(db)
    before = count_rows(db)

    outcome = cli("product", "show", "abcd", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "ambiguous_id"
    assert "abcd0000-0000-4000-8000-000000000001" in outcome.error()["message"]
    assert "abcd0000-0000-4000-8000-000000000002" in outcome.error()["message"]
    assert count_rows(db) == before


def test_the_whole_id_tells_apart_ids_that_differ_in_their_last_digit(
    cli: Cli, db: Database
) -> None:
    first, second = two_products_sharing_a_prefix(db)

    shown = [cli.ok("product", "show", str(pid))["id"] for pid in (first, second)]

    assert shown == [str(first), str(second)]


@pytest.mark.parametrize("raw", ["abc", "kenkey", "12345678-1234-1234-1234-12345678901234"])
def test_something_that_is_not_an_id_or_its_start_is_exit_2(cli: Cli, raw: str) -> None:
    outcome = cli("order", "show", raw, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
