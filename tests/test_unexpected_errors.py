"""A bug is one line, never a traceback, unless ORDERPAY_DEBUG=1 asks (DESIGN.md section 7).

The bug is planted the way a real one would surface: a `sitecustomize` on PYTHONPATH makes a
service function raise an exception no code expects, in the installed command's own process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.user_shell import Run, orderpay

BUG = "RuntimeError: the planted bug in list_customers"

SITECUSTOMIZE = """
import orderpay.shop.customers


def list_customers(*args, **kwargs):
    raise RuntimeError("the planted bug in list_customers\\nsecond line, never shown")


orderpay.shop.customers.list_customers = list_customers
"""


@pytest.fixture
def buggy(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    """The environment of an orderpay whose `customer list` hits a bug."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return {"DATABASE_URL": sqlite_url, "PYTHONPATH": str(plant)}


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> Run:
    return orderpay(tmp_path, "customer", "list", *args, env=env)


@pytest.mark.slow
def test_a_bug_is_one_line_naming_internal_error_with_exit_1(
    tmp_path: Path, buggy: dict[str, str]
) -> None:
    failed = _run(tmp_path, buggy)

    assert failed.exit_code == 1
    assert failed.stdout == ""
    assert failed.stderr.count("\n") == 1
    assert BUG in failed.stderr
    assert failed.stderr.rstrip().endswith("[internal_error]")
    assert "ORDERPAY_DEBUG=1" in failed.stderr


@pytest.mark.slow
def test_a_bug_shows_no_traceback(tmp_path: Path, buggy: dict[str, str]) -> None:
    failed = _run(tmp_path, buggy)

    assert "Traceback" not in failed.stdout + failed.stderr
    assert "second line" not in failed.stderr


@pytest.mark.slow
def test_a_bug_under_json_is_one_json_error_document(tmp_path: Path, buggy: dict[str, str]) -> None:
    failed = _run(tmp_path, buggy, "--json")

    assert failed.exit_code == 1
    assert failed.stdout == ""
    assert failed.error()["code"] == "internal_error"
    assert BUG in failed.error()["message"]


@pytest.mark.parametrize("value", ["1", "true"])
@pytest.mark.slow
def test_orderpay_debug_shows_the_traceback(
    tmp_path: Path, buggy: dict[str, str], value: str
) -> None:
    failed = _run(tmp_path, {**buggy, "ORDERPAY_DEBUG": value})

    assert failed.exit_code == 1
    assert "Traceback (most recent call last)" in failed.stderr
    assert "the planted bug in list_customers" in failed.stderr


@pytest.mark.slow
def test_orderpay_debug_in_dotenv_shows_the_traceback(
    tmp_path: Path, buggy: dict[str, str]
) -> None:
    (tmp_path / ".env").write_text("ORDERPAY_DEBUG=1\n", encoding="utf-8")

    failed = _run(tmp_path, buggy)

    assert "Traceback (most recent call last)" in failed.stderr


@pytest.mark.slow
def test_orderpay_debug_0_keeps_the_one_line(tmp_path: Path, buggy: dict[str, str]) -> None:
    failed = _run(tmp_path, {**buggy, "ORDERPAY_DEBUG": "0"})

    assert "Traceback" not in failed.stderr
    assert BUG in failed.stderr


@pytest.mark.slow
def test_a_bug_stores_nothing_and_the_database_still_works(
    tmp_path: Path, buggy: dict[str, str]
) -> None:
    _run(tmp_path, buggy)

    listed = orderpay(tmp_path, "customer", "list", "--json", env=buggy | {"PYTHONPATH": ""})

    assert listed.exit_code == 0, listed.stderr
    assert listed.json() == {"items": [], "next": None}


@pytest.mark.slow
def test_a_file_that_is_not_a_database_is_named_not_a_bug(tmp_path: Path) -> None:
    (tmp_path / "orderpay.db").write_bytes(b"a shopping list, not a database\n" * 200)

    failed = orderpay(tmp_path, "customer", "list", "--json")

    assert failed.exit_code == 2
    assert failed.error()["code"] == "database_inaccessible"
    assert f"{tmp_path / 'orderpay.db'}: it is not a SQLite database" in failed.error()["message"]
