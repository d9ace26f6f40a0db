"""What every command shares: the --json option, the runtime, output helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from orderpay.runtime import Runtime

JSON_META_KEY = "orderpay.json"
T = TypeVar("T")


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    # ctx.meta is shared by the whole context tree, so the root group's error handler can
    # tell whether to report errors as JSON.
    if value:
        ctx.meta[JSON_META_KEY] = True
    return value


JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout (errors as JSON on stderr).",
        callback=_remember_json,
    ),
]

Limit = Annotated[
    int, typer.Option("--limit", min=1, max=1000, help="Show at most this many, newest first.")
]


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_root().obj
    assert obj is not None, "the root callback sets the runtime"
    return obj  # type: ignore[no-any-return]


def emit_json(document: Any) -> None:
    """One JSON document on stdout (without importing rich, which human output needs)."""
    import json

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def info(message: str) -> None:
    """A human note on stderr: never mixed into data on stdout."""
    typer.echo(message, err=True)


def confirm(question: str, *, yes: bool) -> None:
    """Go on only with the operator's consent: `--yes`, or "y" at a prompt on a terminal.

    Without a terminal to ask on (cron, a pipe, CI) a command is refused rather than run
    unasked (exit 2). Declining changes nothing and is not an error: exit 0.
    """
    if yes:
        return
    from orderpay.errors import ConfirmationRequired

    if not sys.stdin.isatty():
        raise ConfirmationRequired(
            f"{question.rstrip('?')}: this needs confirmation and there is no terminal to ask "
            "on; re-run with --yes"
        )
    if not typer.confirm(question, default=False, err=True):
        info("nothing changed")
        raise typer.Exit(0)


def progress(items: Sequence[T], description: str, *, enabled: bool = True) -> Iterable[T]:
    """`items`, with a progress bar on stderr when it is a terminal and the list is long."""
    if not enabled or len(items) < 2 or not sys.stderr.isatty():
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, console=Console(stderr=True))
