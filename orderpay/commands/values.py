"""Command-line values read without pydantic, for the values Typer would read the same way.

Typer converts each option's value through a pydantic TypeAdapter that it builds on first use,
so any command with an option loads pydantic and builds an adapter per option: a large part of
what a read command costs at start-up. The plain cases (text, whole numbers within their range,
an enum's choice, a value Click already typed) are read here with Typer's own choice rule; every
other value, and every value that would be refused, goes to Typer's conversion, so what it
accepts, what it returns and what it says when it refuses stay Typer's.

This reaches into Typer's parameters (`_runtime_param`, RuntimeParam): Typer is pinned to one
minor version, and tests/test_cli_values.py compares the two conversions value by value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import coerce_cli_choice
from typer.core import _TyperParameter

from orderpay.commands.tree import LazyCommands

if TYPE_CHECKING:
    from typer._click.core import Command, Context

# Longer numbers, signs and leading zeros are left to Typer (pydantic has its own rules there).
_WHOLE = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_TYPERS_OWN = object()  # "not a plain case": Typer's own conversion decides


@dataclass(frozen=True)
class PlainValue(RuntimeParam):
    """One parameter's conversion: the plain cases here, the rest through Typer's."""

    descriptor: TypeDescriptor = field(kw_only=True)
    _typers: list[RuntimeParam] = field(default_factory=list, kw_only=True, compare=False)

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        plain = _plain(self.descriptor, value, ctx)
        if plain is not _TYPERS_OWN:
            return plain
        if not self._typers:  # built once, on the first value that needs it
            self._typers.append(build_runtime_param(self.descriptor))
        return self._typers[0]._coerce_value(value, param=param, ctx=ctx)


def _plain(descriptor: TypeDescriptor, value: Any, ctx: Any) -> Any:
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if info.parser is not None or descriptor.file_annotation is not None:
        return _TYPERS_OWN
    if annotation is str:
        return value if isinstance(value, str) else _TYPERS_OWN
    if annotation is int and not info.clamp:
        if isinstance(value, str) and _WHOLE.fullmatch(value):
            number = int(value)
        elif type(value) is int:
            number = value
        else:
            return _TYPERS_OWN
        if (info.min is not None and number < info.min) or (
            info.max is not None and number > info.max
        ):
            return _TYPERS_OWN
        return number
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, str):
            return _TYPERS_OWN
        try:
            return coerce_cli_choice(
                value, choices=tuple(annotation), case_sensitive=info.case_sensitive, ctx=ctx
            )
        except ValueError:
            return _TYPERS_OWN
    texts = getattr(annotation, "__origin__", None) is list and annotation.__args__ == (str,)
    if texts and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    return _TYPERS_OWN


def read_values_plainly(command: Command, help_names: list[str]) -> None:
    """Give every Typer parameter of `command` and its subcommands the plain conversion,
    their help options included (`help_names`: the names a context of `command` inherits)."""
    help_names = command.context_settings.get("help_option_names", help_names)
    # Click makes a command's help option on first use, from its context's names only.
    help_option = command.get_help_option(cast("Context", _HelpNames(help_names)))
    for param in [*command.params, help_option]:
        if isinstance(param, _TyperParameter) and param._runtime_param is None:
            descriptor = param.type_descriptor
            param._runtime_param = PlainValue(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )
    subcommands = getattr(command, "commands", {})
    if isinstance(subcommands, LazyCommands):  # those not built yet get it when they are
        subcommands.when_built(lambda sub: read_values_plainly(sub, help_names))
        subcommands = dict(enumerate(subcommands.built()))
    for sub in subcommands.values():
        read_values_plainly(sub, help_names)


@dataclass(frozen=True)
class _HelpNames:
    help_option_names: list[str]
