"""The command tree `orderpay` runs is built lazily, and says exactly what Typer's full tree says.

orderpay.cli.main builds the root group and only the subcommands a command line reaches
(orderpay.commands.tree); the in-process tests elsewhere run Typer's full tree. These tests
hold the two to the same help, usage errors and suggestions, and the lazy one to building only
what it needs.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from click.testing import CliRunner

from orderpay.cli import app
from orderpay.commands.tree import LazyCommands, lazy_command


def command_lines() -> list[list[str]]:
    """Every command and group of the full tree, as the words that name it."""
    lines: list[list[str]] = [[]]

    def walk(command: Any, words: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            lines.append([*words, name])
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return lines


def run(command: Any, args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(command, args, prog_name="orderpay")
    return result.exit_code, result.stdout, result.stderr


def built(root: Any) -> list[str]:
    commands = root.commands
    assert isinstance(commands, LazyCommands)
    return [command.name for command in commands.built()]


@pytest.mark.parametrize("words", command_lines(), ids=" ".join)
def test_every_help_is_the_one_typers_full_tree_shows(words: list[str]) -> None:
    assert run(lazy_command(app), [*words, "--help"]) == run(
        typer.main.get_command(app), [*words, "--help"]
    )


@pytest.mark.parametrize(
    "args", [[], ["ordr", "list"], ["order", "lst"], ["order", "list", "--limit", "0"], ["-x"]]
)
def test_a_usage_error_reads_as_typers_full_tree_says_it(args: list[str]) -> None:
    assert run(lazy_command(app), args) == run(typer.main.get_command(app), args)


def test_the_root_help_builds_no_group() -> None:
    root = lazy_command(app)

    run(root, ["--help"])

    assert set(built(root)) <= {c.name for c in app.registered_commands}


def test_a_command_line_builds_only_the_group_it_names() -> None:
    root = lazy_command(app)

    run(root, ["order", "list", "--help"])

    assert built(root) == ["order"]
    assert built(root.commands["order"]) == ["list"]
