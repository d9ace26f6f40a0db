"""DATABASE_URL in the forms users are handed (DESIGN.md section 2), through the installed CLI.

Every host, PaaS and compose file hands out `postgresql://` or `postgres://`; SQLAlchemy 2.1
maps the bare form to psycopg 3, which orderpay does not install. Those forms, and the explicit
`postgresql+psycopg2://`, must all work with what `pip install .` installs; anything else is a
one-line configuration error (exit 2) that names the forms that work, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from orderpay.store.db import Database
from tests.conftest import count_rows, postgres_url
from tests.user_shell import orderpay

PASSWORD = "pa55-Kontomire"


def _spelled(url: str, scheme: str) -> str:
    """The test database's URL, with its scheme written as `scheme`."""
    return scheme + "://" + url.split("://", 1)[1]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
@pytest.mark.slow
def test_every_postgres_spelling_reaches_the_database(
    pg_url: str, tmp_path: Path, scheme: str
) -> None:
    env = {"DATABASE_URL": _spelled(pg_url, scheme)}

    created = orderpay(
        tmp_path,
        "customer",
        "create",
        "--name",
        "Ama Mensah",
        "--phone",
        "0241234567",
        "--json",
        env=env,
    )

    assert created.exit_code == 0, created.stderr
    assert count_rows(Database(pg_url))["customers"] == 1


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
@pytest.mark.slow
def test_the_postgres_variables_and_a_bare_scheme_in_dotenv_work_alike(
    pg_url: str, tmp_path: Path, scheme: str
) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={_spelled(pg_url, scheme)}\n", encoding="utf-8")

    listed = orderpay(tmp_path, "customer", "list", "--json")

    assert listed.exit_code == 0, listed.stderr
    assert listed.json() == {"items": [], "next": None}


@pytest.mark.slow
def test_config_show_reports_the_driver_that_is_used(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"postgres://shop:{PASSWORD}@db.internal:5432/shop"}

    shown = orderpay(tmp_path, "config", "show", "--json", env=env)

    assert shown.exit_code == 0, shown.stderr
    assert (
        shown.json()["DATABASE_URL"]["value"]
        == "postgresql+psycopg2://shop:***@db.internal:5432/shop"
    )


REFUSED = [
    ("mysql://shop:{pw}@127.0.0.1/shop", "'mysql'"),
    ("mysql+pymysql://shop:{pw}@127.0.0.1/shop", "'mysql'"),
    ("postgresql+psycopg://shop:{pw}@127.0.0.1/shop", "'psycopg'"),
    ("postgresql+asyncpg://shop:{pw}@127.0.0.1/shop", "'asyncpg'"),
    ("oracle://shop:{pw}@127.0.0.1/shop", "'oracle'"),
]


@pytest.mark.parametrize(("url", "named"), REFUSED, ids=[u.split(":")[0] for u, _ in REFUSED])
@pytest.mark.slow
def test_an_unusable_database_url_is_a_configuration_error_naming_the_forms_that_work(
    tmp_path: Path, url: str, named: str
) -> None:
    refused = orderpay(tmp_path, "customer", "list", env={"DATABASE_URL": url.format(pw=PASSWORD)})

    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "[configuration_error]" in refused.stderr
    assert named in refused.stderr
    assert "postgresql://" in refused.stderr
    assert "sqlite:///" in refused.stderr
    assert PASSWORD not in refused.stderr


@pytest.mark.parametrize(("url", "named"), REFUSED[:3], ids=["mysql", "pymysql", "psycopg"])
@pytest.mark.slow
def test_an_unusable_database_url_under_json_is_one_error_document(
    tmp_path: Path, url: str, named: str
) -> None:
    refused = orderpay(
        tmp_path, "customer", "list", "--json", env={"DATABASE_URL": url.format(pw=PASSWORD)}
    )

    assert refused.exit_code == 2
    assert refused.error()["code"] == "configuration_error"
    assert named in refused.error()["message"]


@pytest.mark.parametrize("command", [("doctor",), ("db", "upgrade"), ("order", "list")])
@pytest.mark.slow
def test_every_command_refuses_a_mysql_url_the_same_way(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    refused = orderpay(tmp_path, *command, env={"DATABASE_URL": "mysql://shop@127.0.0.1/shop"})

    assert refused.exit_code == 2
    assert "'mysql'" in refused.stdout + refused.stderr  # doctor's table is on stdout
    assert "Traceback" not in refused.stdout + refused.stderr


@pytest.mark.slow
def test_a_refused_database_url_creates_no_sqlite_file_either(tmp_path: Path) -> None:
    orderpay(
        tmp_path,
        "customer",
        "create",
        "--name",
        "Ama Mensah",
        "--phone",
        "0241234567",
        env={"DATABASE_URL": "mysql://shop@127.0.0.1/shop"},
    )

    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_unreachable_database_is_named_with_its_password_masked(tmp_path: Path) -> None:
    url = f"postgres://shop:{PASSWORD}@127.0.0.1:1/shop"

    failed = orderpay(tmp_path, "customer", "list", env={"DATABASE_URL": url})

    assert failed.exit_code == 7
    assert "postgresql+psycopg2://shop:***@127.0.0.1:1/shop" in failed.stderr
    assert PASSWORD not in failed.stderr


@pytest.mark.slow
def test_a_missing_schema_names_the_sqlite_file_by_its_absolute_path(tmp_path: Path) -> None:
    failed = orderpay(tmp_path, "customer", "list")

    assert failed.exit_code == 7
    assert f"SQLite file {tmp_path / 'orderpay.db'} has no orderpay schema" in failed.stderr
    assert "orderpay db upgrade" in failed.stderr


@pytest.mark.slow
def test_a_missing_postgres_schema_names_the_database(empty_pg_url: str, tmp_path: Path) -> None:
    failed = orderpay(tmp_path, "order", "list", env={"DATABASE_URL": empty_pg_url})

    assert failed.exit_code == 7
    assert f"{Database(empty_pg_url).label} has no orderpay schema" in failed.stderr


@pytest.mark.slow
def test_a_database_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    url = make_url(postgres_url()).set(database="orderpay_no_such_database_anywhere")

    failed = orderpay(
        tmp_path,
        "customer",
        "list",
        "--json",
        env={"DATABASE_URL": url.render_as_string(hide_password=False)},
    )

    assert failed.exit_code == 2
    assert failed.error()["code"] == "database_inaccessible"
    assert "orderpay_no_such_database_anywhere" in failed.error()["message"]
