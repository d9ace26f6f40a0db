"""`orderpay reconcile` and `orderpay doctor`: keeping a deployment honest."""

from __future__ import annotations

from typing import Annotated

import typer

from orderpay.commands.common import JsonFlag, emit_json, info, runtime


def reconcile(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Only payments unchanged for this long: 30s, 5m, 2h."),
    ] = "5m",
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="At most this many payments.")
    ] = 500,
    json_: JsonFlag = False,
) -> None:
    """Ask the provider about payments still initiated or pending, and settle them.

    Outcomes go through the same transition as callbacks, so the customer is notified once.
    Initiated payments whose request may never have reached the provider are submitted again
    under their own reference. Safe from cron and alongside the listener.

    \b
    Examples:
      orderpay reconcile
      orderpay reconcile --older-than 30s --limit 100 --json
    """
    from datetime import timedelta

    from rich.console import Console
    from rich.progress import track

    from orderpay.confirmation import confirm_payment
    from orderpay.reconcile import parse_age, payments_to_reconcile

    age = parse_age(older_than)
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        candidates = payments_to_reconcile(conn, rt.provider.name, age, limit)
    lease = timedelta(seconds=rt.settings.charge_lease_seconds)
    progress = track(
        candidates, description="reconciling", console=Console(stderr=True),
        disable=json_ or len(candidates) < 2,
    )  # fmt: skip
    notify = rt.notify_target()
    results = []
    for payment in progress:
        result = confirm_payment(
            rt.database, rt.provider, payment, notify=notify, source="reconcile", lease=lease
        )
        results.append(result)
    if any(result.notification_queued for result in results):
        rt.nudger.notify_now()
    if json_:
        emit_json(
            {
                "checked": len(results),
                "changed": [
                    {
                        "payment": str(r.payment_id),
                        "order": str(r.order_id),
                        "before": r.before.value,
                        "after": r.after.value,
                        "provider_says": r.remote,
                        "note": r.note,
                    }
                    for r in results
                    if r.changed or r.note
                ],
            }
        )
        return
    from orderpay.render import reconcile_table

    reconcile_table(results)
    info(f"checked {len(results)} payment(s); {sum(r.changed for r in results)} changed")


def doctor(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Check the configuration, the database, its schema and Redis; exit 7 if one is down.

    \b
    Example:
      orderpay doctor
    """
    from orderpay.errors import OrderpayError, Unavailable

    rt = runtime(ctx)
    settings = rt.settings
    checks: dict[str, str] = {}
    healthy = True
    try:
        rt.raw_database.check_schema()
        checks["database"] = f"ok ({rt.raw_database.dialect}, schema current)"
    except OrderpayError as error:
        healthy = False
        checks["database"] = f"FAIL: {error.message}"
    if settings.redis_url:
        from orderpay.jobs import connect_redis

        try:
            connect_redis(settings.redis_url).ping()
            checks["redis"] = "ok"
        except Exception as error:
            healthy = False
            checks["redis"] = f"FAIL: {type(error).__name__}"
    else:
        checks["redis"] = "not configured: workers deliver from the database"
    secrets = settings.webhook_secrets()
    checks["callback secret"] = (
        f"{len(secrets)} configured" if secrets else "missing: serve-webhooks will not start"
    )
    try:
        checks["provider"] = f"ok ({rt.provider.name})"
        checks["notify channel"] = f"ok ({rt.channel.name})"
    except OrderpayError as error:
        healthy = False
        checks["configuration"] = f"FAIL: {error.message}"
    api_token = settings.api_token
    checks["rest api"] = "enabled" if api_token and api_token.get_secret_value() else "disabled"
    if json_:
        emit_json({"healthy": healthy, "checks": checks})
    else:
        from orderpay.render import key_values

        key_values("orderpay doctor", checks)
    if not healthy:
        raise Unavailable("some checks failed (see above)")


def demo(json_: JsonFlag = False) -> None:
    """Run the whole flow on a bare machine: order, charge, signed callback, notification.

    Uses a throwaway SQLite database (or DATABASE_URL / REDIS_URL when set), the simulator,
    and a real listener on a free loopback port; prints the order's timeline. Takes seconds.

    \b
    Example:
      orderpay demo
    """
    from orderpay.demo import run_demo

    detail = run_demo(report=info)
    if json_:
        from orderpay.shapes import order_shape

        emit_json(order_shape(detail))
        return
    from orderpay.render import order_panel

    order_panel(detail)
    for notification in detail.notifications:
        info(f"message to {notification.recipient}: {notification.body}")
