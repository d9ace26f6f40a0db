"""`orderpay db prune --older-than AGE`: phone numbers masked in old callback payloads and in
old notifications; recent ones, ids, amounts, statuses and the ledger left as they were."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select, text

from orderpay import clock
from orderpay.domain.phones import mask_phones_in
from orderpay.domain.redaction import mask_payload
from orderpay.notify.channels import LogChannel
from orderpay.notify.delivery import RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.payments.callbacks import apply_callback, parse_callback
from orderpay.store import retention
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.schema import notifications, webhook_events
from orderpay.store.webhook_events import mask_payloads, record_once
from tests.conftest import Cli, count_rows
from tests.live_server import a_pending_payment, callback_body
from tests.redis_helpers import serving
from tests.user_shell import orderpay_at_a_terminal

MERCHANT = "Kenkey Corner, call 0302123456"
# The subscriber parts of the numbers the rows hold, however they are written.
SUBSCRIBERS = ("241234567", "302123456")
LEDGER = ("customers", "products", "orders", "order_items", "payments", "order_events")


@dataclass(frozen=True)
class Stored:
    """What one settled payment left behind: its callback, a delivery report, an MTN-style
    hint and its notification."""

    order_id: uuid.UUID
    callback: int
    report: int
    hint: int
    notification: int


def a_settled_payment_with_phones(db: Database) -> Stored:
    """A payment settled by a callback whose payload carries the payer's number three ways,
    its message sent (with the merchant's number in the text) and reported delivered."""
    payment = a_pending_payment(db)
    body = callback_body(
        payment,
        payer={"partyIdType": "MSISDN", "partyId": "233241234567"},
        msisdn="0241234567",
        note="paid from +233 24 123 4567",
    )
    with db.transaction() as conn:
        apply_callback(conn, parse_callback(body), NotifyTarget("log"))
    Drain(db, serving(LogChannel()), RetryPolicy((1,), 30), MERCHANT).drain_due()
    report = (
        f"id=ATXid_{payment.id.hex[:8]}&status=Success&phoneNumber=%2B233241234567"
        "&networkCode=62001&retryCount=0"
    )
    hint = {
        "externalId": str(payment.order_id),
        "financialTransactionId": "233241234567",
        "status": "SUCCESSFUL",
        "amount": "25.00",
        "currency": "GHS",
    }
    with db.transaction() as conn:
        for source, payload in (("sms-dlr", report), ("mtn", json.dumps(hint))):
            record_once(
                conn,
                source=source,
                dedupe_key=f"{payment.id}:{source}",
                payload=payload,
                outcome="kept",
                order_id=payment.order_id,
            )
        events = dict(
            conn.execute(
                select(webhook_events.c.source, webhook_events.c.id).where(
                    webhook_events.c.order_id == payment.order_id
                )
            ).all()
        )
        notification = conn.execute(
            select(notifications.c.id).where(notifications.c.payment_id == payment.id)
        ).scalar_one()
    return Stored(payment.order_id, events["momo"], events["sms-dlr"], events["mtn"], notification)


def payload(db: Database, event_id: int) -> str:
    with db.transaction() as conn:
        return str(
            conn.execute(
                select(webhook_events.c.payload).where(webhook_events.c.id == event_id)
            ).scalar_one()
        )


def message(db: Database, notification_id: int) -> tuple[str, str, str]:
    with db.transaction() as conn:
        body, recipient, status = conn.execute(
            select(notifications.c.body, notifications.c.recipient, notifications.c.status).where(
                notifications.c.id == notification_id
            )
        ).one()
    return body, recipient, status


def full_numbers_in(stored: str) -> list[str]:
    """The subscriber numbers still readable in `stored` (spaces, hyphens and %2B aside)."""
    compact = re.sub(r"[\s-]", "", stored.replace("%2B", "+"))
    return [number for number in SUBSCRIBERS if number in compact]


def everything(db: Database) -> dict[str, list[str]]:
    """Every row of every table, as Postgres prints it."""
    with db.transaction() as conn:
        return {
            table: [
                row[0]
                for row in conn.execute(text(f"SELECT t::text FROM {table} t ORDER BY t::text"))
            ]
            for table in (*LEDGER, "webhook_events", "notifications")
        }


@pytest.fixture
def old_and_recent(db: Database) -> tuple[Stored, Stored]:
    """One payment's traces 100 days old, another's from now."""
    old = a_settled_payment_with_phones(db)
    clock.advance(timedelta(days=100))
    return old, a_settled_payment_with_phones(db)


def prune(cli: Cli, *args: str) -> Any:
    return cli.ok("db", "prune", "--older-than", "90d", "--yes", *args)


def test_the_rows_a_prune_works_on_hold_phone_numbers(
    db: Database, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent

    assert full_numbers_in(payload(db, old.callback)) == ["241234567"]
    assert full_numbers_in(payload(db, old.report)) == ["241234567"]
    assert full_numbers_in("".join(message(db, old.notification)[:2])) == list(SUBSCRIBERS)


def test_prune_masks_every_phone_number_in_old_callback_payloads(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent

    prune(cli)

    callback = payload(db, old.callback)
    document = json.loads(callback)  # still JSON
    assert full_numbers_in(callback) == []
    assert document["payer"] == {"partyIdType": "MSISDN", "partyId": "2332****4567"}
    assert document["msisdn"] == "024****567"
    assert document["note"] == "paid from +233*****4567"


def test_prune_keeps_what_a_callback_is_about(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent
    before = json.loads(payload(db, old.callback))

    prune(cli)

    after = json.loads(payload(db, old.callback))
    kept = ("provider_reference", "order_id", "status", "amount", "currency")
    assert {name: after[name] for name in kept} == {name: before[name] for name in kept}
    assert parse_callback(payload(db, old.callback).encode()).order_id == old.order_id


def test_prune_masks_the_number_in_an_old_form_encoded_delivery_report(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent

    prune(cli)

    report = payload(db, old.report)
    fields = dict(parse_qsl(report))
    assert full_numbers_in(report) == []
    assert fields["phoneNumber"] == "+233*****4567"
    assert fields["status"] == "Success"
    assert fields["id"].startswith("ATXid_")


def test_prune_keeps_a_transaction_id_that_looks_like_a_phone_number(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent
    before = payload(db, old.hint)

    prune(cli)

    assert payload(db, old.hint) == before
    assert json.loads(before)["financialTransactionId"] == "233241234567"


def test_prune_masks_the_body_and_the_phone_recipient_of_an_old_notification(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent

    prune(cli)

    body, recipient, status = message(db, old.notification)
    assert recipient == "+233*****4567"
    assert body.endswith("Thank you! - Kenkey Corner, call 030****456")
    assert "GHS 25.00" in body
    assert status == "sent"


def test_prune_leaves_recent_callbacks_and_notifications_as_they_were(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    _, recent = old_and_recent
    events = [payload(db, event) for event in (recent.callback, recent.report, recent.hint)]
    sent = message(db, recent.notification)

    prune(cli)

    assert [payload(db, e) for e in (recent.callback, recent.report, recent.hint)] == events
    assert message(db, recent.notification) == sent


def test_prune_never_changes_orders_payments_customers_or_the_timeline(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    before = everything(db)

    prune(cli)

    after = everything(db)
    assert {table: after[table] for table in LEDGER} == {table: before[table] for table in LEDGER}
    assert after != before  # and yet it masked something


def test_prune_reports_how_many_rows_it_masked_and_a_second_run_masks_none(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    first = prune(cli)
    second = prune(cli)

    assert first["callbacks"] == {"examined": 3, "masked": 2}  # the hint holds no phone
    assert first["notifications"] == {"examined": 1, "masked": 1}
    assert second["callbacks"] == {"examined": 3, "masked": 0}
    assert second["notifications"] == {"examined": 1, "masked": 0}
    cutoff = datetime.fromisoformat(first["cutoff"])
    assert abs(cutoff - (clock.utcnow() - timedelta(days=90))) < timedelta(minutes=1)


def test_prune_goes_through_the_rows_batch_by_batch(
    db: Database, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [a_settled_payment_with_phones(db) for _ in range(2)]
    clock.advance(timedelta(days=100))
    monkeypatch.setattr(retention, "BATCH", 2)  # 6 callbacks: three batches and an empty one

    done = prune(cli)

    assert done["callbacks"] == {"examined": 6, "masked": 4}
    assert done["notifications"] == {"examined": 2, "masked": 2}
    for stored in old:
        assert full_numbers_in(payload(db, stored.callback)) == []
        assert full_numbers_in(payload(db, stored.report)) == []
        assert full_numbers_in("".join(message(db, stored.notification)[:2])) == []


def test_prune_says_what_it_masked_on_stderr(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    outcome = cli("db", "prune", "--older-than", "90d", "--yes")

    assert outcome.exit_code == 0
    assert outcome.stdout == ""
    assert outcome.stderr.startswith(
        "masked phone numbers in 2 of 3 callbacks and 1 of 1 notification from before "
    )


def test_a_pending_notification_keeps_its_recipient_as_it_is_yet_to_be_sent(
    db: Database, cli: Cli
) -> None:
    payment = a_pending_payment(db)
    with db.transaction() as conn:
        apply_callback(conn, parse_callback(callback_body(payment)), NotifyTarget("sms"))
    clock.advance(timedelta(days=100))

    prune(cli)

    with db.transaction() as conn:
        recipient, status = conn.execute(
            select(notifications.c.recipient, notifications.c.status)
        ).one()
    assert (recipient, status) == ("+233241234567", "pending")


def test_without_yes_and_without_a_terminal_prune_is_refused_and_changes_nothing(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored]
) -> None:
    before = everything(db)

    outcome = cli("db", "prune", "--older-than", "90d", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "confirmation_required"
    assert "--yes" in outcome.error()["message"]
    assert outcome.stdout == ""
    assert everything(db) == before


@pytest.mark.slow
def test_declining_at_a_terminal_exits_0_and_changes_nothing(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    a_settled_payment_with_phones(db)
    with db.transaction() as conn:  # the installed command runs on the wall clock
        conn.execute(text("UPDATE webhook_events SET received_at = received_at - interval '100d'"))
        conn.execute(text("UPDATE notifications SET created_at = created_at - interval '100d'"))
    before = everything(db)

    run = orderpay_at_a_terminal(
        tmp_path, "db", "prune", "--older-than", "90d", answer="n", env={"DATABASE_URL": pg_url}
    )

    assert run.exit_code == 0
    assert "Mask phone numbers in 3 callbacks and 1 notification from before" in run.stdout
    assert "nothing changed" in run.stdout
    assert everything(db) == before


@pytest.mark.parametrize(
    ("older_than", "message"),
    [
        ("90 days", "'90 days' is not a time"),
        ("soon", "'soon' is not a time"),
        ("2999-01-01", "is in the future"),
    ],
)
def test_a_bad_older_than_is_exit_2_and_changes_nothing(
    db: Database, cli: Cli, old_and_recent: tuple[Stored, Stored], older_than: str, message: str
) -> None:
    before = everything(db)

    outcome = cli("db", "prune", "--older-than", older_than, "--yes")

    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert everything(db) == before


def test_older_than_is_required(cli: Cli) -> None:
    outcome = cli("db", "prune", "--yes")

    assert outcome.exit_code == 2
    assert "--older-than" in outcome.stderr


def test_a_payload_changed_since_it_was_read_is_not_overwritten(
    db: Database, old_and_recent: tuple[Stored, Stored]
) -> None:
    old, _ = old_and_recent
    current = payload(db, old.callback)

    with db.transaction() as conn:
        replaced = mask_payloads(
            conn, [{"b_id": old.callback, "b_old": current + " ", "v_payload": "{}"}]
        )

    assert replaced == 0
    assert payload(db, old.callback) == current


def test_prune_with_nothing_old_asks_nothing_and_masks_nothing(db: Database, cli: Cli) -> None:
    a_settled_payment_with_phones(db)
    before = count_rows(db)

    outcome = cli("db", "prune", "--older-than", "90d")  # no --yes, no terminal: not needed

    assert outcome.exit_code == 0, outcome.stderr
    assert "masked phone numbers in 0 of 0 callbacks and 0 of 0 notifications" in outcome.stderr
    assert count_rows(db) == before


# --- Finding phone numbers in text (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "masked"),
    [
        ("+233241234567", "+233*****4567"),
        ("+233 24 123 4567", "+233*****4567"),
        ("233241234567", "2332****4567"),
        ("46733123450", "467*****450"),
        ("0241234567", "024****567"),
        ("024-123-4567", "024****567"),
        ("phoneNumber=%2B233241234567", "phoneNumber=%2B233*****4567"),
        ("call 0241234567 2 times, or 0501234567.", "call 024****567 2 times, or 050****567."),
        ("1250 0241234567", "1250 024****567"),
    ],
)
def test_phone_numbers_in_text_are_masked(stored: str, masked: str) -> None:
    assert mask_phones_in(stored, "GH") == masked


@pytest.mark.parametrize(
    "stored",
    [
        "order 3f1c2a9e-5012-4b3c-9d8e-447700912345",  # a UUID
        "GHS 1,250.00 and 12500000.00",  # amounts
        "on 2026-11-01 at 14:30:05",  # times
        "1767225600",  # a Unix time
        "ref 363440463",  # an id that no numbering plan holds
        "+233*****4567",  # already masked
    ],
)
def test_what_is_not_a_phone_number_is_kept(stored: str) -> None:
    assert mask_phones_in(stored, "GH") == stored


def test_a_json_number_that_is_a_phone_becomes_a_masked_string() -> None:
    masked = mask_payload('{"msisdn": 233241234567, "amount": 233241234567}', "GH")

    assert json.loads(masked) == {"msisdn": "2332****4567", "amount": 233241234567}
