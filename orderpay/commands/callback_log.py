"""`orderpay webhook list|show|replay`: the stored callbacks (the inbox), and running one again.

Registered on `webhook_app` (commands/listener.py) by cli.py: `callback_log.register(...)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from orderpay.commands.common import (
    After,
    JsonFlag,
    Limit,
    Since,
    Until,
    emit_json,
    info,
    runtime,
    show_page,
    window,
)

if TYPE_CHECKING:
    from orderpay.payments.replay import Replayed
    from orderpay.store.events_log import StoredEvent

SOURCES = ("momo", "mtn", "sms-dlr")
# What a stored event came to (store/inbox.py's writers): `review` lists every review_* one.
OUTCOMES = (
    "processed",
    "duplicate",
    "review",
    "review_conflict",
    "review_amount",
    "review_unmatched",
    "unmatched",
    "hint",
    "to_confirm",
    "delivered",
    "undelivered",
    "kept",
)
REVIEW_OUTCOMES = ("review_conflict", "review_amount", "review_unmatched")

EventId = Annotated[
    int, typer.Argument(metavar="EVENT_ID", min=1, help="The stored callback's id (see list).")
]


def _choice(allowed: tuple[str, ...]) -> Any:
    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}")
        return value

    return check


def webhook_list(
    ctx: typer.Context,
    order: Annotated[
        str | None, typer.Option("--order", help="Only this order's (id or unique prefix).")
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            callback=_choice(OUTCOMES),
            help="Only this outcome: unmatched, processed, duplicate, review (any review_*), "
            "hint, to_confirm, delivered, undelivered, kept, ...",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", callback=_choice(SOURCES), help="momo, mtn or sms-dlr."),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List stored callbacks, newest received first, a page at a time.

    Every authenticated callback is stored once: signed momo callbacks, MTN's hints and SMS
    delivery reports. `unmatched` ones were answered 404 (no payment matched yet); the sender
    retries them, and `orderpay webhook replay` runs one again.

    \b
    Examples:
      orderpay webhook list --outcome unmatched
      orderpay webhook list --order 3f1c2a9e --json
      orderpay webhook list --source momo --since 1d --limit 20
    """
    from orderpay.commands.common import order_id
    from orderpay.store.events_log import list_events

    outcomes = REVIEW_OUTCOMES if outcome == "review" else (outcome,) if outcome else ()
    with runtime(ctx).database.transaction() as conn:
        oid = order_id(conn, order) if order is not None else None
        page = list_events(
            conn,
            window(since, until, limit, after),
            order_id=oid,
            outcomes=outcomes,
            source=source,
        )
    show_page(page, as_json=json_, shape=event_shape, table=_events_table)


def webhook_show(ctx: typer.Context, event_id: EventId, json_: JsonFlag = False) -> None:
    """Show one stored callback with its payload, phone numbers masked.

    \b
    Examples:
      orderpay webhook show 42
      orderpay webhook show 42 --json
    """
    import json

    from orderpay.domain.redaction import mask_payload
    from orderpay.errors import WebhookEventNotFound
    from orderpay.store.events_log import get_event

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        event = get_event(conn, event_id)
    if event is None:
        raise WebhookEventNotFound(f"no stored callback has id {event_id}", event=event_id)
    masked = mask_payload(event.payload or "", rt.settings.default_region)
    try:
        payload: Any = json.loads(masked)
    except ValueError:  # a form-encoded delivery report, say: shown as it came
        payload = masked
    if json_:
        emit_json(event_shape(event) | {"payload": payload})
        return
    from orderpay.commands.render import show
    from orderpay.commands.tables import when
    from orderpay.store.ids import short

    rows = [
        ("source", event.source),
        ("outcome", event.outcome),
        ("received", when(event.received_at)),
        ("key", event.dedupe_key),
        ("order", str(event.order_id) if event.order_id else ""),
        ("payment", str(event.payment_id) if event.payment_id else ""),
    ]
    show(_key_values(f"Callback {event.id}", rows))
    typer.echo(payload if isinstance(payload, str) else json.dumps(payload, indent=2))
    if event.outcome == "unmatched":
        order = short(event.order_id) if event.order_id else ""
        info(f"no payment of order {order} matched it yet: `orderpay webhook replay {event.id}`")


def webhook_replay(ctx: typer.Context, event_id: EventId, json_: JsonFlag = False) -> None:
    """Run a stored callback through the service again, as a copy from its sender would be.

    A stored `unmatched` callback is applied once its payment awaits an outcome (processed);
    any other stored momo callback is a duplicate and changes nothing. An MTN callback asks
    MTN's status call, as the listener does. Still unmatched: exit 3 (payment_not_found).

    \b
    Examples:
      orderpay webhook replay 42
      orderpay webhook replay 42 --json
    """
    from datetime import timedelta

    from orderpay.payments.replay import replay_event

    rt = runtime(ctx)
    replayed = replay_event(
        rt.database,
        event_id,
        notify=rt.notify_target(),
        provider_for=rt.provider_for,
        lease=timedelta(seconds=rt.settings.charge_lease_seconds),
    )
    if replayed.notification_queued:
        rt.nudger.notify_now()
    if replayed.error is not None:
        raise replayed.error
    if json_:
        emit_json(replay_shape(replayed))
        return
    line = f"callback {replayed.event_id} ({replayed.source}): {replayed.outcome}"
    if replayed.payment_id is not None:
        line += f", payment {replayed.payment_id}"
    typer.echo(line)
    if replayed.confirmation is not None:
        c = replayed.confirmation
        typer.echo(
            f"{c.before.value} -> {c.after.value} ({c.remote}{': ' + c.note if c.note else ''})"
        )


def event_shape(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "source": event.source,
        "received_at": event.received_at.isoformat(),
        "outcome": event.outcome,
        "order": str(event.order_id) if event.order_id else None,
        "payment": str(event.payment_id) if event.payment_id else None,
        "dedupe_key": event.dedupe_key,
    }


def replay_shape(replayed: Replayed) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "event": replayed.event_id,
        "source": replayed.source,
        "outcome": replayed.outcome,
        "payment": str(replayed.payment_id) if replayed.payment_id else None,
        "notification_queued": replayed.notification_queued,
    }
    c = replayed.confirmation
    if c is not None:
        shape["confirmation"] = {
            "before": c.before.value,
            "after": c.after.value,
            "provider_said": c.remote,
            "note": c.note,
        }
    return shape


def _events_table(events: list[StoredEvent]) -> None:
    from orderpay.commands.render import show, width
    from orderpay.commands.tables import Column, fit, when
    from orderpay.store.ids import short

    columns = [
        Column("id", True, justify="right"),
        Column("received", True),
        Column("source", rank=1),
        Column("outcome", True),
        Column("order", rank=2),
        Column("payment", rank=4),
        Column("key", rank=3),
    ]
    cells = [
        [
            str(e.id),
            when(e.received_at),
            e.source,
            e.outcome,
            short(e.order_id) if e.order_id else "",
            short(e.payment_id) if e.payment_id else "",
            e.dedupe_key,
        ]
        for e in events
    ]
    show(fit("Callbacks", columns, cells, width=width(), empty="no stored callbacks"))


def _key_values(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.text import Text

    body = Text(f"{title}\n", style="bold")
    for name, value in rows:
        if value:
            body.append(f"{name:<10}", style="bold")
            body.append(f"{value}\n")
    return body


def register(webhook_app: typer.Typer) -> None:
    """Add list, show and replay to `orderpay webhook`."""
    webhook_app.command("list", short_help="List stored callbacks, newest first.")(webhook_list)
    webhook_app.command("show", short_help="Show a stored callback (phones masked).")(webhook_show)
    webhook_app.command("replay", short_help="Run a stored callback through again.")(webhook_replay)
