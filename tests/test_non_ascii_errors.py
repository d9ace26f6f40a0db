"""Errors keep the characters they quote: a customer called "Akosua Nyàmé" or a product called
"Kɔkɔɔ" reads as itself in a JSON error, not as `\\u00e0` escapes, on the command line (stderr
under --json) and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orderpay.store.db import Database
from tests.builders import a_customer, a_product
from tests.conftest import Cli, count_rows
from tests.live_server import API_TOKEN, TestClient
from tests.user_shell import orderpay

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NAME = "Akosua Nyàmé"
PRODUCT = "Kɔkɔɔ"

# Commands whose error quotes what the operator typed: a product's name given for its id, a
# customer's name given for the phone.
REFUSED = {
    "a product name for its id": (("product", "show", PRODUCT), PRODUCT, "invalid_field"),
    "a name for the phone": (
        ("customer", "create", "--name", NAME, "--phone", NAME),
        NAME,
        "invalid_phone",
    ),
}


@pytest.mark.parametrize(("args", "quoted", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_a_json_error_on_stderr_keeps_the_non_ascii_characters_it_quotes(
    cli: Cli, db: Database, args: tuple[str, ...], quoted: str, code: str
) -> None:
    before = count_rows(db)

    outcome = cli(*args, "--json")

    assert outcome.exit_code == 2, outcome.stderr
    assert quoted in outcome.stderr
    assert "\\u" not in outcome.stderr
    assert outcome.error()["code"] == code
    assert quoted in outcome.error()["message"]
    assert outcome.stdout == ""
    assert count_rows(db) == before


@pytest.mark.slow
def test_the_installed_command_writes_the_characters_as_utf8_on_stderr(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    before = count_rows(db)

    run = orderpay(tmp_path, "product", "show", PRODUCT, "--json", env={"DATABASE_URL": pg_url})

    assert run.exit_code == 2, run.stderr
    assert PRODUCT in run.stderr
    assert "\\u" not in run.stderr
    assert PRODUCT in run.error()["message"]
    assert count_rows(db) == before


def test_a_plain_error_keeps_the_characters_too(cli: Cli, db: Database) -> None:
    outcome = cli("product", "show", PRODUCT)

    assert outcome.exit_code == 2
    assert f"'{PRODUCT}' is not a product id" in outcome.stderr


# Over HTTP: the body is UTF-8 JSON holding the characters themselves.


def test_an_http_error_quoting_a_path_keeps_its_characters(
    client: TestClient, db: Database
) -> None:
    answer = client.get(f"/api/orders/{PRODUCT}/", headers=AUTH)

    assert answer.status_code == 404
    assert PRODUCT.encode() in answer.content
    assert b"\\u" not in answer.content
    assert PRODUCT in answer.json()["error"]["message"]


def test_an_http_error_naming_an_unknown_field_keeps_its_characters(
    client: TestClient, db: Database
) -> None:
    customer, product = a_customer(db, name=NAME), a_product(db, name=PRODUCT)
    body = {"customer": customer.id, "items": [{"product": str(product.id)}], "prénom": NAME}
    before = count_rows(db)

    answer = client.post("/api/orders/", content=json.dumps(body), headers=AUTH)

    assert answer.status_code == 400, answer.text
    assert "prénom".encode() in answer.content
    assert b"\\u" not in answer.content
    assert answer.json()["error"]["fields"] == ["prénom"]
    assert count_rows(db) == before
