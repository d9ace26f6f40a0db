"""A command loads what it uses: read commands on SQLite and --help leave the heavy modules out.

Each command runs in a fresh interpreter, as the console script runs it (orderpay.cli.main),
and the modules it loaded are listed at exit. A module named here coming back to one of these
paths is start-up time every operator pays on every command (bench/cli.py measures it); these
tests fail first.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.user_shell import orderpay, user_env

# What the CLI, the listener, the workers or the providers use, and a read command does not.
NOT_FOR_A_READ = [
    "pydantic",  # Typer's value conversion and the settings' former reader
    "pydantic_core",
    "pydantic_settings",
    "rich",  # human tables and panels, not --json
    "httpx",  # provider and SMS clients
    "rq",
    "redis",
    "starlette",
    "uvicorn",
    "asyncpg",
    "psycopg2",  # Postgres: the database is SQLite
    "sqlalchemy.dialects.postgresql",
    "alembic",  # the schema check reads alembic_version itself
    "phonenumbers",  # the settings' region check has its own list
    "prometheus_client",
    "dotenv",  # no .env here
    "orderpay.providers",
    "orderpay.payments",
    "orderpay.notify",
    "orderpay.http",
    "orderpay.server",
    "orderpay.jobs",
    "orderpay.commands.render",
]
NOT_FOR_HELP = [*NOT_FOR_A_READ, "sqlalchemy", "orderpay.store", "orderpay.config"]

# Runs orderpay.cli.main with argv[2:] and writes the names of the loaded modules to argv[1].
DRIVER = """
import json, sys
out, sys.argv = sys.argv[1], ["orderpay", *sys.argv[2:]]
from orderpay.cli import main
try:
    main()
finally:
    with open(out, "w", encoding="utf-8") as file:
        json.dump(sorted(sys.modules), file)
"""


@functools.cache
def shop(tmp: Path) -> tuple[dict[str, str], str]:
    """A migrated SQLite database with one order; the environment naming it, and the order."""
    env = {"DATABASE_URL": f"sqlite:///{tmp / 'shop.db'}"}
    assert orderpay(tmp, "db", "upgrade", env=env).exit_code == 0
    customer = orderpay(
        tmp, "customer", "create", "--name", "Ama", "--phone", "0241234567", "--json", env=env
    ).json()
    product = orderpay(
        tmp,
        "product",
        "create",
        "--name",
        "Kenkey",
        "--price",
        "12.50",
        "--currency",
        "GHS",
        "--json",
        env=env,
    ).json()
    order = orderpay(
        tmp,
        "order",
        "create",
        "--customer",
        str(customer["id"]),
        "--item",
        product["id"],
        "--json",
        env=env,
    ).json()
    return env, order["id"]


def loaded_by(tmp: Path, *args: str) -> set[str]:
    env, order_id = shop(tmp)
    out = tmp / "modules.json"
    argv = [arg.replace("ORDER_ID", order_id) for arg in args]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(out), *argv],
        cwd=tmp,
        env=user_env(tmp, env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports")


@functools.cache
def modules_of(tmp: Path, command: str) -> frozenset[str]:
    return frozenset(loaded_by(tmp, *command.split()))


def among(modules: frozenset[str], name: str) -> list[str]:
    return sorted(m for m in modules if m == name or m.startswith(f"{name}."))


@pytest.mark.slow
@pytest.mark.parametrize("module", NOT_FOR_A_READ)
def test_order_list_json_on_sqlite_does_not_import(shop_dir: Path, module: str) -> None:
    assert among(modules_of(shop_dir, "order list --json"), module) == []


@pytest.mark.slow
@pytest.mark.parametrize("module", NOT_FOR_A_READ)
def test_order_show_json_on_sqlite_does_not_import(shop_dir: Path, module: str) -> None:
    assert among(modules_of(shop_dir, "order show ORDER_ID --json"), module) == []


@pytest.mark.slow
@pytest.mark.parametrize("module", NOT_FOR_A_READ)
@pytest.mark.parametrize(
    "command",
    [
        "customer list --json",
        "product list --json",
        "payment list --json",
        "notification list --json",
        "review list --json",
    ],
)
def test_other_lists_in_json_on_sqlite_do_not_import(
    shop_dir: Path, command: str, module: str
) -> None:
    assert among(modules_of(shop_dir, command), module) == []


@pytest.mark.slow
@pytest.mark.parametrize("module", NOT_FOR_HELP)
def test_help_does_not_import(shop_dir: Path, module: str) -> None:
    assert among(modules_of(shop_dir, "--help"), module) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["order list --json", "order show ORDER_ID --json"])
def test_the_listing_holds_what_a_read_command_does_use(shop_dir: Path, command: str) -> None:
    # Else every test above would pass on a driver that ran nothing.
    loaded = modules_of(shop_dir, command)

    assert {"sqlalchemy.dialects.sqlite", "orderpay.store.orders", "orderpay.shapes"} <= loaded
