"""The command tree, built only as far as the command line reaches.

Typer turns every command function into a Click command when the program starts: it reads
each signature and evaluates its annotations, for every command, whichever one is run.
Here each group holds its subcommands as recipes: `orderpay order list` builds the `order`
group and its `list` command alone, and a group's --help lists its subgroups from hollow
stand-ins (their names, help and flags, none of their subcommands). Each piece is built by
Typer's own functions from what was registered on the app, so the tree that is built is the
one Typer builds; tests/test_cli_tree.py compares the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer.models import CommandInfo, TyperInfo

if TYPE_CHECKING:
    from typer._click.core import Command


class LazyCommands(MutableMapping[str, "Command"]):
    """Subcommands by name, in Typer's order, each built on first use."""

    def __init__(self, recipes: dict[str, tuple[Callable[[], Command], Callable[[], Command]]]):
        # name -> (build the command, build a stand-in that lists like it)
        self._recipes = recipes
        self._built: dict[str, Command] = {}
        self._on_build: Callable[[Command], None] = lambda command: None

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            build, _ = self._recipes[name]  # KeyError: no such command
            self._built[name] = build()
            self._on_build(self._built[name])
        return self._built[name]

    def built(self) -> list[Command]:
        return list(self._built.values())

    def when_built(self, then: Callable[[Command], None]) -> None:
        """Call `then` with each command built from now on."""
        self._on_build = then

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command
        self._recipes.setdefault(name, (lambda: command, lambda: command))

    def __delitem__(self, name: str) -> None:
        del self._recipes[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._recipes)

    def __len__(self) -> int:
        return len(self._recipes)

    def listing(self) -> dict[str, Command]:
        """What a list of the commands needs: the built ones, and stand-ins for the rest."""
        return {
            name: self._built[name] if name in self._built else stand_in()
            for name, (_, stand_in) in self._recipes.items()
        }


def lazy_command(app: typer.Typer) -> Command:
    """The app's root group as Typer makes it, with its subcommands built on demand."""
    root = typer.main.get_command(_hollow(app))
    root.commands = _subcommands(app, app)  # type: ignore[attr-defined]
    return root


def _subcommands(typer_instance: typer.Typer, app: typer.Typer) -> LazyCommands:
    """The recipes of what is registered on `typer_instance`, in Typer's order (commands, then
    groups); `app` is the root, whose settings Typer applies to the whole tree."""
    options: dict[str, Any] = {
        "pretty_exceptions_short": app.pretty_exceptions_short,
        "rich_markup_mode": app.rich_markup_mode,
    }
    recipes: dict[str, tuple[Callable[[], Command], Callable[[], Command]]] = {}
    for command_info in typer_instance.registered_commands:
        callback = command_info.callback
        assert callback is not None
        name = command_info.name or typer.main.get_command_name(callback.__name__)

        def build_command(info: CommandInfo = command_info) -> Command:
            return typer.main.get_command_from_info(info, **options)

        recipes[name] = (build_command, build_command)
    for group_info in typer_instance.registered_groups:

        def build_stand_in(info: TyperInfo = group_info) -> Command:
            # The group with its help, flags and options, and none of its subcommands.
            hollow_info = copy.copy(info)
            assert info.typer_instance is not None
            hollow_info.typer_instance = _hollow(info.typer_instance)
            return typer.main.get_group_from_info(
                hollow_info, suggest_commands=app.suggest_commands, **options
            )

        def build_group(info: TyperInfo = group_info) -> Command:
            group = build_stand_in(info)
            assert info.typer_instance is not None
            group.commands = _subcommands(info.typer_instance, app)  # type: ignore[attr-defined]
            return group

        group_name = group_info.name
        assert isinstance(group_name, str), "every group is added with its name"
        recipes[group_name] = (build_group, build_stand_in)
    return LazyCommands(recipes)


def _hollow(typer_instance: typer.Typer) -> typer.Typer:
    """A copy of `typer_instance` with its settings and callback, and nothing registered."""
    hollow = copy.copy(typer_instance)
    hollow.registered_commands, hollow.registered_groups = [], []
    return hollow
