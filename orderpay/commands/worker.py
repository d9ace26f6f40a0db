"""`orderpay worker` and `orderpay notification list|retry`."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orderpay.commands.common import (
    After,
    JsonFlag,
    Limit,
    Since,
    Until,
    confirm,
    emit_json,
    emit_page,
    info,
    more,
    progress,
    runtime,
    window,
)
from orderpay.commands.common import order_id as resolve_order
from orderpay.domain.states import NotificationStatus  # --status's choices; pure, cheap at start-up

if TYPE_CHECKING:
    import threading

    from orderpay.payments.catch_up import CatchUp
    from orderpay.runtime import Runtime

notification_app = typer.Typer(
    help="Inspect notifications and retry failed ones.\n\n\b\nExamples:\n"
    "  orderpay notification list --status failed\n"
    "  orderpay notification retry --all-failed --yes",
    rich_markup_mode=None,
)


class WorkerClass(StrEnum):
    # rq.SimpleWorker runs jobs in the worker process. It is the default because a delivery is
    # short, trusted code with its own HTTP timeouts, and a crash mid-send is covered by the
    # row's lease; a forked horse per job must also open its own database connection, which
    # makes it several times slower (bench/worker.py measures both).
    simple = "simple"
    fork = "fork"  # rq.Worker: a work horse process per job (isolation from the worker)


def worker(
    ctx: typer.Context,
    burst: Annotated[
        bool, typer.Option("--burst", help="Ask, relay and deliver what is due now, then exit 0.")
    ] = False,
    queue: Annotated[str | None, typer.Option("--queue", help="RQ queue name.")] = None,
    worker_class: Annotated[
        WorkerClass,
        typer.Option(
            "--worker-class",
            help="simple (jobs in this process; default) or fork (a process each).",
        ),
    ] = WorkerClass.simple,
) -> None:
    """Deliver notifications: the outbox relay plus an RQ worker (with its scheduler).

    With REDIS_URL unset, delivers straight from the database instead (several workers may
    run; they never take the same row). Either way it also asks the providers again about
    payments and refunds still awaiting their final word, on ORDERPAY_CATCHUP_SCHEDULE, each
    once per step however many workers run (--burst: once, what is due now). Each
    notification goes through the channel it was queued for; one whose channel this worker
    has no settings for stays pending, with the reason in its last_error. SIGTERM finishes
    the current delivery, then stops. A Redis or database outage is waited out (one WARNING
    when it begins, one INFO when it ends); started while Redis is down, the worker waits for
    it (--burst exits 7).

    \b
    Examples:
      REDIS_URL=redis://127.0.0.1:6379/0 orderpay worker
      orderpay worker --burst
    """
    from orderpay.logs import configure_logging

    configure_logging()
    rt = runtime(ctx)
    rt.guard_sessions()
    rt.check_schema()
    # The channel new notifications are queued for must work here (exit 2 otherwise); rows
    # queued for another channel this worker has no settings for are held, not sent.
    rt.channel  # noqa: B018
    if rt.settings.redis_url:
        _run_rq(rt, burst=burst, queue_name=queue, simple=worker_class is WorkerClass.simple)
    else:
        _run_embedded(rt, burst=burst)


def _run_rq(rt: Runtime, *, burst: bool, queue_name: str | None, simple: bool) -> None:
    import threading
    from datetime import timedelta

    from rq.serializers import JSONSerializer

    from orderpay.errors import QueueUnavailable
    from orderpay.jobs import (
        QUEUE_NAME,
        Relay,
        connect_redis,
        make_queue,
        runtime_for_jobs,
        stopping,
    )
    from orderpay.rq_worker import (
        REDIS_DOWN,
        RidingOutForkWorker,
        RidingOutSimpleWorker,
        ScheduledJobs,
        describe,
    )

    assert rt.settings.redis_url is not None
    redis = connect_redis(rt.settings.redis_url)
    name = queue_name or QUEUE_NAME
    if burst:
        try:
            redis.ping()
        except Exception as error:
            raise QueueUnavailable(f"Redis is unavailable: {type(error).__name__}") from None
    elif not _redis_reachable(redis):
        info("stopped before Redis was available")
        return
    queue = make_queue(redis, name)
    relay = Relay(
        rt.database,
        queue,
        rt.settings.retry_intervals,
        lost_after=timedelta(seconds=rt.settings.relay_lost_after_seconds),
    )
    worker_type: type[Any] = RidingOutSimpleWorker if simple else RidingOutForkWorker
    if simple:

        class StoppingWorker(RidingOutSimpleWorker):
            def request_stop(self, signum: int, frame: Any) -> None:
                # The batch job in flight ends after its current send (jobs.stopping).
                stopping.set()
                super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

        worker_type = StoppingWorker
    stopping.clear()
    if not simple:
        from orderpay.notify.delivery import compile_ahead
        from orderpay.tls import tls_context

        # Each forked work horse starts with the job's statements compiled and the TLS
        # context its channel's client needs already loaded.
        with rt.database.transaction() as conn:
            compile_ahead(conn, rt.retry_policy)
        tls_context()
    rq_worker = worker_type([name], connection=redis, serializer=JSONSerializer)
    catch_up = _catch_up(rt)
    # Jobs (and the work horses RQ forks for them) start from this process's runtime: its
    # settings are read and its schema checked once, not once per job.
    with runtime_for_jobs(rt):
        if burst:
            _catch_up_once(rt, catch_up)
            relayed = relay.relay_due()
            info(f"relayed {relayed} notification(s); delivering")
            rq_worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            return
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=relay.run,
                args=(stop, rt.settings.relay_poll_seconds),
                name="relay",
                daemon=True,
            ),
            _catch_up_thread(catch_up, stop),
            # RQ's retries wait in its scheduled registry: this thread moves them to the queue
            # once due (in place of RQ's scheduler child, which dies with a Redis outage).
            ScheduledJobs([name], redis).thread(stop),
        ]
        for thread in threads:
            thread.start()
        try:
            rq_worker.work(with_scheduler=False, logging_level="INFO")
        except REDIS_DOWN as error:  # at its start, before its loop rides outages out
            raise QueueUnavailable(f"Redis is unavailable: {describe(error)}") from None
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)


def _redis_reachable(redis: Any) -> bool:
    """Wait for Redis at start (one WARNING, then one INFO when it answers): a worker started
    during an outage, or restarted by its supervisor, starts once Redis is back. False when
    SIGTERM or SIGINT comes first."""
    import signal
    import threading

    from orderpay.rq_worker import wait_until_reachable

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return wait_until_reachable(redis, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_embedded(rt: Runtime, *, burst: bool) -> None:
    import signal
    import threading
    from collections import Counter
    from dataclasses import replace

    from orderpay.notify.drain import Drain

    # Each send ends by the channels' timeout (and before its row's lease does).
    policy = replace(rt.retry_policy, send_seconds=rt.settings.notify_timeout_seconds)
    drain = Drain(rt.database, rt.channel_for, policy, rt.settings.merchant_name, rt.sender)
    catch_up = _catch_up(rt)
    stop = threading.Event()
    if burst:
        _catch_up_once(rt, catch_up)
        results = drain.drain_due(stop)
        counts = Counter(result.outcome.value for result in results)
        info(
            "delivered from the database: "
            + (", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing due")
        )
        return

    def request_stop(signum: int, _frame: object) -> None:
        info(f"received signal {signum}: finishing the current delivery, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    info("delivering from the database (REDIS_URL is unset)")
    asking = _catch_up_thread(catch_up, stop)
    asking.start()
    try:
        drain.run(stop, rt.settings.relay_poll_seconds)
    finally:
        stop.set()
        asking.join(timeout=10)


# How often the worker looks for payments and refunds due a question to their provider.
CATCH_UP_POLL_SECONDS = 10.0


def _catch_up(rt: Runtime) -> CatchUp:
    from datetime import timedelta

    from orderpay.payments.catch_up import CatchUp

    return CatchUp(
        rt.database,
        rt.provider_for,
        rt.notify_target(),
        rt.catch_up_schedule,
        timedelta(seconds=rt.settings.charge_lease_seconds),
    )


def _catch_up_thread(catch_up: CatchUp, stop: threading.Event) -> threading.Thread:
    import threading

    return threading.Thread(
        target=catch_up.run, args=(stop, CATCH_UP_POLL_SECONDS), name="catch-up", daemon=True
    )


def _catch_up_once(rt: Runtime, catch_up: CatchUp) -> None:
    done = catch_up.run_due()
    if done.notification_queued:
        rt.nudger.notify_now()
    if done.checked:
        info(f"asked providers about {len(done.checked)} payment(s) and refund(s) due a check")


@notification_app.command("list")
def notification_list(
    ctx: typer.Context,
    status: Annotated[
        NotificationStatus | None, typer.Option("--status", help="Only this status.")
    ] = None,
    order: Annotated[str | None, typer.Option("--order", help="Only this order's.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    after: After = None,
    json_: JsonFlag = False,
) -> None:
    """List notifications, newest first, a page at a time.

    \b
    Examples:
      orderpay notification list --status failed --since 1d
      orderpay notification list --order 3f1c2a9e --json
    """
    from orderpay.store.notifications import list_notifications

    with runtime(ctx).database.transaction() as conn:
        oid = resolve_order(conn, order) if order is not None else None
        page = list_notifications(
            conn,
            window(since, until, limit, after),
            status=status,
            order_id=oid,
        )
    from orderpay.shapes import notification_shape

    if json_:
        emit_page(page, notification_shape)
        return
    from orderpay.commands.render import notifications_table  # rich: for human eyes only

    notifications_table(page.items)
    more(page)


@notification_app.command("retry", short_help="Send failed notifications again.")
def notification_retry(
    ctx: typer.Context,
    notification_id: Annotated[
        int | None, typer.Argument(metavar="[ID]", help="The failed notification to retry.")
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Retry every failed notification.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Put failed notifications back to pending; the worker sends them again.

    \b
    Examples:
      orderpay notification retry 42
      orderpay notification retry --all-failed --yes
    """
    from orderpay.errors import InvalidField
    from orderpay.store.notifications import failed_ids
    from orderpay.store.outbox import retry_notification

    if (notification_id is None) == (not all_failed):
        raise InvalidField("give one notification ID or --all-failed, not both or neither")
    rt = runtime(ctx)
    if notification_id is not None:
        ids = [notification_id]
    else:
        with rt.database.transaction() as conn:
            ids = failed_ids(conn)
    if not ids:
        info("no failed notifications")
        if json_:
            emit_json([])
        return
    if all_failed:
        confirm(f"Retry {len(ids)} failed notification(s)?", yes=yes)
    from orderpay.errors import NotificationNotRetryable

    retried = []
    operator = rt.settings.operator_name
    for nid in progress(ids, "retrying", enabled=len(ids) >= 20):
        try:
            with rt.database.transaction() as conn:
                retried.append(retry_notification(conn, nid, operator=operator))
        except NotificationNotRetryable:
            if not all_failed:
                raise
            # Sent or retried by someone else since the list was read: nothing to do.
    if retried:
        rt.nudger.notify_now()
    if json_:
        from orderpay.shapes import notification_shape

        emit_json([notification_shape(n) for n in retried])
    else:
        info(f"{len(retried)} notification(s) back to pending")
