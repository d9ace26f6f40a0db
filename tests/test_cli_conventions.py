"""What every command keeps (DESIGN.md sections 7 and 8): data on stdout, errors on stderr (one
JSON document under --json), no tracebacks for user errors, examples in every --help, and a
clear exit 7 when the database cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from orderpay import errors
from orderpay.cli import app
from orderpay.store.db import Database
from tests.builders import an_order
from tests.conftest import (
    Cli,
    count_rows,
)
from tests.user_shell import orderpay

UNKNOWN_ORDER = "00000000-0000-4000-8000-000000000042"
CLOSED_PORT_URL = "postgresql+psycopg2://root@127.0.0.1:1/x"


def invalid_input_codes() -> set[str]:
    """The codes of the invalid-input row of DESIGN.md section 7 (exit 2)."""
    found = {errors.InvalidInput.code}
    pending = [errors.InvalidInput]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub.code)
            pending.append(sub)
    return found


# Commands a user gets wrong, with the exit code and error code each must give.
USER_ERRORS = [
    (("customer", "create", "--name", "Ama Mensah", "--phone", "12"), 2, "invalid_phone"),
    (("customer", "create", "--name", "", "--phone", "0241234567"), 2, "invalid_field"),
    (
        ("product", "create", "--name", "Kenkey", "--price", "12.505", "--currency", "GHS"),
        2,
        "invalid_amount",
    ),
    (
        ("product", "create", "--name", "Kenkey", "--price", "12.50", "--currency", "XYZ"),
        2,
        "unknown_currency",
    ),
    (("order", "create", "--customer", "1", "--item", f"{UNKNOWN_ORDER}:0"), 2, "invalid_quantity"),
    (
        ("order", "create", "--customer", "42", "--item", f"{UNKNOWN_ORDER}:1"),
        3,
        "customer_not_found",
    ),
    (("order", "show", UNKNOWN_ORDER), 3, "order_not_found"),
    (("order", "show", "order-42"), 2, "invalid_field"),
    (("order", "cancel", UNKNOWN_ORDER), 3, "order_not_found"),
    (("order", "list", "--phone", "12"), 2, "invalid_phone"),
    (("charge", UNKNOWN_ORDER), 2, "idempotency_key_missing"),
    (("charge", UNKNOWN_ORDER, "--key", "order-42-attempt-1"), 3, "order_not_found"),
    (("payment", "show", UNKNOWN_ORDER), 3, "payment_not_found"),
]
USER_ERROR_IDS = [f"{' '.join(args[:2])}-{code}" for args, _, code in USER_ERRORS]

# Mistakes the option parser catches before any orderpay code runs.
USAGE_ERRORS = [
    ("order", "create", "--customer", "Ama", "--item", f"{UNKNOWN_ORDER}:1"),
    ("order", "list", "--status", "lost"),
    ("order", "list", "--limit", "0"),
    ("customer", "create", "--name", "Ama Mensah"),
]
USAGE_ERROR_IDS = ["customer-not-a-number", "unknown-status", "limit-zero", "phone-missing"]

# Read commands and their JSON document type.
READ_COMMANDS = [
    (("customer", "list"), dict),
    (("product", "list"), dict),
    (("order", "list"), dict),
    (("payment", "list"), dict),
    (("notification", "list"), dict),
    (("config", "show"), dict),
    (("db", "status"), dict),
]

DATABASE_COMMANDS = [
    ("customer", "list"),
    ("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567"),
    ("order", "show", UNKNOWN_ORDER),
    ("db", "upgrade"),
]


def _command_paths() -> Iterator[tuple[str, ...]]:
    """Every group and command of the CLI, found from the app itself."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


COMMAND_PATHS = list(_command_paths())


def _is_group(path: tuple[str, ...]) -> bool:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return hasattr(command, "commands")


def test_cli_has_the_commands_of_the_design() -> None:
    paths = {" ".join(path) for path in COMMAND_PATHS}

    assert {
        "db upgrade",
        "customer create",
        "customer list",
        "product create",
        "product list",
        "order create",
        "order show",
        "order list",
        "order cancel",
        "charge",
        "payment show",
        "payment list",
        "config show",
    } <= paths


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(p) or "orderpay" for p in COMMAND_PATHS]
)
def test_help_exits_0_and_shows_an_example(path: tuple[str, ...]) -> None:
    outcome = Cli({})(*path, "--help")

    assert outcome.exit_code == 0
    assert "Example" in outcome.stdout


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(p) or "orderpay" for p in COMMAND_PATHS]
)
def test_dash_h_shows_the_same_help_as_dash_dash_help(path: tuple[str, ...]) -> None:
    long, short = Cli({})(*path, "--help"), Cli({})(*path, "-h")

    assert short.exit_code == 0
    assert short.stdout == long.stdout


GROUP_PATHS = [path for path in COMMAND_PATHS if _is_group(path)]


@pytest.mark.parametrize("path", GROUP_PATHS, ids=[" ".join(p) or "orderpay" for p in GROUP_PATHS])
def test_command_summaries_are_whole_at_80_columns(path: tuple[str, ...]) -> None:
    outcome = Cli({})(*path, "--help", COLUMNS="80")

    listing = outcome.stdout.split("Commands:", 1)[1]
    assert listing.strip()
    for line in listing.splitlines():
        assert len(line) <= 80, line
        assert not line.rstrip().endswith("..."), line


@pytest.mark.slow
def test_shell_completion_can_be_shown_and_installed(tmp_path: Path) -> None:
    shown = orderpay(tmp_path, "--show-completion", "bash")
    helped = orderpay(tmp_path, "--help")

    assert shown.exit_code == 0
    assert "_ORDERPAY_COMPLETE=complete_bash" in shown.stdout
    assert "--install-completion" in helped.stdout


@pytest.mark.slow
def test_shell_completion_completes_command_names(tmp_path: Path) -> None:
    completed = orderpay(
        tmp_path,
        env={"_ORDERPAY_COMPLETE": "complete_bash", "COMP_WORDS": "orderpay cu", "COMP_CWORD": "1"},
    )

    assert completed.exit_code == 0
    assert completed.stdout.split() == ["customer"]


@pytest.mark.parametrize(("args", "exit_code", "code"), USER_ERRORS, ids=USER_ERROR_IDS)
def test_user_error_exits_with_its_code_says_why_on_stderr_alone_and_stores_nothing(
    cli: Cli, db: Database, args: tuple[str, ...], exit_code: int, code: str
) -> None:
    before = count_rows(db)

    human = cli(*args)
    machine = cli(*args, "--json")

    document = json.loads(machine.stderr)
    assert (human.exit_code, machine.exit_code) == (exit_code, exit_code)
    assert (human.stdout, machine.stdout) == ("", "")
    assert list(document) == ["error"]
    assert document["error"]["code"] == code
    assert isinstance(document["error"]["message"], str)
    assert document["error"]["message"]
    assert code in human.stderr
    assert "Traceback" not in human.stderr + machine.stderr
    assert count_rows(db) == before


@pytest.mark.slow
def test_the_installed_command_reports_a_user_error_without_a_traceback(
    pg_url: str, tmp_path: Path
) -> None:
    # Only a real process shows one: in-process, an exception escaping the command is raised
    # into the test instead of printed.
    env = {"DATABASE_URL": pg_url}

    human = orderpay(tmp_path, "order", "show", UNKNOWN_ORDER, env=env)
    machine = orderpay(tmp_path, "order", "show", UNKNOWN_ORDER, "--json", env=env)

    assert (human.exit_code, machine.exit_code) == (3, 3)
    assert human.stderr.endswith("[order_not_found]\n")
    assert machine.error()["code"] == "order_not_found"
    assert "Traceback" not in human.stdout + human.stderr + machine.stdout + machine.stderr


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=USAGE_ERROR_IDS)
def test_usage_error_exits_2_with_a_json_document_on_stderr_under_json(
    cli: Cli, args: tuple[str, ...]
) -> None:
    human = cli(*args)
    machine = cli(*args, "--json")

    assert (human.exit_code, machine.exit_code) == (2, 2)
    assert (human.stdout, machine.stdout) == ("", "")
    assert "Traceback" not in human.stderr
    assert json.loads(machine.stderr)["error"]["code"] in invalid_input_codes()


@pytest.mark.parametrize(
    ("args", "kind"), READ_COMMANDS, ids=[" ".join(args) for args, _ in READ_COMMANDS]
)
def test_json_output_is_exactly_one_json_document_and_nothing_else(
    cli: Cli, db: Database, args: tuple[str, ...], kind: type
) -> None:
    an_order(db)

    outcome = cli(*args, "--json")

    assert outcome.exit_code == 0
    assert isinstance(json.loads(outcome.stdout), kind)
    assert outcome.stderr == ""


def test_order_show_json_is_exactly_one_json_document(cli: Cli, db: Database) -> None:
    order = an_order(db)

    outcome = cli("order", "show", str(order.id), "--json")

    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout)["id"] == str(order.id)
    assert outcome.stderr == ""


def test_db_upgrade_json_is_exactly_one_json_document(cli: Cli) -> None:
    outcome = cli("db", "upgrade", "--json")

    assert outcome.exit_code == 0
    assert set(json.loads(outcome.stdout)) >= {"before", "after"}
    assert outcome.stderr == ""


@pytest.mark.parametrize(
    "args", DATABASE_COMMANDS, ids=[" ".join(a[:2]) for a in DATABASE_COMMANDS]
)
def test_unreachable_database_exits_7_with_database_unavailable(args: tuple[str, ...]) -> None:
    cli = Cli({"DATABASE_URL": CLOSED_PORT_URL})

    outcome = cli(*args, "--json")

    assert outcome.exit_code == 7
    assert outcome.error()["code"] == "database_unavailable"
    assert outcome.stdout == ""


@pytest.mark.slow
def test_the_installed_command_reports_an_unreachable_database_without_a_traceback(
    tmp_path: Path,
) -> None:
    failed = orderpay(tmp_path, "customer", "list", env={"DATABASE_URL": CLOSED_PORT_URL})

    assert failed.exit_code == 7
    assert failed.stdout == ""
    assert failed.stderr.endswith("[database_unavailable]\n")
    assert "Traceback" not in failed.stderr


def test_unreachable_database_error_does_not_reveal_the_password() -> None:
    cli = Cli({"DATABASE_URL": "postgresql+psycopg2://root:pa55-Banku@127.0.0.1:1/x"})

    outcome = cli("customer", "list", "--json")

    assert outcome.exit_code == 7
    assert "pa55-Banku" not in outcome.stdout + outcome.stderr
