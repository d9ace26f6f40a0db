"""`orderpay reconcile` and `orderpay doctor`: keeping a deployment honest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orderpay.commands.common import JsonFlag, emit_json, info, progress, runtime

if TYPE_CHECKING:
    from orderpay.payments.confirmation import Confirmation
    from orderpay.payments.refund_reconcile import RefundCheck


def reconcile(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Only payments and refunds unchanged for this long: 30s, 5m, 2h."
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
    """Ask the provider about payments and refunds still initiated or pending; settle them.

    Each payment is asked of its own provider, even after ORDERPAY_PROVIDER changed (and the
    table says so when that provider is not configured here). Outcomes go through the same
    transition as callbacks, so the customer is notified once. Initiated payments whose
    request may never have reached the provider are submitted again under their own
    reference, and so are refunds (resumed like their key). Safe from cron and alongside the
    listener. --json lists the payments that changed, those kept for review (the provider
    disagrees with our records) and those left unchanged, each with a note, and the same for
    refunds under "refunds". --dry-run only asks: it writes nothing and submits nothing.

    \b
    Examples:
      orderpay reconcile
      orderpay reconcile --dry-run
      orderpay reconcile --older-than 30s --limit 100 --json
    """
    from datetime import timedelta

    from orderpay.domain.times import parse_age
    from orderpay.payments.reconcile import payments_to_reconcile, reconcile_payment
    from orderpay.payments.refund_reconcile import reconcile_refund
    from orderpay.store.refunds import refunds_to_reconcile

    age = parse_age(older_than, "older_than")
    rt = runtime(ctx)
    with rt.database.transaction() as conn:
        candidates = payments_to_reconcile(conn, age, limit)
        open_refunds = refunds_to_reconcile(conn, age, limit)
    lease = timedelta(seconds=rt.settings.charge_lease_seconds)
    notify = rt.notify_target()
    results = [
        reconcile_payment(
            rt.database, rt.provider_for, payment, notify=notify, lease=lease, dry_run=dry_run
        )
        for payment in progress(candidates, "reconciling", enabled=not json_)
    ]
    refund_results = [
        reconcile_refund(
            rt.database, rt.provider_for, refund, notify=notify, lease=lease, dry_run=dry_run
        )
        for refund in progress(open_refunds, "reconciling refunds", enabled=not json_)
    ]
    queued = [r.notification_queued for r in results] + [
        r.notification_queued for r in refund_results
    ]
    if any(queued):
        rt.nudger.notify_now()
    from orderpay.payments.confirmation import Action

    moved = (Action.SETTLED, Action.RESUBMITTED)
    changed = [r for r in results if r.action in moved]
    review = [r for r in results if r.action is Action.REVIEW]
    refunds_changed = [r for r in refund_results if r.action in moved]
    refunds_review = [r for r in refund_results if r.action is Action.REVIEW]
    if json_:

        def entry(r: Confirmation) -> dict[str, str]:
            return {
                "payment": str(r.payment_id),
                "order": str(r.order_id),
                "before": r.before.value,
                "after": r.after.value,
                "provider_says": r.remote,
                "note": r.note,
            }

        def refund_entry(r: RefundCheck) -> dict[str, str]:
            return {
                "refund": str(r.refund_id),
                "payment": str(r.payment_id),
                "order": str(r.order_id),
                "before": r.before.value,
                "after": r.after.value,
                "provider_says": r.remote,
                "note": r.note,
            }

        emit_json(
            {
                "checked": len(results),
                "dry_run": dry_run,
                "changed": [entry(r) for r in changed],
                "review": [entry(r) for r in review],
                "unchanged": [entry(r) for r in results if r.action is Action.NONE],
                "refunds": {
                    "checked": len(refund_results),
                    "changed": [refund_entry(r) for r in refunds_changed],
                    "review": [refund_entry(r) for r in refunds_review],
                    "unchanged": [
                        refund_entry(r) for r in refund_results if r.action is Action.NONE
                    ],
                },
            }
        )
        return
    from orderpay.commands.render import reconcile_table, refund_reconcile_table

    if dry_run:
        info("dry run: nothing is changed or submitted; the table shows what reconcile would do")
    reconcile_table(results, title="Would reconcile (dry run)" if dry_run else "Reconciled")
    if refund_results:
        refund_reconcile_table(refund_results, title="Refunds (dry run)" if dry_run else "Refunds")
    verb, kept = ("would change", "would be kept") if dry_run else ("changed", "kept")
    summary = f"checked {len(results)} payment(s); {len(changed)} {verb}"
    if review:
        summary += f", {len(review)} {kept} for review"
    if refund_results:
        summary += f"; {len(refund_results)} refund(s), {len(refunds_changed)} {verb}"
        if refunds_review:
            summary += f", {len(refunds_review)} {kept} for review"
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
