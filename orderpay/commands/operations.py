"""`orderpay reconcile` and `orderpay doctor`: keeping a deployment honest."""

from __future__ import annotations

from typing import Annotated

import typer

from orderpay.commands.common import JsonFlag, emit_json, info, progress, runtime


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

    Each payment is asked of its own provider, even after ORDERPAY_PROVIDER changed (and the
    table says so when that provider is not configured here). Outcomes go through the same
    transition as callbacks, so the customer is notified once. Initiated payments whose
    request may never have reached the provider are submitted again under their own
    reference. Safe from cron and alongside the listener.

    \b
    Examples:
      orderpay reconcile
      orderpay reconcile --older-than 30s --limit 100 --json
    """
    from datetime import timedelta

    from orderpay.payments.reconcile import parse_age, payments_to_reconcile, reconcile_payment

    age = parse_age(older_than)
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        candidates = payments_to_reconcile(conn, age, limit)
    lease = timedelta(seconds=rt.settings.charge_lease_seconds)
    notify = rt.notify_target()
    results = [
        reconcile_payment(rt.database, rt.provider_for, payment, notify=notify, lease=lease)
        for payment in progress(candidates, "reconciling", enabled=not json_)
    ]
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
    from orderpay.commands.render import reconcile_table

    reconcile_table(results)
    info(f"checked {len(results)} payment(s); {sum(r.changed for r in results)} changed")


def doctor(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Check the configuration, the database, its schema and Redis, the provider and channel.

    Every check runs and is shown, even when a setting is invalid. Exit 2 when something is
    to be fixed (a setting, a path, a permission), 7 when something is down.

    \b
    Examples:
      orderpay doctor
      orderpay doctor --json
    """
    from orderpay.commands.checks import State, run_checks, verdict
    from orderpay.config import load_settings

    checks = run_checks(load_settings)
    if json_:
        emit_json(
            {
                "healthy": not any(check.state is State.FAIL for check in checks),
                "checks": [
                    {
                        "name": check.name,
                        "state": check.state.value,
                        "detail": check.detail,
                        "failure": check.failure.value if check.failure else None,
                    }
                    for check in checks
                ],
            }
        )
    else:
        from orderpay.commands.render import key_values

        shown = {check.name: f"{check.state.value.upper()}: {check.detail}" for check in checks}
        key_values("orderpay doctor", shown)
    problem = verdict(checks)
    if problem is not None:
        raise problem


def demo(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Run on this database instead of a throwaway one; it must hold no orderpay data.",
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Run the whole flow on a bare machine: order, charge, signed callback, notification.

    Always on a private throwaway SQLite database with the simulator and no Redis, whatever
    the environment or ./.env says, and a real listener on a free loopback port; prints the
    order's timeline. Takes seconds. --database-url opts in to another database, refused when
    it already holds orderpay data.

    \b
    Examples:
      orderpay demo
      orderpay demo --database-url postgresql://root@127.0.0.1/demo_scratch
    """
    from orderpay.demo import run_demo

    detail = run_demo(report=info, database_url=database_url)
    if json_:
        from orderpay.http.shapes import order_shape

        emit_json(order_shape(detail))
        return
    from orderpay.commands.render import order_panel

    order_panel(detail)
    for notification in detail.notifications:
        info(f"message to {notification.recipient}: {notification.body}")
