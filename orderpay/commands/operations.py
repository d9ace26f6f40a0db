"""`orderpay reconcile` and `orderpay doctor`: keeping a deployment honest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import JsonFlag, emit_json, info, progress, runtime

if TYPE_CHECKING:
    from orderpay.payments.life_cycle import Check


def reconcile(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Skip payments and refunds changed more recently than this: 30s, 5m, 2h.",
        ),
    ] = "5m",
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, max=100_000, help="At most this many payments, and refunds."
        ),
    ] = 500,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Ask the providers and report what would change; change and resubmit nothing.",
        ),
    ] = False,
    json_: JsonFlag = False,
) -> None:
    """Ask the providers now about every payment and refund still awaiting their final word.

    The worker asks on its own, on ORDERPAY_CATCHUP_SCHEDULE; this is the same check by hand.
    Each is asked of its own provider, even after ORDERPAY_PROVIDER changed. A definite answer
    settles it through the same transition as a callback (the customer is notified once); a
    request the provider may never have received (initiated) is sent again under its own
    reference; "not found", a timeout or an ambiguous status leaves it open. What was not
    asked is listed with the reason: changed within --older-than (its answer may be coming),
    its request in progress, or its provider not configured here. --json lists the payments
    that changed, those kept for review and those left unchanged, the same for refunds under
    "refunds", and the skipped under "skipped". --dry-run only asks: it writes and submits
    nothing.

    \b
    Examples:
      orderpay reconcile
      orderpay reconcile --dry-run
      orderpay reconcile --older-than 30s --limit 100 --json
    """
    from datetime import timedelta

    from orderpay.domain.times import parse_age
    from orderpay.payments.catch_up import CatchUp
    from orderpay.payments.life_cycle import Action

    age = parse_age(older_than, "older_than")
    rt = runtime(ctx)
    catch_up = CatchUp(
        rt.database,
        rt.provider_for,
        rt.notify_target(),
        rt.catch_up_schedule,
        timedelta(seconds=rt.settings.charge_lease_seconds),
    )
    done = catch_up.reconcile(
        age,
        limit,
        dry_run=dry_run,
        track=lambda items: progress(items, "reconciling", enabled=not json_),
    )
    if done.notification_queued:
        rt.nudger.notify_now()
    payments = [c for c in done.checked if c.kind == "payment"]
    refunds = [c for c in done.checked if c.kind == "refund"]
    moved = (Action.SETTLED, Action.RESUBMITTED)

    def parts(checks: list[Check]) -> dict[str, list[Check]]:
        return {
            "changed": [c for c in checks if c.action in moved],
            "review": [c for c in checks if c.action is Action.REVIEW],
            "unchanged": [c for c in checks if c.action is Action.NONE],
        }

    of_payments, of_refunds = parts(payments), parts(refunds)
    if json_:

        def entry(c: Check) -> dict[str, str]:
            named = {"refund": str(c.item_id)} if c.kind == "refund" else {}
            return {
                **named,
                "payment": str(c.payment_id),
                "order": str(c.order_id),
                "before": c.before,
                "after": c.after,
                "provider_says": c.remote,
                "note": c.note,
            }

        emit_json(
            {
                "checked": len(payments),
                "dry_run": dry_run,
                **{name: [entry(c) for c in checks] for name, checks in of_payments.items()},
                "refunds": {
                    "checked": len(refunds),
                    **{name: [entry(c) for c in checks] for name, checks in of_refunds.items()},
                },
                "skipped": [
                    {
                        "kind": s.kind,
                        "id": str(s.item_id),
                        "payment": str(s.payment_id),
                        "order": str(s.order_id),
                        "status": s.status,
                        "why": s.why,
                    }
                    for s in done.skipped
                ],
            }
        )
        return
    from orderpay.commands.render import reconcile_table, refund_reconcile_table, skipped_table

    if dry_run:
        info("dry run: nothing is changed or submitted; the table shows what reconcile would do")
    reconcile_table(
        payments,
        title="Would reconcile (dry run)" if dry_run else "Reconciled",
        empty="no payment asked (see below)" if done.skipped else "nothing to reconcile",
    )
    if refunds:
        refund_reconcile_table(refunds, title="Refunds (dry run)" if dry_run else "Refunds")
    if done.skipped:
        skipped_table(done.skipped)
    verb, kept = ("would change", "would be kept") if dry_run else ("changed", "kept")
    summary = f"checked {len(payments)} payment(s); {len(of_payments['changed'])} {verb}"
    if of_payments["review"]:
        summary += f", {len(of_payments['review'])} {kept} for review"
    if refunds:
        summary += f"; {len(refunds)} refund(s), {len(of_refunds['changed'])} {verb}"
        if of_refunds["review"]:
            summary += f", {len(of_refunds['review'])} {kept} for review"
    if done.skipped:
        summary += f"; {len(done.skipped)} skipped (listed with the reason)"
    info(summary + (" (dry run)" if dry_run else ""))


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
    order's events. Takes seconds. --database-url opts in to another database, refused when
    it already holds orderpay data.

    \b
    Examples:
      orderpay demo
      orderpay demo --database-url postgresql://root@127.0.0.1/demo_scratch
    """
    from orderpay.demo import run_demo

    detail = run_demo(report=info, database_url=database_url)
    if json_:
        from orderpay.shapes import order_shape

        emit_json(order_shape(detail))
        return
    from orderpay.commands.render import order_panel

    order_panel(detail)
    for notification in detail.notifications:
        info(f"message to {notification.recipient}: {notification.body}")
