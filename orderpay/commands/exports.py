"""`orderpay payment export`: the payments of a period as CSV or JSON, streamed.

Rows are written as they are read (store/exports.py reads with a server-side cursor), so the
memory an export takes does not grow with the number of payments. To a file, the export is
written beside it as FILE.partial and renamed over FILE once complete: FILE is never half
written, and a failed export leaves nothing behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from orderpay.commands.common import JsonFlag, Since, Until, emit_json, info, runtime
from orderpay.domain.states import PaymentStatus  # --status's choices; pure, cheap at start-up

if TYPE_CHECKING:
    from orderpay.store.exports import PaymentRecord

# The columns of the CSV and the fields of each JSON object, in this order.
COLUMNS = (
    "payment_id",
    "created_at",
    "updated_at",
    "status",
    "amount",
    "amount_minor",
    "currency",
    "provider",
    "provider_reference",
    "provider_transaction_id",
    "order_id",
    "customer_id",
    "customer_name",
    "failure_reason",
    "idempotency_key",
)
# A CSV cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


def payment_export(
    ctx: typer.Context,
    since: Since = None,
    until: Until = None,
    status: Annotated[
        PaymentStatus | None, typer.Option("--status", help="Only payments in this status.")
    ] = None,
    format_: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format", help="csv (a header row, then one row per payment; the default) or json."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (replaced only once the export is complete), not stdout.",
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Export the payments created in a period, oldest first, as CSV or JSON.

    One row per payment: its id, times (ISO 8601, UTC), status, amount in major and in minor
    units, currency, provider, provider reference and transaction id, order, customer id and
    name, failure reason and idempotency key. JSON is one array, one object per line. In CSV a
    value a spreadsheet would run as a formula (starting with = + - @) gets a leading '.
    --since is inclusive, --until exclusive. With --output a one-line summary goes to stderr
    (under --json: a JSON summary on stdout); a progress bar shows when stderr is a terminal.

    \b
    Examples:
      orderpay payment export --since 2026-11-01 --until 2026-12-01 -o nov.csv
      orderpay payment export --since 30d --status succeeded --json > paid.json
    """
    from orderpay.clock import utcnow
    from orderpay.domain.times import parse_moment
    from orderpay.errors import InvalidField
    from orderpay.store.exports import count_payment_records, payment_records

    now = utcnow()
    start = parse_moment(since, now, "since") if since is not None else None
    end = parse_moment(until, now, "until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise InvalidField(f"--since {since} is not before --until {until}", field="since")
    if json_ and output is None and format_ is ExportFormat.csv:
        raise InvalidField("--json writes JSON on stdout: drop --format csv, or give --output")
    fmt = format_ or (ExportFormat.json if json_ and output is None else ExportFormat.csv)
    if output is not None:
        check_writable(output)
    window: dict[str, Any] = {
        "since": start,
        "until": end,
        "status": status.value if status is not None else None,
    }
    write = write_json if fmt is ExportFormat.json else write_csv
    show_progress = sys.stderr.isatty() and (output is not None or not sys.stdout.isatty())

    with runtime(ctx).database.reading() as conn:
        records: Iterable[PaymentRecord] = payment_records(conn, **window)
        if show_progress:
            records = counted(records, count_payment_records(conn, **window))
        if output is None:
            write(records, sys.stdout)
            return
        rows = write_atomically(output, lambda out: write(records, out))
    if json_:
        emit_json({"output": str(output), "format": fmt.value, "payments": rows})
    else:
        info(f"exported {rows} payment{'s' if rows != 1 else ''} to {output} ({fmt.value})")


def check_writable(path: Path) -> None:
    """Refuse, before anything is read, an --output that cannot be written."""
    from orderpay.errors import InvalidField

    directory = path.parent
    if not directory.is_dir():
        raise InvalidField(
            f"cannot write {path}: the directory {directory} does not exist", field="output"
        )
    if path.is_dir():
        raise InvalidField(f"cannot write {path}: it is a directory", field="output")


def write_atomically(path: Path, write: Callable[[TextIO], int]) -> int:
    """`write` into PATH.partial, then rename it to PATH; on any failure remove it."""
    import os

    from orderpay.errors import InvalidField

    partial = path.with_name(path.name + ".partial")
    try:
        out = open(partial, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise InvalidField(f"cannot write {path}: {error.strerror}", field="output") from None
    try:
        with out:
            rows = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise InvalidField(f"cannot write {path}: {error.strerror}", field="output") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return rows


def counted(records: Iterable[PaymentRecord], total: int) -> Iterator[PaymentRecord]:
    """`records`, with a progress bar on stderr (the caller checked it is a terminal)."""
    from rich.console import Console
    from rich.progress import track

    yield from track(
        records,
        total=total,
        description="exporting",
        console=Console(stderr=True),
        transient=True,
    )


def fields(record: PaymentRecord) -> dict[str, Any]:
    """One payment as the export writes it (None: empty in CSV, null in JSON)."""
    return {
        "payment_id": str(record.id),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "status": record.status,
        "amount": record.amount.as_string(),
        "amount_minor": record.amount.minor_units,
        "currency": record.amount.currency,
        "provider": record.provider,
        "provider_reference": record.provider_reference,
        "provider_transaction_id": record.provider_transaction_id,
        "order_id": str(record.order_id),
        "customer_id": record.customer_id,
        "customer_name": record.customer_name,
        "failure_reason": record.failure_reason,
        "idempotency_key": record.idempotency_key,
    }


def write_csv(records: Iterable[PaymentRecord], out: TextIO) -> int:
    import csv

    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    rows = 0
    for record in records:
        writer.writerow([_cell(value) for value in fields(record).values()])
        rows += 1
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def write_json(records: Iterable[PaymentRecord], out: TextIO) -> int:
    """One JSON array, one object per line, written as the rows come."""
    import json

    rows = 0
    out.write("[")
    for record in records:
        out.write(",\n" if rows else "\n")
        out.write(json.dumps(fields(record), ensure_ascii=False))
        rows += 1
    out.write("\n]\n" if rows else "]\n")
    return rows
