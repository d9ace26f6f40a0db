"""A batch of callbacks writes what the ordinary transaction writes, one callback at a time.

Every callback case is set up identically on two Postgres databases (the same ids: see
`same_ids`), then sent on one through the batch path (a batch of one, falling back to
callbacks.apply_callback when it answers None, as the route does), on the other through
apply_callback alone. The answers and every row of the ledger tables must be the same,
timestamps aside. The batch path must also settle the common cases itself and write nothing
when it falls back. Batches of several callbacks: tests/test_callback_batches.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text

from orderpay.errors import OrderpayError
from orderpay.payments.callback_batches import settle_batch
from orderpay.payments.callbacks import Callback, CallbackResult, apply_callback, parse_callback
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.shop.orders import cancel_order
from orderpay.store.async_db import create_pool
from orderpay.store.db import Database, retrying
from orderpay.store.migrate import downgrade, upgrade
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from tests.builders import a_key, an_order
from tests.live_server import SENDER_ID, a_pending_payment

LOG = NotifyTarget("log")
WEBHOOK = NotifyTarget("webhook", "https://merchant.example/hooks/paid")


class MtnLike(SimulatorProvider):
    """A provider that does not sign momo callbacks: a signed one about its payment is a hint."""

    name = "mtn"


def body(reference: str, order_id: uuid.UUID, status: str = "success", **fields: Any) -> bytes:
    document = {
        "provider_reference": reference,
        "order_id": str(order_id),
        "status": status,
        "amount": "25.00",
        "currency": "GHS",
        **fields,
    }
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def ours(payment: Payment, status: str = "success", **fields: Any) -> bytes:
    return body(payment.provider_reference or str(payment.id), payment.order_id, status, **fields)


@dataclass(frozen=True)
class Sent:
    """One callback of a case: its body, and its webhook id (None: keyed by reference)."""

    body: bytes
    webhook_id: str | None = None

    def parsed(self) -> Callback:
        return parse_callback(self.body, webhook_id=self.webhook_id)


# Not a callback: a step of the situation, the order charged (again) between two callbacks.
CHARGE = Sent(b"")


@dataclass(frozen=True)
class Case:
    """A situation (`setup` builds it and returns the callbacks to send, in order) and, per
    callback, whether the fast path settles it itself (True) or falls back (False)."""

    name: str
    setup: Callable[[Database], list[Sent]]
    fast: tuple[bool, ...]
    notify: NotifyTarget = field(default=LOG)


def pending(db: Database, **options: Any) -> Payment:
    return a_pending_payment(db, **options)


def charged_again(db: Database, order_id: uuid.UUID) -> Payment:
    """A second charge of an order whose first payment failed."""
    return charge_order(
        db,
        SimulatorProvider(),
        order_id=order_id,
        key="charged-again",
        default_region="GH",
        lease_seconds=90,
    ).payment


def _success(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db)))]


def _success_to_a_webhook(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db)))]


def _failure(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), "failed", reason="APPROVAL_REJECTED"))]


def _failure_without_reason(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), "failed"))]


def _replay(db: Database) -> list[Sent]:
    sent = Sent(ours(pending(db)))
    return [sent, sent]


def _replayed_failure(db: Database) -> list[Sent]:
    sent = Sent(ours(pending(db), "failed", reason="EXPIRED"))
    return [sent, sent]


def _same_webhook_id(db: Database) -> list[Sent]:
    sent = Sent(ours(pending(db)), webhook_id="msg_1")
    return [sent, sent]


def _copy_under_another_webhook_id(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(ours(payment), "msg_1"), Sent(ours(payment), "msg_2")]


def _senders_own_id(db: Database) -> list[Sent]:
    return [Sent(body(SENDER_ID, pending(db).order_id))]


def _senders_own_id_failure(db: Database) -> list[Sent]:
    return [Sent(body(SENDER_ID, pending(db).order_id, "failed", reason="NOT_ENOUGH_FUNDS"))]


def _senders_own_id_then_a_copy(db: Database) -> list[Sent]:
    order_id = pending(db).order_id
    return [Sent(body(SENDER_ID, order_id), "msg_1"), Sent(body(SENDER_ID, order_id), "msg_2")]


def _senders_own_id_then_ours(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(body(SENDER_ID, payment.order_id)), Sent(ours(payment), "msg_2")]


def _unknown_uuid_reference(db: Database) -> list[Sent]:
    return [Sent(body(str(uuid.uuid4()), pending(db).order_id))]


def _our_id_in_capitals(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(body(str(payment.id).upper(), payment.order_id))]


def _without_amount_and_currency(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), amount=None, currency=None))]


def _amount_without_currency(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), currency=None))]


def _amount_as_a_number(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db, price="12", currency="RWF"), amount=24, currency="RWF"))]


def _zero_decimal_currency(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db, price="1250", currency="UGX"), amount="2500", currency="UGX"))]


def _amount_mismatch(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), amount="24.99"))]


def _amount_mismatch_without_currency(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), amount="2500", currency=None))]


def _currency_mismatch(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), currency="KES"))]


def _amount_with_too_many_decimals(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db), amount="25.001"))]


def _amount_with_decimals_in_a_zero_decimal_currency(db: Database) -> list[Sent]:
    return [Sent(ours(pending(db, price="1250", currency="UGX"), amount="2500.5", currency=None))]


def _success_after_failure(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(ours(payment, "failed", reason="EXPIRED")), Sent(ours(payment))]


def _failure_after_success(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(ours(payment)), Sent(ours(payment, "failed", reason="EXPIRED"))]


def _unknown_reference_on_a_paid_order(db: Database) -> list[Sent]:
    payment = pending(db)
    return [Sent(ours(payment)), Sent(body("someone-elses-ref", payment.order_id))]


def _unknown_reference_on_a_cancelled_order(db: Database, status: str) -> list[Sent]:
    order = an_order(db)
    with db.transaction() as conn:
        cancel_order(conn, order.id)
    return [Sent(body(SENDER_ID, order.id, status))]


def _success_on_a_cancelled_order(db: Database) -> list[Sent]:
    return _unknown_reference_on_a_cancelled_order(db, "success")


def _failure_on_a_cancelled_order(db: Database) -> list[Sent]:
    return _unknown_reference_on_a_cancelled_order(db, "failed")


def _no_payment_yet_then_a_copy_once_charged(db: Database) -> list[Sent]:
    order = an_order(db)
    early = Sent(body(SENDER_ID, order.id), "msg_1")
    return [early, CHARGE, early]


def _an_unknown_order(db: Database) -> list[Sent]:
    pending(db)
    return [Sent(body(SENDER_ID, uuid.uuid4()))]


def _another_orders_payment(db: Database) -> list[Sent]:
    first, second = pending(db), pending(db)
    return [Sent(body(str(first.id), second.order_id))]


def _a_payment_of_a_provider_that_does_not_sign(db: Database) -> list[Sent]:
    order = an_order(db)
    payment = charge_order(
        db, MtnLike(), order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
    ).payment
    return [Sent(ours(payment))]


def _two_payments_the_failed_one_named(db: Database) -> list[Sent]:
    first = pending(db)
    failed = Sent(ours(first, "failed", reason="EXPIRED"))
    return [failed, CHARGE, Sent(ours(first), "msg_2")]


def _two_payments_the_new_one_by_the_senders_id(db: Database) -> list[Sent]:
    first = pending(db)
    failed = Sent(ours(first, "failed", reason="EXPIRED"))
    return [failed, CHARGE, Sent(body(SENDER_ID, first.order_id), "msg_2")]


CASES = [
    Case("success", _success, (True,)),
    Case("success, notified by the merchant's webhook", _success_to_a_webhook, (True,), WEBHOOK),
    Case("failure", _failure, (True,)),
    Case("failure without a reason", _failure_without_reason, (True,)),
    Case("replayed success", _replay, (True, True)),
    Case("replayed failure", _replayed_failure, (True, True)),
    Case("same webhook id twice", _same_webhook_id, (True, True)),
    Case("copy under another webhook id", _copy_under_another_webhook_id, (True, False)),
    Case("sender's own transaction id", _senders_own_id, (True,)),
    Case("sender's own transaction id, failure", _senders_own_id_failure, (True,)),
    Case("sender's id, then a copy under it", _senders_own_id_then_a_copy, (True, False)),
    Case("sender's id, then ours", _senders_own_id_then_ours, (True, False)),
    Case("an unknown UUID as reference", _unknown_uuid_reference, (True,)),
    Case("our payment id in capitals", _our_id_in_capitals, (True,)),
    Case("no amount, no currency", _without_amount_and_currency, (True,)),
    Case("amount without currency", _amount_without_currency, (True,)),
    Case("amount as a JSON number", _amount_as_a_number, (True,)),
    Case("a currency without decimals", _zero_decimal_currency, (True,)),
    Case("amount mismatch", _amount_mismatch, (False,)),
    Case("amount mismatch without currency", _amount_mismatch_without_currency, (False,)),
    Case("currency mismatch", _currency_mismatch, (False,)),
    Case("amount with too many decimals", _amount_with_too_many_decimals, (False,)),
    Case(
        "decimals in a currency without them",
        _amount_with_decimals_in_a_zero_decimal_currency,
        (False,),
    ),
    Case("success after failure", _success_after_failure, (True, False)),
    Case("failure after success", _failure_after_success, (True, False)),
    Case("unknown reference on a paid order", _unknown_reference_on_a_paid_order, (True, False)),
    Case("success on a cancelled order", _success_on_a_cancelled_order, (False,)),
    Case("failure on a cancelled order", _failure_on_a_cancelled_order, (False,)),
    Case(
        "no payment yet, then a copy once charged",
        _no_payment_yet_then_a_copy_once_charged,
        (False, False),
    ),
    Case("an unknown order", _an_unknown_order, (False,)),
    Case("another order's payment", _another_orders_payment, (False,)),
    Case("a provider that does not sign", _a_payment_of_a_provider_that_does_not_sign, (False,)),
    Case("two payments, the failed one named", _two_payments_the_failed_one_named, (True, False)),
    Case(
        "two payments, the new one by the sender's id",
        _two_payments_the_new_one_by_the_senders_id,
        (True, True),
    ),
]


# --- Running a case ---------------------------------------------------------------------------

Answer = tuple[Any, ...]
Runner = Callable[[Database, Callback, NotifyTarget], "CallbackResult | None"]


def answer_of(result: CallbackResult) -> Answer:
    code = None if result.error is None else result.error.code
    confirm = None if result.confirm is None else result.confirm.id
    return (result.answer.value, result.payment_id, result.notification_queued, confirm, code)


def ordinary(db: Database, callback: Callback, notify: NotifyTarget) -> CallbackResult:
    return retrying(db, lambda conn: apply_callback(conn, callback, notify))


def play(
    db: Database,
    sent: list[Sent],
    notify: NotifyTarget,
    first: Callable[[Callback], CallbackResult | None] | None,
) -> tuple[list[Answer], list[bool]]:
    """Send each callback: through `first` (the fast path) and, when it answers None, the
    ordinary transaction; without `first`, through the ordinary transaction alone. The answers
    (or the errors raised), and per callback whether `first` settled it."""
    answers: list[Answer] = []
    settled_first: list[bool] = []
    for one in sent:
        if one is CHARGE:
            order_id = uuid.UUID(json.loads(sent[0].body)["order_id"])
            charged_again(db, order_id)
            continue
        callback = one.parsed()
        try:
            result = None if first is None else first(callback)
            settled_first.append(result is not None)
            if result is None:
                result = ordinary(db, callback, notify)
            answers.append(answer_of(result))
        except OrderpayError as error:
            answers.append(("raised", error.code))
    return answers, settled_first


async def settle_one(pool: Any, callback: Callback, notify: NotifyTarget) -> CallbackResult | None:
    """The fast path for one callback: a batch of one, as the route sends a lone callback."""
    [result] = await settle_batch(pool, [callback], notify)
    return result


@contextmanager
def batch_runner(url: str) -> Iterator[Callable[[Callback, NotifyTarget], CallbackResult | None]]:
    """settle_one on its own event loop and pool, callable from synchronous code."""
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(url, min_size=1, max_size=1))
    try:
        yield lambda callback, notify: loop.run_until_complete(settle_one(pool, callback, notify))
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


LEDGER_ROWS = {
    "payments": "SELECT id, order_id, idempotency_key, amount, currency, payer_phone, provider,"
    " provider_reference, provider_transaction_id, status, failure_reason,"
    " awaiting_confirmation, lease_expires_at FROM payments ORDER BY created_at, id",
    "orders": "SELECT id, customer_id, status, currency, total FROM orders ORDER BY created_at, id",
    "notifications": "SELECT id, order_id, payment_id, refund_id, kind, channel, recipient, body,"
    " status, attempts, last_error, gateway_message_id FROM notifications ORDER BY id",
    "order_events": "SELECT order_id, event, detail, operator FROM order_events ORDER BY id",
    # Webhook event ids differ by nature: the ordinary path numbers every copy it receives.
    "webhook_events": "SELECT source, dedupe_key, payload, outcome, order_id, payment_id"
    " FROM webhook_events ORDER BY source, dedupe_key",
    "review_items": "SELECT r.reason, r.subject, r.order_id, r.payment_id, w.dedupe_key,"
    " r.reported, r.suggested_action, r.resolved_at FROM review_items r"
    " LEFT JOIN webhook_events w ON w.id = r.event_id ORDER BY r.id",
}


def ledger_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the ledger tables, ids as UUIDs whatever the dialect stores, payment ids
    named (`naming`)."""
    with db.transaction() as conn:
        rows = {
            table: [tuple(map(uuid_or_value, row)) for row in conn.execute(text(query))]
            for table, query in LEDGER_ROWS.items()
        }
    named = naming(db)
    return {table: [tuple(named(v) for v in row) for row in found] for table, found in rows.items()}


def naming(db: Database) -> Callable[[Any], Any]:
    """Payments made after the clone (a case's CHARGE) have other ids on each side: each
    payment id is named by its place in the order payments were made, wherever it appears
    (in columns, answers, the order events's texts)."""
    with db.transaction() as conn:
        made = conn.execute(text(LEDGER_ROWS["payments"])).all()
    names = {str(uuid_or_value(row[0])): f"<payment {n}>" for n, row in enumerate(made)}

    def named(value: Any) -> Any:
        if isinstance(value, uuid.UUID) and str(value) in names:
            return names[str(value)]
        if isinstance(value, str):
            for payment_id, name in names.items():
                value = value.replace(payment_id, name)
        return value

    return named


def uuid_or_value(value: Any) -> Any:
    """A UUID as SQLite stores it (32 hex digits) made a UUID; anything else as it is."""
    if isinstance(value, str) and len(value) == 32:
        try:
            return uuid.UUID(hex=value)
        except ValueError:
            return value
    return value


@contextmanager
def same_ids(seed: str) -> Iterator[None]:
    """uuid.uuid4 drawn from a generator seeded with `seed`: a set-up run twice makes the
    same orders, payments and keys on two databases."""
    generator = random.Random(seed)
    real = uuid.uuid4

    def seeded() -> uuid.UUID:
        return uuid.UUID(int=generator.getrandbits(128), version=4)

    uuid.uuid4 = seeded  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = real  # type: ignore[assignment]


def set_up(url: str, setup: Callable[[Database], list[Sent]], seed: str) -> list[Sent]:
    """Run `setup` on the database at `url`, its ids drawn from `seed`."""
    db = Database(url)
    try:
        with same_ids(seed):
            return setup(db)
    finally:
        db.dispose()


# --- The tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_batch_writes_the_rows_and_answers_of_the_ordinary_transaction(
    case: Case, pg_url: str, second_pg_url: str
) -> None:
    sent = set_up(pg_url, case.setup, case.name)
    assert set_up(second_pg_url, case.setup, case.name) == sent
    batch_db, ordinary_db = Database(pg_url), Database(second_pg_url)
    try:
        with batch_runner(pg_url) as batch:
            batch_answers, _ = play(batch_db, sent, case.notify, lambda c: batch(c, case.notify))
        ordinary_answers, _ = play(ordinary_db, sent, case.notify, None)

        batch_named, ordinary_named = naming(batch_db), naming(ordinary_db)
        assert [tuple(map(batch_named, a)) for a in batch_answers] == [
            tuple(map(ordinary_named, a)) for a in ordinary_answers
        ]
        assert ledger_rows(batch_db) == ledger_rows(ordinary_db)
    finally:
        batch_db.dispose()
        ordinary_db.dispose()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_sqlite_writes_the_rows_and_answers_postgres_writes(
    case: Case, pg_url: str, sqlite_url: str
) -> None:
    # The ledger's Postgres statement and its SQLite steps are the two homes of each write.
    sent = set_up(pg_url, case.setup, case.name)
    assert set_up(sqlite_url, case.setup, case.name) == sent
    postgres, sqlite = Database(pg_url), Database(sqlite_url)
    try:
        postgres_answers, _ = play(postgres, sent, case.notify, None)
        sqlite_answers, _ = play(sqlite, sent, case.notify, None)

        postgres_named, sqlite_named = naming(postgres), naming(sqlite)
        assert [tuple(map(postgres_named, a)) for a in postgres_answers] == [
            tuple(map(sqlite_named, a)) for a in sqlite_answers
        ]
        assert ledger_rows(postgres) == ledger_rows(sqlite)
    finally:
        postgres.dispose()
        sqlite.dispose()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_batch_settles_the_common_case_itself_and_falls_back_having_written_nothing(
    case: Case, pg_url: str
) -> None:
    sent = set_up(pg_url, case.setup, case.name)
    db = Database(pg_url)
    written_on_fallback: list[str] = []

    def fast_first(fast: Callable[[Callback, NotifyTarget], CallbackResult | None]) -> Any:
        def first(callback: Callback) -> CallbackResult | None:
            before = ledger_rows(db)
            result = fast(callback, case.notify)
            if result is None and ledger_rows(db) != before:
                written_on_fallback.append(callback.dedupe_key)
            return result

        return first

    try:
        with batch_runner(pg_url) as batch:
            _, settled_first = play(db, sent, case.notify, fast_first(batch))

        assert tuple(settled_first) == case.fast
        assert written_on_fallback == []
    finally:
        db.dispose()


# --- Copies racing ----------------------------------------------------------------------------

COPIES = 8


async def _race(url: str, callback: Callback) -> list[CallbackResult | None]:
    pool = await create_pool(url, min_size=COPIES, max_size=COPIES)
    try:
        return list(await asyncio.gather(*[settle_one(pool, callback, LOG) for _ in range(COPIES)]))
    finally:
        await pool.close()


def test_copies_racing_through_the_fast_path_settle_once_and_the_rest_answer_duplicate(
    db: Database, pg_url: str
) -> None:
    payment = pending(db)

    results = asyncio.run(_race(pg_url, Sent(ours(payment)).parsed()))

    answers = sorted(
        (r.answer.value, r.payment_id) if r is not None else ("fallback", None) for r in results
    )
    assert answers == [("duplicate", payment.id)] * (COPIES - 1) + [("processed", payment.id)]
    rows = ledger_rows(db)
    assert len(rows["notifications"]) == 1
    assert [e[1] for e in rows["order_events"]].count("payment_succeeded") == 1


# --- The migrations ---------------------------------------------------------------------------

OLD_FUNCTIONS = (
    "orderpay_settle_callback(text, text, text, uuid, uuid, text, text, numeric, text, text, "
    "text, text, timestamptz, text[], text[], integer[])",
    "orderpay_settle_callbacks(text[], text[], text[], uuid[], uuid[], text[], text[], "
    "numeric[], text[], text[], text, text, timestamptz, text[], text[], integer[])",
)


def functions(db: Database) -> list[str]:
    with db.transaction() as conn:
        return list(
            conn.execute(
                text("SELECT proname FROM pg_proc WHERE proname LIKE 'orderpay%' ORDER BY 1")
            ).scalars()
        )


def test_0007_drops_the_functions_that_earlier_runs_of_0005_and_0006_made(
    scratch_pg_url: str,
) -> None:
    db = Database(scratch_pg_url)
    downgrade(db, "0006_callbacks_in_batches")
    with db.transaction() as conn:  # what those revisions used to create
        for signature in OLD_FUNCTIONS:
            conn.execute(text(f"CREATE FUNCTION {signature} RETURNS void LANGUAGE sql AS ''"))
    assert len(functions(db)) == 2

    upgrade(db)

    assert functions(db) == []
    db.dispose()


def test_on_sqlite_0005_to_0007_change_no_table(sqlite_db: Database) -> None:
    downgrade(sqlite_db, "0004_refunds_review")
    with sqlite_db.transaction() as conn:
        before = conn.exec_driver_sql("SELECT sql FROM sqlite_master ORDER BY name").all()

    upgrade(sqlite_db, "0007_no_database_functions")

    with sqlite_db.transaction() as conn:
        assert conn.exec_driver_sql("SELECT sql FROM sqlite_master ORDER BY name").all() == before
