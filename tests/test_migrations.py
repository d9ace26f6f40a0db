"""The schema: Alembic migrations reach the head, match the models, and the database itself
enforces the rules of DESIGN.md section 3 (checked here with inserts that bypass the services).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, exc, insert, inspect, text

from orderpay.store.db import SCHEMA_HEAD, SCHEMA_REVISIONS, Database
from orderpay.store.migrate import downgrade, script_revisions, upgrade
from orderpay.store.schema import metadata, order_items, payments, products
from tests.builders import a_product, an_order
from tests.conftest import Cli, create_postgres_database, drop_postgres_database, url_for

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SCHEMA_COMMANDS = [
    ("customer", "list"),
    ("product", "list"),
    ("order", "list"),
    ("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567"),
]


@pytest.fixture
def empty_pg(empty_pg_url: str) -> Iterator[Database]:
    database = Database(empty_pg_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def shared_empty_pg() -> Iterator[Database]:
    """One empty Postgres database for the refusals below, which must leave it empty
    (test_command_on_an_empty_database_creates_no_tables checks that on a database of its own)."""
    name = create_postgres_database()
    database = Database(url_for(name))
    yield database
    database.dispose()
    drop_postgres_database(name)


def _same_sqlite_default(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's SQLite comparison reads DEFAULT '' as different from server_default=""
    (its unquoting needs a character between the quotes). On SQLite, a default that is the
    model's once SQLite's parentheses and the SQL string quotes are removed is the same
    default; every other comparison is left to Alembic (None)."""
    if context.dialect.name != "sqlite" or None in (inspected_default, rendered_metadata_default):
        return None
    assert inspected_default is not None
    unwrapped = re.sub(r"^\((.*)\)$", r"\1", inspected_default)
    literal = re.fullmatch(r"'((?:[^']|'')*)'", unwrapped)
    value = literal.group(1).replace("''", "'") if literal else unwrapped
    return False if value == rendered_metadata_default else None


def _schema_drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": _same_sqlite_default},
    )
    return list(compare_metadata(context, metadata))


def _tables(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_schema_revisions_in_db_module_match_the_migration_scripts() -> None:
    assert list(SCHEMA_REVISIONS) == script_revisions()


def test_db_upgrade_on_an_empty_postgres_database_reaches_the_head(empty_pg_url: str) -> None:
    cli = Cli({"DATABASE_URL": empty_pg_url})

    upgraded = cli.ok("db", "upgrade")

    assert upgraded == {
        "before": None,
        "after": SCHEMA_HEAD,
        "database": "postgresql",
        "location": Database(empty_pg_url).label,
    }
    assert cli.ok("db", "status")["up_to_date"] is True


def test_db_upgrade_on_a_fresh_sqlite_file_reaches_the_head(tmp_path: Path) -> None:
    cli = Cli({"DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"})

    upgraded = cli.ok("db", "upgrade")

    assert upgraded == {
        "before": None,
        "after": SCHEMA_HEAD,
        "database": "sqlite",
        "location": f"SQLite file {tmp_path / 'shop.db'}",
    }
    assert cli.ok("db", "status")["up_to_date"] is True


def test_db_upgrade_twice_is_harmless(any_url: str) -> None:
    cli = Cli({"DATABASE_URL": any_url})

    upgraded = cli.ok("db", "upgrade")

    assert (upgraded["before"], upgraded["after"]) == (SCHEMA_HEAD, SCHEMA_HEAD)


def test_migrations_match_the_models_on_postgres(db: Database) -> None:
    with db.engine.connect() as connection:
        drift = _schema_drift(connection)

    assert drift == []


def test_migrations_match_the_models_on_sqlite(sqlite_url: str) -> None:
    database = Database(sqlite_url)

    with database.engine.connect() as connection:
        drift = _schema_drift(connection)

    database.dispose()
    assert drift == []


@pytest.mark.slow
def test_drift_check_notices_a_schema_that_differs_from_the_models(any_db: Database) -> None:
    with any_db.transaction() as connection:
        connection.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))

    with any_db.engine.connect() as connection:
        drift = _schema_drift(connection)

    assert [change[0] for change in drift] == ["remove_table"]


def test_downgrade_to_base_removes_the_schema(any_db: Database) -> None:
    downgrade(any_db, "base")

    assert any_db.current_revision() is None
    assert _tables(any_db) <= {"alembic_version"}


def test_upgrade_after_downgrade_to_base_rebuilds_the_schema(any_db: Database) -> None:
    downgrade(any_db, "base")

    before, after = upgrade(any_db)

    with any_db.engine.connect() as connection:
        drift = _schema_drift(connection)
    assert (before, after) == (None, SCHEMA_HEAD)
    assert drift == []


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=[" ".join(c[:2]) for c in SCHEMA_COMMANDS])
def test_command_on_an_empty_database_exits_7_asking_for_db_upgrade(
    shared_empty_pg: Database, command: tuple[str, ...]
) -> None:
    cli = Cli({"DATABASE_URL": shared_empty_pg.url})

    outcome = cli(*command, "--json")

    assert outcome.exit_code == 7
    assert outcome.error()["code"] == "schema_out_of_date"
    assert "orderpay db upgrade" in outcome.error()["message"]


def test_command_on_an_empty_database_creates_no_tables(empty_pg: Database) -> None:
    cli = Cli({"DATABASE_URL": empty_pg.url})

    cli("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")

    assert _tables(empty_pg) == set()


def test_command_on_an_empty_database_asks_for_db_upgrade_in_plain_text(
    shared_empty_pg: Database,
) -> None:
    cli = Cli({"DATABASE_URL": shared_empty_pg.url})

    outcome = cli("customer", "list")

    assert outcome.exit_code == 7
    assert "orderpay db upgrade" in outcome.stderr


def test_command_on_a_missing_sqlite_file_exits_7_asking_for_db_upgrade(tmp_path: Path) -> None:
    cli = Cli({"DATABASE_URL": f"sqlite:///{tmp_path / 'missing.db'}"})

    outcome = cli("customer", "list", "--json")

    assert outcome.exit_code == 7
    assert "orderpay db upgrade" in outcome.error()["message"]


def test_command_on_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    cli = Cli({"DATABASE_URL": f"sqlite:///{tmp_path / 'missing.db'}"})

    cli("customer", "list", "--json")

    assert not (tmp_path / "missing.db").exists()


def test_default_sqlite_database_is_not_created_by_a_read_command(tmp_path: Path) -> None:
    outcome = Cli({})("customer", "list", "--json")

    assert outcome.exit_code == 7
    assert not (tmp_path / "orderpay.db").exists()


def test_database_newer_than_this_orderpay_exits_7_saying_orderpay_must_be_upgraded(
    any_db: Database,
) -> None:
    with any_db.transaction() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    cli = Cli({"DATABASE_URL": any_db.url})

    outcome = cli("customer", "list", "--json")

    assert outcome.exit_code == 7
    assert outcome.error()["code"] == "schema_out_of_date"
    assert "upgrade orderpay" in outcome.error()["message"]
    assert "orderpay db upgrade" not in outcome.error()["message"]


# The schema's own rules, enforced without the services.


def _violates(database: Database, error: exc.IntegrityError, *, postgres: str, sqlite: str) -> bool:
    """Whether the error names the expected constraint, as each dialect words it."""
    expected = postgres if database.is_postgres else sqlite
    return expected in str(error.orig)


def _payment(order_id: uuid.UUID, status: str, key: str | None = None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "order_id": order_id,
        "idempotency_key": key or f"raw-{uuid.uuid4()}",
        "fingerprint": "0" * 64,
        "amount": 2500,
        "currency": "GHS",
        "payer_phone": "+233241234567",
        "provider": "simulator",
        "provider_reference": None,
        "status": status,
        "failure_reason": "APPROVAL_REJECTED" if status == "failed" else None,
        "created_at": NOW,
        "updated_at": NOW,
    }


def _insert(database: Database, table: Any, values: dict[str, Any]) -> None:
    with database.transaction() as connection:
        connection.execute(insert(table).values(**values))


def _scalars(database: Database, query: str) -> list[Any]:
    with database.transaction() as connection:
        return list(connection.execute(text(query)).scalars())


def _product_row(price: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "Kenkey",
        "price": price,
        "currency": "GHS",
        "created_at": NOW,
    }


@pytest.mark.parametrize("price", [0, -1])
def test_schema_refuses_a_product_priced_zero_or_less(any_db: Database, price: int) -> None:
    with pytest.raises(exc.IntegrityError) as refused:
        _insert(any_db, products, _product_row(price=price))

    assert _violates(
        any_db,
        refused.value,
        postgres="ck_products_price_positive",
        sqlite="ck_products_price_positive",
    )
    assert _scalars(any_db, "SELECT price FROM products") == []


def test_schema_accepts_a_product_priced_one_minor_unit(any_db: Database) -> None:
    _insert(any_db, products, _product_row(price=1))

    assert _scalars(any_db, "SELECT price FROM products") == [1]


@pytest.mark.parametrize("quantity", [0, -1])
def test_schema_refuses_an_order_item_with_quantity_below_one(
    any_db: Database, quantity: int
) -> None:
    order = an_order(any_db)
    other_product = a_product(any_db, name="Banku")

    with pytest.raises(exc.IntegrityError) as refused:
        _insert(
            any_db,
            order_items,
            {
                "order_id": order.id,
                "product_id": other_product.id,
                "quantity": quantity,
                "unit_price": 1250,
            },
        )

    assert _violates(
        any_db,
        refused.value,
        postgres="ck_order_items_quantity_positive",
        sqlite="ck_order_items_quantity_positive",
    )


def test_schema_refuses_a_duplicate_idempotency_key(any_db: Database) -> None:
    first_order = an_order(any_db)
    second_order = an_order(any_db)
    _insert(any_db, payments, _payment(first_order.id, "pending", key="order-1-attempt-1"))

    with pytest.raises(exc.IntegrityError) as refused:
        _insert(any_db, payments, _payment(second_order.id, "pending", key="order-1-attempt-1"))

    assert _violates(
        any_db,
        refused.value,
        postgres="uq_payments_idempotency_key",
        sqlite="payments.idempotency_key",
    )


@pytest.mark.parametrize(
    ("first_status", "second_status"),
    [("initiated", "pending"), ("pending", "succeeded"), ("succeeded", "initiated")],
)
def test_schema_refuses_a_second_live_payment_for_one_order(
    any_db: Database, first_status: str, second_status: str
) -> None:
    order = an_order(any_db)
    _insert(any_db, payments, _payment(order.id, first_status))

    with pytest.raises(exc.IntegrityError) as refused:
        _insert(any_db, payments, _payment(order.id, second_status))

    assert _violates(
        any_db, refused.value, postgres="uq_payments_order_id_live", sqlite="payments.order_id"
    )


@pytest.mark.parametrize("live_status", ["initiated", "pending", "succeeded"])
@pytest.mark.slow
def test_schema_allows_failed_payments_next_to_a_live_one(
    any_db: Database, live_status: str
) -> None:
    order = an_order(any_db)
    _insert(any_db, payments, _payment(order.id, "failed"))
    _insert(any_db, payments, _payment(order.id, "failed"))

    _insert(any_db, payments, _payment(order.id, live_status))

    statuses = _scalars(any_db, "SELECT status FROM payments")
    assert sorted(statuses) == sorted(["failed", "failed", live_status])


def test_schema_allows_live_payments_on_different_orders(any_db: Database) -> None:
    first_order = an_order(any_db)
    second_order = an_order(any_db)
    _insert(any_db, payments, _payment(first_order.id, "pending"))

    _insert(any_db, payments, _payment(second_order.id, "pending"))

    assert _scalars(any_db, "SELECT status FROM payments") == ["pending", "pending"]
