"""`orderpay customer create|list`: shapes of DESIGN.md section 8, and bad input refused with
nothing stored (section 7)."""

from __future__ import annotations

from datetime import datetime

import pytest

from orderpay.store.db import Database
from tests.builders import AMA
from tests.conftest import (
    Cli,
    count_rows,
)


@pytest.mark.slow
def test_customer_create_prints_the_customer_with_its_phone_in_e164(any_cli: Cli) -> None:
    customer = any_cli.ok(
        "customer",
        "create",
        "--name",
        "Ama Mensah",
        "--phone",
        "0241234567",
        "--email",
        "ama@example.com",
    )

    assert isinstance(customer["id"], int)
    assert {k: customer[k] for k in ("name", "phone", "email")} == {
        "name": "Ama Mensah",
        "phone": "+233241234567",
        "email": "ama@example.com",
    }
    assert datetime.fromisoformat(customer["created_at"]).utcoffset() is not None


def test_customer_without_email_has_null_email(any_cli: Cli) -> None:
    customer = any_cli.ok("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")

    assert customer["email"] is None


def test_customer_create_stores_one_row(any_cli: Cli, any_db: Database) -> None:
    before = count_rows(any_db)["customers"]

    any_cli.ok("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")

    assert count_rows(any_db)["customers"] == before + 1


def test_customer_create_accepts_an_mtn_sandbox_number(cli: Cli) -> None:
    customer = cli.ok("customer", "create", "--name", "Sandbox", "--phone", "46733123450")

    assert customer["phone"] == "+46733123450"


def test_customer_create_reads_local_numbers_in_the_configured_region(cli: Cli) -> None:
    customer = cli.ok(
        "customer",
        "create",
        "--name",
        "Nakato",
        "--phone",
        "0772123456",
        ORDERPAY_DEFAULT_REGION="UG",
    )

    assert customer["phone"] == "+256772123456"


def test_customer_create_without_json_prints_a_table_on_stdout(cli: Cli) -> None:
    outcome = cli("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")

    assert outcome.exit_code == 0
    assert "Ama Mensah" in outcome.stdout
    assert AMA in outcome.stdout


def test_customer_list_shows_customers_newest_first(any_cli: Cli) -> None:
    ama = any_cli.ok("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")
    kofi = any_cli.ok("customer", "create", "--name", "Kofi Boateng", "--phone", "0201234567")

    listed = any_cli.items("customer", "list")

    assert listed == [kofi, ama]


def test_customer_list_of_an_empty_shop_is_an_empty_list(any_cli: Cli) -> None:
    listed = any_cli.items("customer", "list")

    assert listed == []


def test_customer_list_limit_caps_the_rows(cli: Cli) -> None:
    for phone in ("0241234567", "0201234567", "0271234567"):
        cli.ok("customer", "create", "--name", "Ama Mensah", "--phone", phone)

    listed = cli.items("customer", "list", "--limit", "2")

    assert [c["phone"] for c in listed] == ["+233271234567", "+233201234567"]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (("--name", "Ama Mensah", "--phone", "12"), "invalid_phone"),
        (("--name", "Ama Mensah", "--phone", "0772123456"), "invalid_phone"),  # Ugandan, GH
        (("--name", "Ama Mensah", "--phone", ""), "invalid_phone"),
        (("--name", "", "--phone", "0241234567"), "invalid_field"),
        (("--name", "   ", "--phone", "0241234567"), "invalid_field"),
        (("--name", "A" * 201, "--phone", "0241234567"), "invalid_field"),
        (("--name", "Ama\x00Mensah", "--phone", "0241234567"), "invalid_field"),
        (("--name", "Ama", "--phone", "0241234567", "--email", "ama-at-example"), "invalid_field"),
        (("--name", "Ama", "--phone", "0241234567", "--email", "ama@example"), "invalid_field"),
    ],
    ids=[
        "phone-too-short",
        "phone-of-another-region",
        "phone-empty",
        "name-empty",
        "name-blank",
        "name-201-chars",
        "name-control-character",
        "email-without-at",
        "email-without-domain-dot",
    ],
)
@pytest.mark.slow
def test_bad_customer_input_is_refused_with_exit_2_and_nothing_is_stored(
    cli: Cli, db: Database, options: tuple[str, ...], code: str
) -> None:
    before = count_rows(db)

    outcome = cli("customer", "create", *options, "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == code
    assert outcome.stdout == ""
    assert count_rows(db) == before


def test_invalid_phone_is_refused_and_nothing_is_stored_on_either_database(
    any_cli: Cli, any_db: Database
) -> None:
    any_cli.ok("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")
    before = count_rows(any_db)

    outcome = any_cli("customer", "create", "--name", "Kofi", "--phone", "024123", "--json")

    assert (outcome.exit_code, outcome.error()["code"]) == (2, "invalid_phone")
    assert count_rows(any_db) == before


def test_name_of_200_characters_is_accepted(cli: Cli) -> None:
    customer = cli.ok(
        "customer", "create", "--name", "A" * 200, "--phone", "0241234567", "--allow-duplicate"
    )

    assert customer["name"] == "A" * 200


def test_name_is_stored_without_surrounding_white_space(cli: Cli) -> None:
    customer = cli.ok(
        "customer",
        "create",
        "--name",
        "  Ama Mensah ",
        "--phone",
        "0241234567",
        "--allow-duplicate",
    )

    assert customer["name"] == "Ama Mensah"
