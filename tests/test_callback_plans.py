"""Every lookup on the callback path is an index lookup, so a callback costs the same at any
table size: with many payments, neither the ordinary path's locking statements
(store/locks.py) nor a batch's statements (payments/callback_batches.py) read a table whole,
whether the callback names our reference or the sender's own id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from orderpay.payments.callback_batches import settle_batch
from orderpay.payments.callbacks import Answer, parse_callback
from orderpay.store.async_db import create_pool
from orderpay.store.db import Database
from orderpay.store.locks import _LOCK_BY_ID, _LOCK_NAMED
from orderpay.store.notifications import NotifyTarget

PAYMENTS = 20_000
SETTLED = PAYMENTS // 2  # payments 1..SETTLED succeeded, with a sender's transaction id


def payment_id(n: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"p{n}".encode()).hexdigest())


def order_id(n: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"o{n}".encode()).hexdigest())


def sender_id(n: int) -> str:
    return f"MP{n:08d}.SENDER"


# Per n a customer, an order and its simulator payment (ids derived from n, as in
# bench/webhooks.py): the first half succeeded with the sender's transaction id, each with its
# recorded callback; the rest pending with our reference.
CROWD = [
    "INSERT INTO customers (id, name, phone, created_at)"
    " SELECT n, 'Ama ' || n, '+2332' || lpad(n::text, 8, '0'), now()"
    " FROM generate_series(1, :payments) AS n",
    "INSERT INTO orders (id, customer_id, status, currency, total, created_at, updated_at)"
    " SELECT md5('o' || n)::uuid, n, CASE WHEN n <= :settled THEN 'paid' ELSE 'pending' END,"
    " 'GHS', 2500, now(), now() FROM generate_series(1, :payments) AS n",
    "INSERT INTO payments (id, order_id, idempotency_key, fingerprint, amount, currency,"
    " payer_phone, provider, provider_reference, provider_transaction_id, status,"
    " awaiting_confirmation, created_at, updated_at)"
    " SELECT md5('p' || n)::uuid, md5('o' || n)::uuid, 'key-' || n, md5('f' || n), 2500, 'GHS',"
    " '+2332' || lpad(n::text, 8, '0'), 'simulator', md5('p' || n)::uuid::text,"
    " CASE WHEN n <= :settled THEN 'MP' || lpad(n::text, 8, '0') || '.SENDER' END,"
    " CASE WHEN n <= :settled THEN 'succeeded' ELSE 'pending' END, false, now(), now()"
    " FROM generate_series(1, :payments) AS n",
    "INSERT INTO webhook_events (source, dedupe_key, payload, received_at, outcome, order_id,"
    " payment_id)"
    " SELECT 'momo', 'MP' || lpad(n::text, 8, '0') || '.SENDER:succeeded', '{}', now(),"
    " 'processed', md5('o' || n)::uuid, md5('p' || n)::uuid"
    " FROM generate_series(1, :settled) AS n",
]


@pytest.fixture(scope="module")
def crowded(shared_url: str) -> str:
    db = Database(shared_url)
    try:
        with db.transaction() as conn:
            for statement in CROWD:
                conn.execute(text(statement), {"payments": PAYMENTS, "settled": SETTLED})
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        db.dispose()
    return shared_url


@pytest.fixture
def crowded_db(crowded: str) -> Iterator[Database]:
    db = Database(crowded)
    yield db
    db.dispose()


def plan(db: Database, statement: Any, params: dict[str, Any]) -> str:
    """EXPLAIN of a statement as the ordinary path sends it (psycopg2: values inline)."""
    with db.transaction() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        values = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in params.items()}
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.construct_params(values))
        return "\n".join(row[0] for row in rows)


def assert_index_lookup(explained: str) -> None:
    assert "Seq Scan" not in explained, explained
    assert "Index Scan using pk_payments on payments" in explained or (
        "Index Scan using ix_payments_order_id on payments" in explained
    ), explained


N = PAYMENTS - 7  # a pending payment


@pytest.mark.parametrize(
    ("reference", "n"),
    [
        pytest.param(str(payment_id(N)), N, id="our reference"),
        pytest.param(sender_id(123), 123, id="the sender's transaction id, known"),
        pytest.param(sender_id(N), N, id="the sender's transaction id, new"),
    ],
)
@pytest.mark.slow
def test_locking_the_payment_a_reference_names_is_an_index_lookup(
    reference: str, n: int, crowded_db: Database
) -> None:
    ours = payment_id(n) if reference == str(payment_id(n)) else None
    params = {"b_order": order_id(n), "b_payment": ours, "b_reference": reference}

    assert_index_lookup(plan(crowded_db, _LOCK_NAMED, params))


def test_locking_the_payment_by_our_payment_id_is_an_index_lookup(crowded_db: Database) -> None:
    assert_index_lookup(plan(crowded_db, _LOCK_BY_ID, {"b_payment": payment_id(N)}))


def callback(reference: str, n: int, status: str = "success") -> Any:
    document = {
        "provider_reference": reference,
        "order_id": str(order_id(n)),
        "status": status,
        "amount": "25.00",
        "currency": "GHS",
    }
    return parse_callback(json.dumps(document).encode())


# Our reference and a sender's id on pending payments (settled), a copy of one of them
# (duplicate), a failure under the sender's id of a succeeded payment and a callback about an
# unknown order (both falling back): enough batches for the statements' plans to settle.
CALLS = [
    *[callback(str(payment_id(n)), n) for n in range(SETTLED + 1, SETTLED + 5)],
    *[callback(sender_id(n), n) for n in range(SETTLED + 5, SETTLED + 9)],
    callback(str(payment_id(SETTLED + 1)), SETTLED + 1),
    callback(sender_id(42), 42, "failed"),
    callback(sender_id(PAYMENTS + 1), PAYMENTS + 1),
]


class InTransaction:
    """A pool's `fetch` on one connection inside a transaction (rolled back afterwards)."""

    def __init__(self, conn: Any) -> None:
        self.fetch = conn.fetch


async def tables_scanned_whole(url: str) -> dict[str, int]:
    """Sequential scans per table while batches settle CALLS in one transaction (rolled
    back): four batches of one, then one batch of the rest."""
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                answers = [
                    None if result is None else result.answer
                    for batch in [*([c] for c in CALLS[:4]), CALLS[4:]]
                    for result in await settle_batch(InTransaction(conn), batch, LOG)
                ]
                assert answers == [Answer.PROCESSED] * 8 + [Answer.DUPLICATE, None, None]
                rows = await conn.fetch(
                    "SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE seq_scan > 0"
                )
            finally:
                await transaction.rollback()
    finally:
        await pool.close()
    return {row["relname"]: row["seq_scan"] for row in rows}


LOG = NotifyTarget("log")


def test_a_batch_reads_no_table_whole(crowded: str) -> None:
    assert asyncio.run(tables_scanned_whole(crowded)) == {}
