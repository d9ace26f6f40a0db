"""`orderpay notification list|retry`: see what was sent, and send the failed ones again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from orderpay import clock
from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from tests.builders import AMA
from tests.conftest import Cli, count_rows
from tests.http_recorder import Answer
from tests.redis_helpers import (
    MERCHANT,
    Gateway,
    SettledPayment,
    a_gateway,
    a_settled_payment,
    at_answer,
    event_names,
    in_process_worker_fixture,  # noqa: F401
    notification,
    notification_rows,
    redis_url_fixture,  # noqa: F401
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    sms_env,
)
from tests.user_shell import orderpay, orderpay_at_a_terminal

POLICY = RetryPolicy((1, 1), 30)
REFUSAL = at_answer(403, "InvalidPhoneNumber", "None")
SMS = NotifyTarget("sms")


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with a_gateway() as running:
        yield running


def deliver_due(db: Database, gateway: Gateway, *script: Answer) -> None:
    """One drain against the gateway, which answers `script` first (then success)."""
    gateway.then(*script)
    channel = sms_channel(gateway)
    with closing(channel):
        Drain(db, serving(channel), POLICY, MERCHANT).drain_due()


def a_failed_notification(db: Database, gateway: Gateway) -> SettledPayment:
    """A notification the gateway refused: `failed` after one try."""
    settled = a_settled_payment(db, target=SMS)
    deliver_due(db, gateway, REFUSAL)
    assert notification(db, settled.notification_id).status is NotificationStatus.FAILED
    return settled


def a_sent_notification(db: Database, gateway: Gateway) -> SettledPayment:
    settled = a_settled_payment(db, target=SMS)
    deliver_due(db, gateway)
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT
    return settled


# --- list -----------------------------------------------------------------------------------


def test_notification_list_json_shows_each_notification(
    any_cli: Cli, any_db: Database, gateway: Gateway
) -> None:
    settled = a_failed_notification(any_db, gateway)

    (shown,) = any_cli.items("notification", "list")

    assert shown["id"] == settled.notification_id
    assert shown["order"] == str(settled.order_id)
    assert (shown["kind"], shown["channel"], shown["recipient"]) == (
        "payment_received",
        "sms",
        AMA,
    )
    assert (shown["status"], shown["attempts"]) == ("failed", 1)
    assert "InvalidPhoneNumber" in shown["last_error"]


def test_notification_list_filters_by_status(cli: Cli, db: Database, gateway: Gateway) -> None:
    failed = a_failed_notification(db, gateway)
    a_sent_notification(db, gateway)

    shown = cli.items("notification", "list", "--status", "failed")

    assert [n["id"] for n in shown] == [failed.notification_id]


def test_notification_list_filters_by_order(cli: Cli, db: Database) -> None:
    a_settled_payment(db, target=SMS)
    wanted = a_settled_payment(db, target=SMS)

    shown = cli.items("notification", "list", "--order", str(wanted.order_id))

    assert [n["id"] for n in shown] == [wanted.notification_id]


def test_notification_list_with_a_malformed_order_id_exits_2(cli: Cli, db: Database) -> None:
    a_settled_payment(db, target=SMS)

    outcome = cli("notification", "list", "--order", "not-a-uuid", "--json")

    assert outcome.exit_code == 2
    assert outcome.stdout == ""


def test_notification_list_with_an_unknown_status_exits_2(cli: Cli, db: Database) -> None:
    outcome = cli("notification", "list", "--status", "lost", "--json")

    assert outcome.exit_code == 2
    assert outcome.stdout == ""


# --- retry ----------------------------------------------------------------------------------


def test_retrying_a_failed_notification_puts_it_back_to_pending_with_fresh_tries(
    any_cli: Cli, any_db: Database, gateway: Gateway
) -> None:
    settled = a_failed_notification(any_db, gateway)

    (retried,) = any_cli.ok("notification", "retry", str(settled.notification_id))

    row = notification(any_db, settled.notification_id)
    assert (retried["status"], retried["attempts"]) == ("pending", 0)
    assert (row.status, row.attempts, row.enqueued_at) == (NotificationStatus.PENDING, 0, None)
    assert event_names(any_db, settled.order_id)[-1] == "notification_retried"


def test_a_retried_notification_is_sent_by_the_next_worker_run(
    cli: Cli, db: Database, in_process_worker: None, gateway: Gateway
) -> None:
    settled = a_failed_notification(db, gateway)
    cli.ok("notification", "retry", str(settled.notification_id))

    before = gateway.count()

    outcome = cli("worker", "--burst", **sms_env(gateway.url))

    requests = gateway.count() - before

    assert outcome.exit_code == 0, outcome.stderr
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_a_retried_notification_is_sent_by_the_rq_worker(
    cli: Cli, db: Database, redis_url: str, in_process_worker: None, gateway: Gateway
) -> None:
    settled = a_failed_notification(db, gateway)
    cli.ok("notification", "retry", str(settled.notification_id))

    before = gateway.count()

    outcome = cli(
        "worker",
        "--burst",
        "--worker-class",
        "simple",
        REDIS_URL=redis_url,
        **sms_env(gateway.url),
    )

    requests = gateway.count() - before

    assert outcome.exit_code == 0, outcome.stderr
    assert requests == 1
    assert notification(db, settled.notification_id).status is NotificationStatus.SENT


def test_a_notification_whose_recipient_was_masked_by_a_prune_is_not_retried(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    settled = a_failed_notification(db, gateway)
    clock.advance(timedelta(days=100))
    cli.ok("db", "prune", "--older-than", "90d", "--yes")
    before = notification(db, settled.notification_id)

    outcome = cli("notification", "retry", str(settled.notification_id), "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "notification_not_retryable"
    assert "masked" in outcome.error()["message"]
    assert notification(db, settled.notification_id) == before


def test_retry_all_failed_yes_sends_every_failed_notification_again(
    any_cli: Cli, any_db: Database, in_process_worker: None, gateway: Gateway
) -> None:
    failed = [a_failed_notification(any_db, gateway) for _ in range(2)]
    sent = a_sent_notification(any_db, gateway)
    sent_before = notification(any_db, sent.notification_id)

    retried = any_cli.ok("notification", "retry", "--all-failed", "--yes")
    before = gateway.count()

    outcome = any_cli("worker", "--burst", **sms_env(gateway.url))

    requests = gateway.count() - before

    assert sorted(n["id"] for n in retried) == sorted(f.notification_id for f in failed)
    assert outcome.exit_code == 0, outcome.stderr
    assert requests == 2
    for settled in failed:
        assert notification(any_db, settled.notification_id).status is NotificationStatus.SENT
    assert notification(any_db, sent.notification_id) == sent_before


@pytest.mark.slow
def test_retry_all_failed_without_a_terminal_or_yes_is_refused_and_changes_nothing(
    pg_url: str, db: Database, gateway: Gateway, tmp_path: Path
) -> None:
    settled = a_failed_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    refused = orderpay(
        tmp_path, "notification", "retry", "--all-failed", "--json", env={"DATABASE_URL": pg_url}
    )

    assert refused.exit_code == 2
    assert refused.error()["code"] == "confirmation_required"
    assert "--yes" in refused.error()["message"]
    assert (count_rows(db), notification_rows(db)) == before
    assert notification(db, settled.notification_id).status is NotificationStatus.FAILED


@pytest.mark.slow
def test_declining_retry_all_failed_at_the_prompt_exits_0_and_changes_nothing(
    pg_url: str, db: Database, gateway: Gateway, tmp_path: Path
) -> None:
    a_failed_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    declined = orderpay_at_a_terminal(
        tmp_path,
        "notification",
        "retry",
        "--all-failed",
        answer="n",
        env={"DATABASE_URL": pg_url},
    )

    assert declined.exit_code == 0, declined.stdout
    assert "Retry 1 failed notification(s)? [y/N]" in declined.stdout
    assert "nothing changed" in declined.stdout
    assert (count_rows(db), notification_rows(db)) == before


@pytest.mark.slow
def test_accepting_retry_all_failed_at_the_prompt_puts_them_back_to_pending(
    pg_url: str, db: Database, gateway: Gateway, tmp_path: Path
) -> None:
    settled = a_failed_notification(db, gateway)

    accepted = orderpay_at_a_terminal(
        tmp_path,
        "notification",
        "retry",
        "--all-failed",
        answer="y",
        env={"DATABASE_URL": pg_url},
    )

    assert accepted.exit_code == 0, accepted.stdout
    assert notification(db, settled.notification_id).status is NotificationStatus.PENDING


def test_retry_all_failed_with_nothing_failed_exits_0_and_changes_nothing(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    a_sent_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    outcome = cli("notification", "retry", "--all-failed", "--yes", "--json")

    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.json() == []
    assert (count_rows(db), notification_rows(db)) == before


def test_retrying_a_sent_notification_exits_4_and_changes_nothing(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    settled = a_sent_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    outcome = cli("notification", "retry", str(settled.notification_id), "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "notification_not_retryable"
    assert (count_rows(db), notification_rows(db)) == before


def test_retrying_a_pending_notification_exits_4_and_changes_nothing(
    cli: Cli, db: Database
) -> None:
    settled = a_settled_payment(db, target=SMS)
    before = count_rows(db), notification_rows(db)

    outcome = cli("notification", "retry", str(settled.notification_id), "--json")

    assert outcome.exit_code == 4
    assert outcome.error()["code"] == "notification_not_retryable"
    assert (count_rows(db), notification_rows(db)) == before


@pytest.mark.slow
def test_retrying_an_unknown_notification_exits_3_and_changes_nothing(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    a_failed_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    outcome = cli("notification", "retry", "999999", "--json")

    assert outcome.exit_code == 3
    assert outcome.error()["code"] == "notification_not_found"
    assert (count_rows(db), notification_rows(db)) == before


def test_retry_needs_exactly_one_of_an_id_or_all_failed_and_changes_nothing(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    settled = a_failed_notification(db, gateway)
    before = count_rows(db), notification_rows(db)

    neither = cli("notification", "retry", "--json")
    both = cli("notification", "retry", str(settled.notification_id), "--all-failed", "--json")

    assert (neither.exit_code, both.exit_code) == (2, 2)
    assert neither.error()["code"] == both.error()["code"] == "invalid_field"
    assert (count_rows(db), notification_rows(db)) == before
