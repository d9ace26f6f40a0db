"""Command-line values read without pydantic give what Typer's own conversion gives.

orderpay.commands.values reads the plain cases itself (text, whole numbers in range, an enum's
choice) and hands everything else to Typer; these tests run both conversions on every
parameter of the real command tree and hold them to the same value or the same refusal.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import typer.main
from typer._click.core import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter

from orderpay.cli import app
from orderpay.commands.values import PlainValue, read_values_plainly

VALUES = [
    *("", "x", "abc def", "0", "1", "50", "1000", "1001", "-1", "+5", "007", " 5", "5.0"),
    *("1_000", "99999999999999999999", "pending", "PAID", "paid", "bogus", "csv", "fork"),
    *(0, 50, 1001),
    ("a", "b:2"),
    ["c"],
]


@functools.cache
def command_tree() -> Any:
    return typer.main.get_command(app)


def parameters() -> list[tuple[str, _TyperParameter]]:
    root = command_tree()
    found: list[tuple[str, _TyperParameter]] = []

    def walk(command: Any, path: str) -> None:
        for param in command.params:
            if isinstance(param, _TyperParameter):
                found.append((f"{path} {param.name}", param))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root, "orderpay")
    return found


def answer(runtime: Any, param: _TyperParameter, value: Any) -> tuple[str, Any]:
    ctx = Context(command_tree())
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except BadParameter as error:
        return "refused", error.format_message()


@pytest.mark.parametrize(("where", "param"), parameters(), ids=lambda x: str(x))
def test_every_parameter_reads_each_value_as_typer_would(
    where: str, param: _TyperParameter
) -> None:
    descriptor = param.type_descriptor
    plain = PlainValue(
        parameter_info=descriptor.parameter_info,
        annotation=descriptor.annotation,
        descriptor=descriptor,
    )
    typers = build_runtime_param(descriptor)

    for value in VALUES:
        assert answer(plain, param, value) == answer(typers, param, value), (where, value)


def test_every_parameter_of_the_command_tree_gets_the_plain_reading() -> None:
    root = typer.main.get_command(app)

    read_values_plainly(root, ["-h", "--help"])

    params = parameters_of(root)
    assert {name for name, _ in params} >= {"help", "json_", "limit", "status"}
    assert all(isinstance(param._runtime_param, PlainValue) for _, param in params)


def parameters_of(command: Any) -> list[tuple[str, _TyperParameter]]:
    ctx = Context(command, help_option_names=["-h", "--help"])
    params = command.get_params(ctx)
    found = [(p.name or "", p) for p in params if isinstance(p, _TyperParameter)]
    for sub in getattr(command, "commands", {}).values():
        found += parameters_of(sub)
    return found
