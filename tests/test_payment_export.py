"""`orderpay payment export`: a period's payments as CSV or JSON, streamed to stdout or to a file
that is replaced only once complete."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from orderpay.clock import utcnow
from orderpay.commands import exports
from orderpay.store.db import Database
from orderpay.store.exports import payment_records
from orderpay.store.schema import customers, orders, payments
from tests.conftest import Cli, count_rows
from tests.user_shell import ORDERPAY, orderpay, orderpay_at_a_terminal, user_env

HEADER = [
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
]
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
MEMORY_CEILING = 30 * 1024 * 1024
# Runs a command, then prints the largest resident memory (KiB) any child of it reached.
LAUNCHER = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def a_payment(
    db: Database,
    created_at: datetime,
    *,
    status: str = "succeeded",
    amount: int = 2500,
    currency: str = "GHS",
    customer_name: str = "Ama Mensah",
    failure_reason: str | None = None,
    key: str | None = None,
    transaction_id: str | None = None,
    payment_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A customer, an order and its payment, written as rows (test set-up: any values)."""
    pid = payment_id or uuid.uuid4()
    oid = uuid.uuid4()
    with db.transaction() as conn:
        cid = conn.execute(
            insert(customers)
            .values(name=customer_name, phone="+233241234567", created_at=created_at)
            .returning(customers.c.id)
        ).scalar_one()
        conn.execute(
            insert(orders).values(
                id=oid,
                customer_id=cid,
                status="paid" if status == "succeeded" else "pending",
                currency=currency,
                total=amount,
                created_at=created_at,
                updated_at=created_at,
            )
        )
        conn.execute(
            insert(payments).values(
                id=pid,
                order_id=oid,
                idempotency_key=key or f"key-{pid}",
                fingerprint="f" * 64,
                amount=amount,
                currency=currency,
                payer_phone="+233241234567",
                provider="simulator",
                provider_reference=str(pid),
                provider_transaction_id=transaction_id,
                status=status,
                failure_reason=failure_reason,
                created_at=created_at,
                updated_at=created_at + timedelta(seconds=42),
            )
        )
    return pid


def exported_csv(cli: Cli, tmp_path: Path, *args: str) -> list[list[str]]:
    target = tmp_path / "payments.csv"
    outcome = cli("payment", "export", "--output", str(target), *args)
    assert outcome.exit_code == 0, outcome.stderr
    with target.open(newline="", encoding="utf-8") as exported:
        return list(csv.reader(exported))


def a_hundred_thousand_payments(db: Database) -> None:
    """100,000 succeeded payments (and their orders), one a second from 2026-01-01."""
    with db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (name, phone, created_at) "
                "VALUES ('Ama Mensah', '+233241234567', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO orders (id, customer_id, status, currency, total, created_at, "
                "updated_at) SELECT md5('order' || i)::uuid, 1, 'paid', 'GHS', 2500 + i, "
                "timestamptz '2026-01-01' + i * interval '1 second', now() "
                "FROM generate_series(1, 100000) AS i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount, "
                "currency, payer_phone, provider, provider_reference, provider_transaction_id, "
                "status, failure_reason, created_at, updated_at) "
                "SELECT md5('payment' || i)::uuid, md5('order' || i)::uuid, 'key-' || i, "
                "md5('fingerprint' || i), 2500 + i, 'GHS', '+233241234567', 'simulator', "
                "'reference-' || i, 'transaction-' || i, 'succeeded', NULL, "
                "timestamptz '2026-01-01' + i * interval '1 second', now() "
                "FROM generate_series(1, 100000) AS i"
            )
        )


def peak_memory_of_export(tmp_path: Path, pg_url: str, *args: str) -> float:
    """The peak resident memory (MiB) of the installed `orderpay payment export ARGS`.

    Started from a small launcher: a child forked from pytest itself would count pytest's
    pages as its own until it execs."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(ORDERPAY), "payment", "export", *args],
        cwd=tmp_path,
        env=user_env(tmp_path, {"DATABASE_URL": pg_url}),
        capture_output=True,
        text=True,
        # Only a guard against a hang: under the suite's parallel process-heavy tests on a
        # 2-core machine, one export of this table has taken over 120 s.
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout) / 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.slow
def test_an_export_of_100000_payments_streams_in_bounded_python_memory(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_hundred_thousand_payments(db)
    target = tmp_path / "all.csv"

    tracemalloc.start()
    try:
        outcome = cli("payment", "export", "--output", str(target))
        _, export_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with db.transaction() as conn:  # the same rows, held in memory: a tenth of them
            held = list(islice(payment_records(conn), 10_000))
            _, tenth_peak = tracemalloc.get_traced_memory()
        del held
    finally:
        tracemalloc.stop()

    all_in_memory = tenth_peak * 10
    print(
        f"export peak {export_peak / 2**20:.1f} MiB; 100,000 rows held in memory "
        f"~{all_in_memory / 2**20:.1f} MiB"
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr == f"exported 100000 payments to {target} (csv)\n"
    with target.open(newline="") as exported:
        rows = sum(1 for _ in csv.reader(exported))
    assert rows == 100_001  # and the header
    assert export_peak < MEMORY_CEILING
    assert export_peak < all_in_memory / 4


@pytest.mark.slow
def test_the_installed_command_exports_100000_payments_in_bounded_process_memory(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    # Python's heap is not all: a client-side cursor would hold every row in libpq's memory.
    a_hundred_thousand_payments(db)

    nothing = peak_memory_of_export(tmp_path, pg_url, "--until", "2025-01-01", "-o", "none.csv")
    everything = peak_memory_of_export(tmp_path, pg_url, "-o", "all.csv")

    print(
        f"peak resident memory: {everything:.1f} MiB for 100,000 payments, {nothing:.1f} MiB "
        "for none"
    )
    assert (tmp_path / "all.csv").read_text().count("\n") == 100_001
    assert everything - nothing < 20


@pytest.mark.slow
def test_the_csv_has_a_header_then_each_payment_with_its_exact_values(
    any_db: Database, any_cli: Cli, tmp_path: Path
) -> None:
    pid = uuid.UUID("7d2a61f0-3c4b-4d5e-8f60-718293a4b5c6")
    a_payment(
        any_db,
        datetime(2026, 11, 1, 14, 30, 5, 123456, tzinfo=UTC),
        status="failed",
        amount=1250,
        customer_name="Mensah, Ama Akosua",
        failure_reason='declined: "low funds"',
        key="order-42-attempt-1",
        payment_id=pid,
    )
    with any_db.transaction() as conn:
        order_id, customer_id = conn.execute(
            text("SELECT orders.id, orders.customer_id FROM orders")
        ).one()

    rows = exported_csv(any_cli, tmp_path)

    assert rows[0] == HEADER
    assert rows[1:] == [
        [
            str(pid),
            "2026-11-01T14:30:05.123456+00:00",
            "2026-11-01T14:30:47.123456+00:00",
            "failed",
            "12.50",
            "1250",
            "GHS",
            "simulator",
            str(pid),
            "",
            str(uuid.UUID(str(order_id))),
            str(customer_id),
            "Mensah, Ama Akosua",
            'declined: "low funds"',
            "order-42-attempt-1",
        ]
    ]


def test_csv_quotes_commas_and_quotes_in_values(db: Database, cli: Cli, tmp_path: Path) -> None:
    a_payment(db, NOV_1, customer_name="Mensah, Ama", failure_reason='said "no"', status="failed")
    target = tmp_path / "payments.csv"

    assert cli("payment", "export", "-o", str(target)).exit_code == 0

    line = target.read_text(encoding="utf-8").splitlines()[1]
    assert ',"Mensah, Ama","said ""no""",' in line


def test_amounts_have_the_decimals_of_their_currency(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_payment(db, NOV_1, amount=150000, currency="UGX")
    a_payment(db, NOV_1 + timedelta(seconds=1), amount=5, currency="GHS")

    rows = exported_csv(cli, tmp_path)

    assert [(row[4], row[5], row[6]) for row in rows[1:]] == [
        ("150000", "150000", "UGX"),
        ("0.05", "5", "GHS"),
    ]


def test_a_value_a_spreadsheet_would_run_as_a_formula_is_defused_in_csv_but_exact_in_json(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_payment(db, NOV_1, customer_name='=HYPERLINK("http://evil.example","x")')

    rows = exported_csv(cli, tmp_path)
    document = cli("payment", "export", "--format", "json")

    assert rows[1][HEADER.index("customer_name")] == '\'=HYPERLINK("http://evil.example","x")'
    assert document.json()[0]["customer_name"] == '=HYPERLINK("http://evil.example","x")'


def test_json_is_one_array_of_objects_with_the_csv_columns(db: Database, cli: Cli) -> None:
    first = a_payment(db, NOV_1, transaction_id="7700123456")
    second = a_payment(db, NOV_1 + timedelta(minutes=1), status="pending")

    outcome = cli("payment", "export", "--format", "json")

    document = outcome.json()
    assert outcome.exit_code == 0
    assert [item["payment_id"] for item in document] == [str(first), str(second)]
    assert list(document[0]) == HEADER
    assert document[0]["amount"] == "25.00"
    assert document[0]["amount_minor"] == 2500
    assert document[0]["provider_transaction_id"] == "7700123456"
    assert document[1]["provider_transaction_id"] is None
    assert document[1]["created_at"] == "2026-11-01T00:01:00+00:00"


def test_json_of_no_payments_is_an_empty_array(cli: Cli) -> None:
    outcome = cli("payment", "export", "--json")

    assert outcome.exit_code == 0
    assert outcome.json() == []


def test_since_and_until_take_the_payments_created_in_the_window_oldest_first(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_payment(db, NOV_1 - timedelta(microseconds=1))
    at_start = a_payment(db, NOV_1)
    inside = a_payment(db, datetime(2026, 11, 15, 9, 0, tzinfo=UTC))
    a_payment(db, datetime(2026, 12, 1, tzinfo=UTC))  # --until is exclusive

    rows = exported_csv(cli, tmp_path, "--since", "2026-11-01", "--until", "2026-12-01")

    assert [row[0] for row in rows[1:]] == [str(at_start), str(inside)]


def test_since_takes_an_age(db: Database, cli: Cli, tmp_path: Path) -> None:
    a_payment(db, utcnow() - timedelta(days=31))
    recent = a_payment(db, utcnow() - timedelta(days=29))

    rows = exported_csv(cli, tmp_path, "--since", "30d")

    assert [row[0] for row in rows[1:]] == [str(recent)]


def test_until_takes_a_time_of_day(db: Database, cli: Cli, tmp_path: Path) -> None:
    before = a_payment(db, datetime(2026, 11, 1, 14, 29, 59, tzinfo=UTC))
    a_payment(db, datetime(2026, 11, 1, 14, 30, tzinfo=UTC))

    rows = exported_csv(cli, tmp_path, "--until", "2026-11-01T14:30")

    assert [row[0] for row in rows[1:]] == [str(before)]


def test_status_keeps_only_payments_in_that_status(db: Database, cli: Cli, tmp_path: Path) -> None:
    a_payment(db, NOV_1, status="failed", failure_reason="declined")
    paid = a_payment(db, NOV_1 + timedelta(seconds=1))

    rows = exported_csv(cli, tmp_path, "--status", "succeeded")

    assert [row[0] for row in rows[1:]] == [str(paid)]


def test_a_bad_format_is_exit_2_and_writes_nothing(db: Database, cli: Cli, tmp_path: Path) -> None:
    a_payment(db, NOV_1)
    target = tmp_path / "payments.xml"

    outcome = cli("payment", "export", "--format", "xml", "--output", str(target))

    assert outcome.exit_code == 2
    assert "'xml' is not one of 'csv', 'json'" in outcome.stderr
    assert outcome.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "'yesterday' is not a time"),
        (("--since", "2026-12-01", "--until", "2026-11-01"), "is not before --until"),
        (("--format", "csv", "--json"), "drop --format csv"),
    ],
    ids=["since-not-a-time", "empty-window", "csv-as-json"],
)
def test_a_bad_window_or_format_is_exit_2_with_nothing_on_stdout(
    db: Database, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    a_payment(db, NOV_1)

    outcome = cli("payment", "export", *args)

    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert outcome.stdout == ""


def test_output_into_a_missing_directory_is_exit_2_naming_it_and_leaves_nothing(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_payment(db, NOV_1)
    target = tmp_path / "reports" / "november.csv"
    before = count_rows(db)

    outcome = cli("payment", "export", "--output", str(target), "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "invalid_field"
    assert str(target) in outcome.error()["message"]
    assert "does not exist" in outcome.error()["message"]
    assert outcome.stdout == ""
    assert list(tmp_path.iterdir()) == []
    assert count_rows(db) == before


def test_output_onto_a_directory_is_exit_2_naming_it(cli: Cli, tmp_path: Path) -> None:
    outcome = cli("payment", "export", "--output", str(tmp_path))

    assert outcome.exit_code == 2
    assert f"cannot write {tmp_path}: it is a directory" in outcome.stderr


def test_an_export_that_fails_midway_keeps_the_old_file_and_leaves_no_partial_file(
    db: Database, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_payment(db, NOV_1)
    a_payment(db, NOV_1 + timedelta(seconds=1))
    target = tmp_path / "payments.csv"
    target.write_text("last month's export\n")
    shaped = exports.fields
    calls = []

    def failing_on_the_second_row(record: object) -> object:
        calls.append(record)
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return shaped(record)  # type: ignore[arg-type]

    monkeypatch.setattr(exports, "fields", failing_on_the_second_row)

    outcome = cli("payment", "export", "--output", str(target))

    assert outcome.exit_code == 1
    assert target.read_text() == "last month's export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payments.csv"]


def test_a_complete_export_replaces_the_file(db: Database, cli: Cli, tmp_path: Path) -> None:
    a_payment(db, NOV_1)
    target = tmp_path / "payments.csv"
    target.write_text("last month's export\n")

    outcome = cli("payment", "export", "--output", str(target))

    assert outcome.exit_code == 0
    assert target.read_text().startswith("payment_id,created_at,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payments.csv"]


def test_without_output_the_csv_goes_to_stdout_and_stderr_stays_empty(
    db: Database, cli: Cli
) -> None:
    pid = a_payment(db, NOV_1)

    outcome = cli("payment", "export")

    rows = list(csv.reader(io.StringIO(outcome.stdout)))
    assert outcome.exit_code == 0
    assert rows[0] == HEADER
    assert rows[1][0] == str(pid)
    assert outcome.stderr == ""


def test_under_json_with_output_the_summary_is_a_json_document(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    a_payment(db, NOV_1)
    target = tmp_path / "payments.json"

    document = cli.ok("payment", "export", "--format", "json", "--output", str(target))

    assert document == {"output": str(target), "format": "json", "payments": 1}
    assert len(json.loads(target.read_text())) == 1


@pytest.mark.slow
def test_no_progress_bar_when_stderr_is_not_a_terminal(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    a_payment(db, NOV_1)

    run = orderpay(tmp_path, "payment", "export", "-o", "out.csv", env={"DATABASE_URL": pg_url})

    assert run.exit_code == 0, run.stderr
    assert run.stderr == "exported 1 payment to out.csv (csv)\n"


@pytest.mark.slow
def test_a_progress_bar_shows_when_stderr_is_a_terminal(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    a_payment(db, NOV_1)

    run = orderpay_at_a_terminal(
        tmp_path, "payment", "export", "-o", "out.csv", answer="", env={"DATABASE_URL": pg_url}
    )

    assert run.exit_code == 0, run.stdout
    assert "exporting" in run.stdout
    assert "100%" in run.stdout
    assert "exported 1 payment to out.csv (csv)" in run.stdout


def test_an_export_on_sqlite_holds_no_writer_back(sqlite_db: Database) -> None:
    a_payment(sqlite_db, NOV_1)
    a_payment(sqlite_db, NOV_1 + timedelta(seconds=1))

    with sqlite_db.reading() as conn:
        stream = payment_records(conn)
        next(stream)  # the export is under way
        writer = Database(sqlite_db.url)
        try:
            a_payment(writer, NOV_1 + timedelta(seconds=2))  # would wait 15 s, then fail
        finally:
            writer.dispose()
        rest = list(stream)

    assert len(rest) == 1  # the export reads its own snapshot
