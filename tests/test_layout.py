"""The layout that shows the layers (DESIGN.md section 1): one writer per ledger table, and
modules small enough to read. (The import direction is checked by import-linter in CI.)"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from orderpay.store.db import Database

PACKAGE = Path(__file__).resolve().parent.parent / "orderpay"
MIGRATIONS = PACKAGE / "store" / "migrations"

# Each ledger table and the one module allowed to write it.
WRITERS = {
    "orders": "store/orders.py",
    "order_items": "store/orders.py",
    "payments": "store/ledger.py",
    "refunds": "store/refunds.py",
    "review_items": "store/reviews.py",
    "notifications": "store/outbox/",  # a package: its modules split the table's roles
    "webhook_events": "store/webhook_events.py",
    "order_events": "store/order_events.py",
}
WRITE_CALLS = {"insert", "update", "delete", "InsertIgnoring"}
SQL_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)
MAX_LINES = 420  # "about 400"


def tables_written(source: str) -> set[str]:
    """The ledger tables a module's code writes: insert(t), update(t), delete(t),
    postgresql.insert(t), InsertIgnoring(t, ...), t.insert() ..., or SQL text."""
    written: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in WRITE_CALLS and node.args and isinstance(node.args[0], ast.Name):
                written.add(node.args[0].id)
            if (
                name in WRITE_CALLS
                and isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and not node.args
            ):
                written.add(func.value.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            written.update(match.lower() for match in SQL_WRITE.findall(node.value))
    return written & set(WRITERS)


def writers_found() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        if MIGRATIONS in path.parents:
            continue  # migrations create the tables; they write no rows
        module = str(path.relative_to(PACKAGE))
        home = next(
            (w for w in WRITERS.values() if w.endswith("/") and module.startswith(w)), module
        )
        for table in tables_written(path.read_text(encoding="utf-8")):
            found[table].add(home)
    return found


@pytest.mark.parametrize("table", sorted(WRITERS))
@pytest.mark.slow
def test_each_ledger_table_is_written_by_exactly_one_module(table: str) -> None:
    assert writers_found()[table] == {WRITERS[table]}


@pytest.mark.parametrize(
    "snippet",
    [
        "update(payments).values(status='x')",
        "postgresql.insert(notifications)",
        "InsertIgnoring(webhook_events, None)",
        "order_events.insert()",
        "conn.exec_driver_sql('UPDATE orders SET status = 1')",
        "delete(order_items)",
    ],
)
def test_the_writer_check_sees_every_way_of_writing_a_table(snippet: str) -> None:
    assert tables_written(snippet)


def test_the_writer_check_ignores_reads() -> None:
    assert tables_written("select(payments.c.id).where(payments.c.status == 'x')") == set()


# Code in the database would be a writer the checks above cannot see.
DATABASE_CODE = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|TRIGGER)\b", re.I)


@pytest.mark.parametrize(
    "path", sorted(MIGRATIONS.rglob("*.py")), ids=lambda p: str(p.relative_to(MIGRATIONS))
)
def test_no_migration_puts_code_in_the_database(path: Path) -> None:
    assert not DATABASE_CODE.search(path.read_text(encoding="utf-8"))


def test_the_code_in_the_database_check_sees_a_function() -> None:
    assert DATABASE_CODE.search("op.execute('create or replace function f() ...')")


def test_the_migrated_database_holds_no_function_procedure_or_trigger(db: Database) -> None:
    with db.transaction() as conn:
        routines = conn.execute(
            text(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public'"
            )
        ).all()
        triggers = conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).all()
    assert (routines, triggers) == ([], [])


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if MIGRATIONS not in p.parents),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_passes_about_400_lines(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")

    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it"


@pytest.mark.parametrize("layer", ["domain", "store", "providers", "payments", "notify", "http"])
def test_each_layer_is_a_subpackage(layer: str) -> None:
    assert (PACKAGE / layer / "__init__.py").is_file()
