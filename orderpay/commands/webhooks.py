"""`orderpay webhook`: sign and simulate callbacks; list, show and replay the stored webhook
events."""

from __future__ import annotations

import sys
from pathlib import Path
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
    from orderpay.store.webhook_events import StoredEvent

webhook_app = typer.Typer(
    help="Webhook events and test callbacks.\n\n"
    "List, show and replay webhook events; sign and send test callbacks.\n\n\b\n"
    "Examples:\n"
    "  orderpay webhook sign callback.json\n"
    "  orderpay webhook simulate ORDER_ID --status success\n"
    "  orderpay webhook simulate --provider mpesa PAYMENT_ID\n"
    "  orderpay webhook list --outcome unmatched\n"
    "  orderpay webhook show 42\n"
    "  orderpay webhook replay 42",
    rich_markup_mode=None,
)

DEFAULT_CALLBACK_URL = "http://127.0.0.1:8000/api/webhooks/momo/"

SOURCES = ("momo", "mtn", "mpesa", "sms-dlr")
# What a webhook event came to (store/webhook_events.py): `review` lists every review_* one.
OUTCOMES = (
    "processed",
    "duplicate",
    "review",
    "review_conflict",
    "review_amount",
    "review_unmatched",
    "review_sender",
    "unmatched",
    "hint",
    "to_confirm",
    "delivered",
    "undelivered",
    "kept",
)
REVIEW_OUTCOMES = ("review_conflict", "review_amount", "review_unmatched", "review_sender")

EventId = Annotated[
    int, typer.Argument(metavar="EVENT_ID", min=1, help="The webhook event's id (see list).")
]


def _choice(allowed: tuple[str, ...]) -> Any:
    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}")
        return value

    return check


@webhook_app.command("list", short_help="List webhook events, newest first.")
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
        typer.Option("--source", callback=_choice(SOURCES), help="momo, mtn, mpesa or sms-dlr."),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List webhook events, newest received first, a page at a time.

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
    from orderpay.shapes import webhook_event_shape
    from orderpay.store.webhook_events import list_events

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
    show_page(page, as_json=json_, shape=webhook_event_shape, table=_events_table)


@webhook_app.command("show", short_help="Show a webhook event (phones masked).")
def webhook_show(ctx: typer.Context, event_id: EventId, json_: JsonFlag = False) -> None:
    """Show one webhook event with its payload, phone numbers masked.

    \b
    Examples:
      orderpay webhook show 42
      orderpay webhook show 42 --json
    """
    import json

    from orderpay.domain.redaction import mask_payload
    from orderpay.errors import WebhookEventNotFound
    from orderpay.shapes import webhook_event_shape
    from orderpay.store.webhook_events import get_event

    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        event = get_event(conn, event_id)
    if event is None:
        raise WebhookEventNotFound(f"no webhook event has id {event_id}", event=event_id)
    masked = mask_payload(event.payload or "", rt.settings.default_region)
    try:
        payload: Any = json.loads(masked)
    except ValueError:  # a form-encoded delivery report, say: shown as it came
        payload = masked
    if json_:
        emit_json(webhook_event_shape(event) | {"payload": payload})
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


@webhook_app.command("replay", short_help="Run a webhook event through again.")
def webhook_replay(ctx: typer.Context, event_id: EventId, json_: JsonFlag = False) -> None:
    """Run a webhook event through the service again, as a copy from its sender would be.

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
    from orderpay.shapes import replay_shape

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
        typer.echo(f"{c.before} -> {c.after} ({c.remote}{': ' + c.note if c.note else ''})")


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
    show(fit("Webhook events", columns, cells, width=width(), empty="no webhook events"))


def _key_values(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.text import Text

    body = Text(f"{title}\n", style="bold")
    for name, value in rows:
        if value:
            body.append(f"{name:<10}", style="bold")
            body.append(f"{value}\n")
    return body


def _secret(given: str | None, ctx: typer.Context) -> bytes:
    from orderpay.errors import ConfigurationError

    if given:
        return given.encode()
    secrets = runtime(ctx).settings.webhook_secrets()
    if not secrets:
        raise ConfigurationError("no secret: pass --secret or set MOMO_WEBHOOK_SECRET")
    return secrets[0]


@webhook_app.command("sign", short_help="Print the signature of a callback body.")
def webhook_sign(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="The body to sign; - = stdin.")],
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret", help="Secret to sign with (default: MOMO_WEBHOOK_SECRET's first)."
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Print the X-Momo-Signature (hex HMAC-SHA256) of a body, exactly as its bytes are.

    \b
    Examples:
      orderpay webhook sign callback.json
      echo -n '{"status":"success"}' | orderpay webhook sign - --secret s3cret
    """
    from orderpay.domain.signatures import sign_hex
    from orderpay.errors import InvalidField

    if source == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            body = Path(source).read_bytes()
        except OSError as error:
            raise InvalidField(f"cannot read {source}: {error.strerror}") from None
    signature = sign_hex(body, _secret(secret, ctx))
    if json_:
        emit_json({"x-momo-signature": signature, "bytes": len(body)})
    else:
        typer.echo(signature)


def _status_word(value: str) -> str:
    if value not in ("success", "failed"):
        raise typer.BadParameter("must be success or failed")
    return value


SIMULATED_PROVIDERS = ("momo", "mpesa")


def _simulated_provider(value: str) -> str:
    if value not in SIMULATED_PROVIDERS:
        raise typer.BadParameter(f"must be one of {', '.join(SIMULATED_PROVIDERS)}")
    return value


def _optional_status_word(value: str | None) -> str | None:
    return None if value is None else _status_word(value)


@webhook_app.command("simulate", short_help="Send a test callback to a listener.")
def webhook_simulate(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="ORDER_ID|PAYMENT_ID",
            help="The order to settle (momo); with --provider mpesa the M-Pesa payment (or "
            "an order: its latest payment).",
        ),
    ],
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            callback=_optional_status_word,
            help="success or failed (required for momo; mpesa: default success).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help=f"The listener's callback URL (default {DEFAULT_CALLBACK_URL}); with "
            "--provider mpesa its scheme, host and port, the path being "
            "/api/webhooks/daraja/MPESA_CALLBACK_TOKEN/.",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Failure reason, e.g. APPROVAL_REJECTED.")
    ] = None,
    secret: Annotated[str | None, typer.Option("--secret", help="Secret to sign with.")] = None,
    provider: Annotated[
        str,
        typer.Option(
            "--provider",
            callback=_simulated_provider,
            help="momo (a signed callback, the simulator's payments) or mpesa (Daraja's "
            "STK callback, unsigned).",
        ),
    ] = "momo",
    json_: JsonFlag = False,
) -> None:
    """Send a callback for a payment to a running listener, as its provider would.

    momo (the default): sign and send a callback for an order's latest payment (the
    simulator's). --provider mpesa: send Daraja's STK callback for an M-Pesa payment (its
    CheckoutRequestID; on success the amount in whole KES, a made-up receipt and the payer's
    number; failed: ResultCode 1032, cancelled by the payer) to
    /api/webhooks/daraja/MPESA_CALLBACK_TOKEN/?ref=OUR_REFERENCE, the token read from the
    settings as the listener has it. M-Pesa callbacks are hints: the listener confirms each
    with STK Query before anything moves, so a simulated success settles the payment only if
    M-Pesa (or the fake Daraja it talks to) agrees: STK Query's answer decides, not the
    callback.

    Prints the listener's answer; exits non-zero when it is not 2xx (like `stripe trigger`).

    \b
    Examples:
      orderpay webhook simulate 3f1c... --status success
      orderpay webhook simulate 3f1c... --status failed --reason APPROVAL_REJECTED --json
      orderpay webhook simulate --provider mpesa 9b2e... --status failed
    """
    if provider == "mpesa":
        if reason is not None or secret is not None:
            from orderpay.errors import UsageError

            given = "--reason" if reason is not None else "--secret"
            raise UsageError(
                f"{given} is for momo callbacks: an M-Pesa callback is unsigned, and a failed "
                "one says ResultCode 1032 (cancelled by the payer)"
            )
        from orderpay.commands.simulate import simulate_mpesa

        simulate_mpesa(ctx, target, status or "success", url or DEFAULT_CALLBACK_URL, json_)
        return
    if status is None:
        from orderpay.errors import UsageError

        raise UsageError("Missing option '--status' (success or failed).")
    from orderpay.commands.simulate import simulate_momo

    key = _secret(secret, ctx)
    simulate_momo(ctx, target, status, url or DEFAULT_CALLBACK_URL, reason, key, json_)
