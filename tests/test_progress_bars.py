"""Progress bars are drawn on stderr only when it is a terminal: a cron job's mail, a CI log or
`2> file` never fills with bar frames. And commands with nothing to do say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli, count_rows
from tests.redis_helpers import (
    MERCHANT,
    Gateway,
    a_gateway,
    a_settled_payment,
    at_answer,
    notification,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
)
from tests.user_shell import orderpay, orderpay_at_a_terminal

# rich draws its bars with these; no other output of these commands uses them.
BAR_CHARACTERS = ("━", "╸", "╺")
REFUSAL = at_answer(403, "InvalidPhoneNumber", "None")
# notification retry shows a bar from this many notifications on (fewer go by too fast).
MANY = 20


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with a_gateway() as running:
        yield running


def failed_notifications(db: Database, gateway: Gateway, count: int) -> list[int]:
    """`count` notifications the SMS gateway refused for good (`failed` after one try)."""
    settled = [a_settled_payment(db, target=NotifyTarget("sms")) for _ in range(count)]
    gateway.then(*[REFUSAL] * count)
    channel = sms_channel(gateway)
    with closing(channel):
        Drain(db, serving(channel), RetryPolicy((1,), 30), MERCHANT).drain_due()
    ids = [s.notification_id for s in settled]
    assert {notification(db, n).status for n in ids} == {NotificationStatus.FAILED}
    return ids


def pending_payments(db: Database, count: int) -> None:
    """`count` payments the simulator accepted and reconcile may ask about (0s old)."""
    cli = Cli({"DATABASE_URL": db.url})
    for _ in range(count):
        order = an_order(db, phone=MTN_SANDBOX_PAYER)
        assert cli.ok("charge", str(order.id), "--key", a_key())["status"] == "pending"


def drew_a_bar(stderr: str) -> bool:
    return any(character in stderr for character in BAR_CHARACTERS)


def test_retrying_many_failed_notifications_draws_no_bar_when_stderr_is_not_a_terminal(
    cli: Cli, db: Database, gateway: Gateway
) -> None:
    failed_notifications(db, gateway, MANY)

    outcome = cli("notification", "retry", "--all-failed", "--yes")

    assert outcome.exit_code == 0, outcome.stderr
    assert f"{MANY} notification(s) back to pending" in outcome.stderr
    assert not drew_a_bar(outcome.stderr), outcome.stderr


@pytest.mark.slow
def test_reconciling_several_payments_draws_no_bar_when_stderr_is_not_a_terminal(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    pending_payments(db, 2)

    run = orderpay(tmp_path, "reconcile", "--older-than", "0s", env={"DATABASE_URL": pg_url})

    assert run.exit_code == 0, run.stderr
    assert "checked 2 payment(s); 2 changed" in run.stderr
    assert not drew_a_bar(run.stderr), run.stderr
    assert "reconciling" not in run.stderr


@pytest.mark.slow
def test_reconciling_several_payments_at_a_terminal_draws_a_bar(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    pending_payments(db, 2)

    run = orderpay_at_a_terminal(
        tmp_path, "reconcile", "--older-than", "0s", answer="", env={"DATABASE_URL": pg_url}
    )

    assert run.exit_code == 0, run.stdout
    assert "reconciling" in run.stdout
    assert drew_a_bar(run.stdout)


# Nothing to do: said in words, and nothing changes.


def test_retrying_all_failed_with_none_failed_says_so(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("notification", "retry", "--all-failed", "--yes")

    assert outcome.exit_code == 0, outcome.stderr
    assert "no failed notifications" in outcome.stderr
    assert count_rows(db) == before


def test_reconcile_with_nothing_to_reconcile_says_so(cli: Cli, db: Database) -> None:
    before = count_rows(db)

    outcome = cli("reconcile", "--older-than", "0s")

    assert outcome.exit_code == 0, outcome.stderr
    assert "nothing to reconcile" in outcome.stdout + outcome.stderr
    assert count_rows(db) == before


def test_a_dry_run_with_nothing_old_enough_says_what_it_skipped_and_why(
    cli: Cli, db: Database
) -> None:
    pending_payments(db, 1)
    before = count_rows(db)

    outcome = cli("reconcile", "--dry-run", "--older-than", "1h")  # nothing that old

    assert outcome.exit_code == 0, outcome.stderr
    assert "Not asked" in outcome.stdout
    assert "changed within 1h (--older-than)" in outcome.stdout
    assert "checked 0 payment(s); 0 would change; 1 skipped" in outcome.stderr
    assert count_rows(db) == before
