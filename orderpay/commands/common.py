"""What every command shares: the --json option, the runtime, output helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from orderpay.runtime import Runtime

JSON_META_KEY = "orderpay.json"


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


def wants_json(ctx: typer.Context) -> bool:
    return bool(ctx.meta.get(JSON_META_KEY))


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_root().obj
    assert obj is not None, "the root callback sets the runtime"
    return obj  # type: ignore[no-any-return]


def emit_json(document: Any) -> None:
    from orderpay.render import print_json

    print_json(document)


def info(message: str) -> None:
    """A human note on stderr: never mixed into data on stdout."""
    typer.echo(message, err=True)
