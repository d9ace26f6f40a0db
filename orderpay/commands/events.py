"""`orderpay events tail`: the order events (order_events) as they are written.

It reads `order_events` by id from where it started and polls every POLL_SECONDS; on Postgres
it also LISTENs on the outbox channel (NOTIFYed after commits that queue a notification), so a
settled payment shows at once. It adds nothing to any transaction (see wakeups.Nudger).

Ids are taken at insert, not at commit, so a row can become visible after higher ids were read:
the ids skipped are asked for again for GAP_SECONDS (a rolled-back id never comes), and a row
that shows up late is printed then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orderpay.commands.common import info, runtime

if TYPE_CHECKING:
    import uuid
    from threading import Event

    from orderpay.runtime import Runtime
    from orderpay.store.order_events import OrderEventEntry

Emit = Callable[["OrderEventEntry"], None]

events_app = typer.Typer(
    help="Follow the order's events as it is written.\n\n\b\nExamples:\n"
    "  orderpay events tail\n"
    "  orderpay events tail --order 3f1c2a9e --json",
    rich_markup_mode=None,
)

POLL_SECONDS = 1.0
BATCH = 500  # rows per read
GAP_SECONDS = 30.0  # how long an id skipped over is asked for again
MAX_MISSING = 1000  # ids skipped over that are remembered, at most (the newest)


class Follower:
    """Which order events are new: those above the last id seen, and those below it that were
    missing when it was seen (not committed yet), while they are remembered."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.missing: dict[int, float] = {}  # id -> when it was found missing

    def expect(self, ids: set[int], now: float) -> None:
        """Watch for `ids` (below `last`, not visible yet) too."""
        for i in sorted(ids)[-MAX_MISSING:]:
            self.missing[i] = now

    def take(self, entries: list[OrderEventEntry], now: float) -> list[OrderEventEntry]:
        fresh = []
        for entry in sorted(entries, key=lambda e: e.id):
            if entry.id > self.last:
                for gap in range(max(self.last + 1, entry.id - MAX_MISSING), entry.id):
                    self.missing[gap] = now
                self.last = entry.id
                fresh.append(entry)
            elif self.missing.pop(entry.id, None) is not None:
                fresh.append(entry)
        kept = sorted(i for i, seen in self.missing.items() if now - seen < GAP_SECONDS)
        self.missing = {i: self.missing[i] for i in kept[-MAX_MISSING:]}
        return fresh


@events_app.command("tail", short_help="Print order events as they happen.")
def events_tail(
    ctx: typer.Context,
    order: Annotated[
        str | None, typer.Option("--order", help="Only this order's (id or unique prefix).")
    ] = None,
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="First print the events written before it started."),
    ] = False,
    after: Annotated[
        int | None,
        typer.Option(
            "--after",
            min=0,
            metavar="EVENT_ID",
            help="Start after this event (the id of a line printed before: resume).",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Exit after printing this many events.")
    ] = None,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle", min=0.1, metavar="SECONDS", help="Exit once none came for this long."
        ),
    ] = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per event and line (NDJSON) on stdout."),
    ] = False,
) -> None:
    """Print order events as they are written, until interrupted (Ctrl-C or SIGTERM
    end it quietly, exit 0).

    Starts from now: only events written after it started, unless --from-start (all of
    them first) or --after (those after that event first). A line per event: time, order,
    event, detail, and "(by NAME)" for an operator's action; under --json one JSON object per
    line (NDJSON) with id, order, at, event, detail and operator (null unless an operator
    acted). --count and --until-idle end it on their own (scripts, tests).

    \b
    Examples:
      orderpay events tail
      orderpay events tail --order 3f1c2a9e --from-start
      orderpay events tail --json | jq -r .event
      orderpay events tail --after 1234 --count 3 --until-idle 60
    """
    from orderpay.commands.common import order_id
    from orderpay.store import order_events

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        oid = order_id(conn, order) if order is not None else None
        visible = order_events.newest_event_ids(conn, MAX_MISSING)
    now = max(visible, default=0)
    first = after if after is not None else 0 if from_start else now
    # Ids below the newest that are not visible yet may still commit after this start: watch
    # for them (from now: any of them; else those after the first one asked for).
    low = max(0 if after is None and not from_start else first, now - MAX_MISSING)
    unseen = set(range(low + 1, now + 1)) - visible
    follower = Follower(max(first, now))
    follower.expect(unseen, time.monotonic())
    emit = _printer(json_)
    # The handlers first: a signal from the moment it says it follows ends it quietly.
    with _stopped_by_signals() as stop:
        if not json_:
            info(f"following the order's events after event {first} (Ctrl-C stops)")
        printed = 0
        for entry in _backlog(rt, first, now, oid):
            if stop.is_set():
                return
            follower.missing.pop(entry.id, None)  # committed since: printed here, once
            emit(entry)
            printed += 1
            if count is not None and printed >= count:
                return
        left = None if count is None else count - printed
        _follow(rt, follower, oid, emit, stop, left, until_idle)


def _backlog(
    rt: Runtime, first: int, last: int, oid: uuid.UUID | None
) -> Iterator[OrderEventEntry]:
    """The events after `first` up to `last` (of one order), a batch per transaction."""
    from orderpay.store.order_events import events_after

    while first < last:
        with rt.database.transaction() as conn:
            batch = events_after(conn, first, order_id=oid, limit=BATCH)
        for entry in batch:
            if entry.id > last:
                return
            yield entry
        if len(batch) < BATCH:
            return
        first = batch[-1].id


def _follow(
    rt: Runtime,
    follower: Follower,
    oid: uuid.UUID | None,
    emit: Emit,
    stop: Event,
    count: int | None,
    until_idle: float | None,
) -> None:
    from orderpay.errors import Unavailable
    from orderpay.store.order_events import events_after
    from orderpay.store.wakeups import Wakeups

    wakeups = Wakeups(rt.raw_database.engine, POLL_SECONDS)
    printed, idle_since, unavailable = 0, time.monotonic(), False
    try:
        while not stop.is_set():
            try:
                with rt.database.transaction() as conn:
                    entries = events_after(
                        conn, follower.last, missing=follower.missing, limit=BATCH
                    )
            except Unavailable as error:
                if not unavailable:
                    info(f"waiting: {error.message}")
                unavailable, entries = True, []
            else:
                unavailable = False
            for entry in follower.take(entries, time.monotonic()):
                if oid is not None and entry.order_id != oid:
                    continue
                emit(entry)
                printed, idle_since = printed + 1, time.monotonic()
                if count is not None and printed >= count:
                    return
            if len(entries) == BATCH:
                continue  # more are waiting: read on at once
            if until_idle is not None:
                left = until_idle - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                if left < POLL_SECONDS:
                    stop.wait(left)
                    continue
            wakeups.wait(stop)
    finally:
        wakeups.close()


def _printer(as_json: bool) -> Emit:
    import json

    from orderpay.commands.tables import when
    from orderpay.store.ids import short

    def emit(entry: OrderEventEntry) -> None:
        if as_json:
            line = json.dumps(
                {
                    "id": entry.id,
                    "order": str(entry.order_id),
                    "at": entry.at.isoformat(),
                    "event": entry.event,
                    "detail": entry.detail,
                    "operator": entry.operator,
                },
                ensure_ascii=False,
            )
        else:
            # Who acted, as `order show` prints it: an operator's action only.
            by = f" (by {entry.operator})" if entry.operator else ""
            line = f"{when(entry.at)}  {short(entry.order_id)}  {entry.event}  {entry.detail}{by}"
        typer.echo(line)  # flushed: a reader of a pipe sees each event as it comes

    return emit


@contextmanager
def _stopped_by_signals() -> Iterator[Event]:
    """An Event that SIGINT (Ctrl-C) and SIGTERM set, instead of ending the process mid-line;
    the handlers before it are put back after."""
    import signal
    import threading

    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not in the main thread (an embedding test runner): no handler, and nothing to stop.
        with suppress(ValueError):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
