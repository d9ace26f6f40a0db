"""The command tree, built only as far as the command line reaches.

Typer turns every command function into a Click command when the program starts: it reads
each signature and evaluates its annotations, for some sixty commands, whichever one is run.
Here the root group holds its subcommands as recipes: `orderpay order list` builds the `order`
group alone, and the root's --help lists each command from a hollow stand-in (its name, help
and flags, none of its subcommands). Each piece is built by Typer's own functions from what
was registered on the app, so the tree that is built is the one Typer builds;
tests/test_cli_tree.py compares the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING

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
    hollow = copy.copy(app)
    hollow.registered_commands, hollow.registered_groups = [], []
    root = typer.main.get_command(hollow)
    options = {
        "pretty_exceptions_short": app.pretty_exceptions_short,
        "rich_markup_mode": app.rich_markup_mode,
    }
    recipes: dict[str, tuple[Callable[[], Command], Callable[[], Command]]] = {}
    # Typer's order: the commands, then the groups.
    for command_info in app.registered_commands:
        name = command_info.name or typer.main.get_command_name(command_info.callback.__name__)  # type: ignore[union-attr]

        def build_command(info: CommandInfo = command_info) -> Command:
            return typer.main.get_command_from_info(info, **options)  # type: ignore[arg-type]

        recipes[name] = (build_command, build_command)
    for group_info in app.registered_groups:

        def build_group(info: TyperInfo = group_info) -> Command:
            return typer.main.get_group_from_info(
                info,
                suggest_commands=app.suggest_commands,
                **options,  # type: ignore[arg-type]
            )

        def build_stand_in(info: TyperInfo = group_info) -> Command:
            # The group with its help and flags but none of its subcommands.
            hollow_info = copy.copy(info)
            hollow_info.typer_instance = copy.copy(info.typer_instance)
            assert hollow_info.typer_instance is not None
            hollow_info.typer_instance.registered_commands = []
            hollow_info.typer_instance.registered_groups = []
            return build_group(hollow_info)

        group_name = group_info.name
        assert isinstance(group_name, str), "every group is added with its name"
        recipes[group_name] = (build_group, build_stand_in)
    root.commands = LazyCommands(recipes)  # type: ignore[attr-defined]
    return root
