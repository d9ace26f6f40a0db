"""Tables that fit the terminal without cutting what matters.

Amounts, currencies, statuses, phone numbers, keys and ids are never cut or wrapped: a table
keeps the columns that fit whole, in the order of their importance, and drops the rest (it says
which, and `--json` has everything). Free text (details, errors) wraps into the width left.
When even the essential columns cannot fit, each row is printed as a block of `name: value`
lines instead. Widths come from the terminal, or COLUMNS, or 80 when output is not a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "yellow",
    "initiated": "yellow",
    "paid": "green",
    "succeeded": "green",
    "sent": "green",
    "delivered": "green",
    "failed": "red",
    "undelivered": "red",
    "cancelled": "dim",
    "partially_refunded": "cyan",
    "refunded": "cyan",
}


# What a row costs beyond its cells' text: a space each side of every cell, and a separator
# between two cells (the table has no outer edge).
def _overhead(columns: int) -> int:
    return 3 * columns - 1 if columns else 0


# Free text never gets narrower than this; below it, the row is printed as a block.
MIN_TEXT_WIDTH = 16


@dataclass(frozen=True)
class Column:
    header: str
    essential: bool = False  # a row without it means nothing: never dropped
    text: bool = False  # free text: wraps instead of taking its whole width
    rank: int = 0  # optional columns are kept in order of rank (lower first)
    justify: str = "left"


def console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def when(value: datetime | None) -> str:
    """A time as tables show it: to the second, with its zone (always UTC here)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def styled(column: str, value: str) -> Text:
    if column == "status" and value in STATUS_STYLES:
        return Text(value, style=STATUS_STYLES[value])
    return Text(value)


def fit(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    empty: str = "none",
) -> RenderableType:
    """The rows as a table that fits `width`, or as blocks when it cannot."""
    if not rows:
        return Text(f"{title}: {empty}")
    widths = [
        max(len(column.header), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)
    ]
    blank = {i for i, c in enumerate(columns) if not c.essential and not any(r[i] for r in rows)}
    kept = _columns_that_fit(columns, widths, width, skip=blank)
    if kept is None:
        return _blocks(title, columns, rows)
    table = Table(title=title, title_justify="left", show_edge=False, expand=False)
    for i in sorted(kept):
        column = columns[i]
        table.add_column(
            column.header,
            no_wrap=not column.text,
            overflow="fold",
            justify=column.justify,  # type: ignore[arg-type]
            min_width=min(widths[i], MIN_TEXT_WIDTH) if column.text else widths[i],
        )
    for row in rows:
        table.add_row(*(styled(columns[i].header, row[i]) for i in sorted(kept)))
    dropped = [columns[i].header for i in range(len(columns)) if i not in kept | blank]
    if dropped:
        table.caption = f"not shown at this width: {', '.join(dropped)} (see --json)"
        table.caption_justify = "left"
    return table


def _columns_that_fit(
    columns: Sequence[Column], widths: Sequence[int], width: int, skip: set[int]
) -> set[int] | None:
    """Indexes of the columns to show; None if the essential ones don't fit. Optional columns
    in `skip` (empty in every row) are never shown."""

    def cost(chosen: list[int]) -> int:
        return sum(
            min(widths[i], MIN_TEXT_WIDTH) if columns[i].text else widths[i] for i in chosen
        ) + _overhead(len(chosen))

    chosen = [i for i, column in enumerate(columns) if column.essential]
    if cost(chosen) > width:
        return None
    optional = sorted(
        (i for i, column in enumerate(columns) if not column.essential and i not in skip),
        key=lambda i: (columns[i].rank, i),
    )
    for i in optional:
        if cost([*chosen, i]) <= width:
            chosen.append(i)
    return set(chosen)


def _blocks(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> Group:
    label = max(len(column.header) for column in columns)
    parts: list[Any] = [Text(title, style="italic")]
    for row in rows:
        block = Text()
        for column, value in zip(columns, row, strict=True):
            if value:
                block.append(f"{column.header:<{label}}  ", style="bold")
                block.append_text(styled(column.header, value))
                block.append("\n")
        parts.append(block)
    return Group(*parts)
