"""`orderpay events tail`: the order's events as it is written, until interrupted.

The installed command runs in a subprocess while the test writes order events through the
one writer (store/order_events.py). A test that needs the tail to have started first waits for its
"following ..." note on stderr; one that must not wait passes --after, the id it resumes after.
Nothing here sleeps: --count ends the tail once it has printed what the test waits for.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from orderpay.store.db import Database
from orderpay.store.order_events import last_event_id, record_event
from tests.builders import an_order
from tests.conftest import Cli, count_rows
from tests.user_shell import ORDERPAY, user_env

UNKNOWN_ORDER = "00000000-0000-4000-8000-000000000042"
TIMEOUT = 30.0


class Tail:
    """A running `orderpay events tail`, its output read a line at a time."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def line(self, stream: IO[str] | None) -> str:
        assert stream is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "the tail printed nothing in time"
        return stream.readline()

    def ready(self) -> str:
        """Wait for its note that it follows the order events (stderr, human output only)."""
        note = self.line(self.process.stderr)
        assert note.startswith("following the order's events after event"), note
        return note

    def finish(self) -> tuple[int, str, str]:
        """Wait for it to exit; its exit code and the output not read yet. (Not communicate():
        it reads the pipes beneath what `line` may have buffered.)"""
        exit_code = self.process.wait(timeout=TIMEOUT)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        return exit_code, self.process.stdout.read(), self.process.stderr.read()


@contextmanager
def tail(directory: Path, url: str, *args: str) -> Iterator[Tail]:
    with subprocess.Popen(
        [str(ORDERPAY), "events", "tail", *args],
        cwd=directory,
        env=user_env(directory, {"DATABASE_URL": url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            yield Tail(process)
        finally:
            if process.poll() is None:
                process.kill()


def write(db: Database, order_id: uuid.UUID, *events: str) -> None:
    for event in events:
        with db.transaction() as conn:
            record_event(conn, order_id, event, f"detail of {event}")


def last_id(db: Database) -> int:
    with db.transaction() as conn:
        return last_event_id(conn)


@pytest.mark.slow
def test_tail_prints_events_written_after_it_started_in_order_as_ndjson(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with tail(tmp_path, pg_url, "--json", "--count", "3", "--after", str(last_id(db))) as running:
        write(db, order.id, "first", "second", "third")

        exit_code, stdout, stderr = running.finish()

    lines = [json.loads(line) for line in stdout.splitlines()]
    assert (exit_code, stderr) == (0, "")
    assert [(e["event"], e["detail"], e["order"]) for e in lines] == [
        ("first", "detail of first", str(order.id)),
        ("second", "detail of second", str(order.id)),
        ("third", "detail of third", str(order.id)),
    ]
    assert [e["id"] for e in lines] == sorted(e["id"] for e in lines)
    assert all(set(e) == {"id", "order", "at", "event", "detail", "operator"} for e in lines)
    assert [e["operator"] for e in lines] == [None, None, None]  # none was an operator's


def an_operators_action(db: Database, order_id: uuid.UUID) -> None:
    with db.transaction() as conn:
        record_event(conn, order_id, "order_cancelled", "by the operator", operator="akosua")


@pytest.mark.slow
def test_tail_names_the_operator_of_an_operators_action_in_json(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with tail(tmp_path, pg_url, "--json", "--count", "2", "--after", str(last_id(db))) as running:
        write(db, order.id, "by_the_system")
        an_operators_action(db, order.id)

        exit_code, stdout, _ = running.finish()

    lines = [json.loads(line) for line in stdout.splitlines()]
    assert exit_code == 0
    assert [(e["event"], e["operator"]) for e in lines] == [
        ("by_the_system", None),
        ("order_cancelled", "akosua"),
    ]


@pytest.mark.slow
def test_tail_prints_who_acted_after_the_detail_as_order_show_does(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with tail(tmp_path, pg_url, "--count", "2", "--after", str(last_id(db))) as running:
        write(db, order.id, "by_the_system")
        an_operators_action(db, order.id)

        exit_code, stdout, _ = running.finish()

    system, operator = stdout.splitlines()
    assert exit_code == 0
    assert system.endswith("by_the_system  detail of by_the_system")
    assert operator.endswith("order_cancelled  by the operator (by akosua)")


@pytest.mark.slow
def test_tail_starts_from_now_leaving_out_events_written_before_it(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    write(db, order.id, "before")
    with tail(tmp_path, pg_url, "--count", "1") as running:
        running.ready()
        write(db, order.id, "after")

        exit_code, stdout, _ = running.finish()

    assert exit_code == 0
    [line] = stdout.splitlines()
    assert line.split()[4:] == ["after", "detail", "of", "after"]


@pytest.mark.slow
def test_tail_from_start_prints_the_events_written_before_it_first(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)  # order_created
    write(db, order.id, "before")
    with tail(tmp_path, pg_url, "--json", "--from-start", "--count", "3") as running:
        write(db, order.id, "after")

        _, stdout, _ = running.finish()

    assert [json.loads(line)["event"] for line in stdout.splitlines()] == [
        "order_created",
        "before",
        "after",
    ]


@pytest.mark.slow
def test_tail_of_one_order_prints_only_that_orders_events(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    mine, other = an_order(db), an_order(db)
    start = str(last_id(db))
    with tail(
        tmp_path, pg_url, "--json", "--order", str(mine.id), "--count", "1", "--after", start
    ) as running:
        write(db, other.id, "not mine")
        write(db, mine.id, "mine")

        _, stdout, _ = running.finish()

    assert [json.loads(line)["event"] for line in stdout.splitlines()] == ["mine"]


def event_of(line: str) -> str:
    """The event of a human line: date, time, UTC, order, event, detail."""
    return line.split()[4]


@pytest.mark.slow
def test_an_event_that_commits_after_a_later_one_is_printed_when_it_commits(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with tail(tmp_path, pg_url, "--count", "2") as running:
        running.ready()
        with db.transaction() as slow:
            record_event(slow, order.id, "slow")  # takes its id first, commits last
            write(db, order.id, "quick")
            quick = running.line(running.process.stdout)

        exit_code, stdout, _ = running.finish()

    assert (event_of(quick), event_of(stdout), exit_code) == ("quick", "slow", 0)


@pytest.mark.slow
def test_an_event_in_flight_below_the_newest_when_the_tail_starts_is_printed_once_it_commits(
    tmp_path: Path, pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with db.engine.connect() as slow:
        in_flight = slow.begin()
        record_event(slow, order.id, "in_flight")  # its id is below the next one's
        write(db, order.id, "committed_before_the_tail_started")
        with tail(tmp_path, pg_url, "--count", "1") as running:
            running.ready()
            in_flight.commit()

            exit_code, stdout, _ = running.finish()

    assert (event_of(stdout), exit_code) == ("in_flight", 0)


@pytest.mark.slow
def test_tail_follows_on_sqlite_too(tmp_path: Path, sqlite_url: str, sqlite_db: Database) -> None:
    order = an_order(sqlite_db)
    start = str(last_id(sqlite_db))
    with tail(tmp_path, sqlite_url, "--json", "--count", "2", "--after", start) as running:
        write(sqlite_db, order.id, "first", "second")

        exit_code, stdout, _ = running.finish()

    assert exit_code == 0
    assert [json.loads(line)["event"] for line in stdout.splitlines()] == ["first", "second"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.slow
def test_a_signal_ends_the_tail_quietly_with_exit_0(
    tmp_path: Path, pg_url: str, signum: signal.Signals
) -> None:
    with tail(tmp_path, pg_url) as running:
        note = running.ready()
        os.kill(running.process.pid, signum)

        exit_code, stdout, stderr = running.finish()

    assert (exit_code, stdout, stderr) == (0, "", "")
    assert "Traceback" not in note


@pytest.mark.slow
def test_until_idle_ends_the_tail_once_nothing_has_come_for_that_long(
    tmp_path: Path, pg_url: str
) -> None:
    with tail(tmp_path, pg_url, "--json", "--until-idle", "0.5") as running:
        exit_code, stdout, stderr = running.finish()

    assert (exit_code, stdout, stderr) == (0, "", "")


def test_tail_of_an_unknown_order_is_order_not_found_exit_3(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("events", "tail", "--order", UNKNOWN_ORDER, "--json")

    assert (outcome.exit_code, outcome.stdout) == (3, "")
    assert outcome.error()["code"] == "order_not_found"
    assert count_rows(db) == before
