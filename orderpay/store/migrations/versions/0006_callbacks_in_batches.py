"""Signed callbacks settled in batches: one statement for many callbacks (issue 12).

`orderpay_settle_callbacks(...)` replaces 0005's `orderpay_settle_callback`: the same rules,
the same rows with the same texts, but for a batch of callbacks at a time, set-based. Measured
with pgbench on the service's own SQL (64 clients, 2 cores, alternating runs): the per-callback
function took 1,430-1,625 µs of server CPU per callback, and eight of its calls in one
transaction barely less; one set-based statement for 8 callbacks took 890-930 µs, for 16
760-860 µs. Postgres pays executor start-up, PL/pgSQL and SPI overhead, the plan checks and
the commit once per statement, and those were most of a callback's cost. The listener's
worker sends whatever callbacks arrived while its previous batches were in flight
(payments/fast_callbacks.py CallbackBatcher), so a lone callback is still a batch of one, sent
at once.

Per batch (arrays, one element per callback; the caller's rules passed in as in 0005: the
signing providers, the currencies' exponents, the clock, the recipient):

1. resolve, without locks: a copy of a recorded event is answered `duplicate` (with its
   payment), a copy of an `unmatched` one `fallback`; otherwise the payment is found as
   callbacks._locate finds it: by our payment id, else among the order's payments by our
   reference, the sender's transaction id, or as its pending payment. Index lookups only
   (primary key; order id), whatever the table's size. Not found, or another order's
   payment: `fallback`. A callback whose event key, order or payment is also an earlier
   element's in the same batch: `fallback` (the batch decides each payment once);
2. lock the payments found with their orders, order first, in ascending order id: every batch
   locks in one order, so two batches never deadlock each other, and one order's lock then
   its payment's is store/locks.py's order. The rows are read as they are once locked;
3. only the common case goes on (settlement.classify: APPLIED; a signing provider; an open
   payment; for a success an order still `pending`; the payment's amount and currency or
   none). For the others a second look at the inbox (a copy that committed while this batch
   waited for the lock is a `duplicate`, as inbox.receive would find it), else `fallback`;
4. the inbox rows (`processed`) are inserted; a copy recorded meanwhile by the ordinary path
   (which records first, then locks) makes the insert do nothing for that callback, which is
   then answered from the stored row. Only the callbacks whose row went in go on;
5. what ledger.succeed / ledger.fail write, set-based: the payments, the orders, the outbox
   rows, the order events, each callback's rows in the order and with the texts the ordinary
   path writes them, callbacks in batch order.

The function plans its statements generically, once per session (plan_cache_mode): with
custom plans, which PL/pgSQL keeps choosing here because a generic plan's estimate for an
array of unknown length is dearer, every statement was planned on every call, and a batch of
one cost 3.1 ms of server time instead of 1.6 (pgbench, 4 clients). A batch of one still costs
more than 0005's one-callback function did (1.1-1.4 ms): a lone callback arrives when the
database has time to spare, and under load the batches grow.

It decides before it writes, so `fallback` means nothing was written for that callback. An
error (a sender's transaction id another payment holds, say) rolls back the whole statement:
the caller then runs each of the batch's callbacks through the ordinary path.

On SQLite this migration does nothing.

Revision ID: 0006_callbacks_in_batches
Revises: 0005_callback_in_one_trip
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

from alembic import op

revision = "0006_callbacks_in_batches"
down_revision = "0005_callback_in_one_trip"
branch_labels = None
depends_on = None

SIGNATURE = (
    "p_source text[], p_dedupe_key text[], p_payload text[], p_order_id uuid[], "
    "p_payment_id uuid[], p_reference text[], p_status text[], p_amount numeric[], "
    "p_currency text[], p_reason text[], p_channel text, p_recipient text, p_now timestamptz, "
    "p_signing text[], p_currencies text[], p_exponents integer[]"
)

FUNCTION = f"""
CREATE OR REPLACE FUNCTION orderpay_settle_callbacks({SIGNATURE})
RETURNS TABLE (r_position integer, r_outcome text, r_payment uuid)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $function$
#variable_conflict use_column
DECLARE
    v_count integer := coalesce(cardinality(p_dedupe_key), 0);
    v_outcome text[] := array_fill('fallback'::text, ARRAY[v_count]);
    v_payment uuid[] := array_fill(NULL::uuid, ARRAY[v_count]);
    -- 1. resolved, not yet locked
    c_k integer[];
    c_payment uuid[];
    -- answered from the inbox
    s_k integer[];
    s_outcome text[];
    s_payment uuid[];
    -- 3. locked and in the common case, in lock order
    d_k integer[];
    d_payment uuid[];
    d_order uuid[];
    d_amount bigint[];
    d_currency text[];
    d_exponent integer[];
    d_phone text[];
    d_transaction text[];
    -- a second look at the inbox: locked but not the common case, or their row did not go in
    r_k integer[];
    -- 4. recorded in the inbox by this batch
    w_k integer[];
    -- 5. queued notifications
    n_payment uuid[];
    n_id bigint[];
    v_k integer;
    v_i integer;
    v_seen text;
    v_seen_payment uuid;
BEGIN
    IF v_count = 0 THEN
        RETURN;
    END IF;

    -- 1. Resolve, without locks.
    SELECT array_agg(x.k ORDER BY x.k) FILTER (WHERE x.seen IS NOT NULL),
           array_agg(x.seen ORDER BY x.k) FILTER (WHERE x.seen IS NOT NULL),
           array_agg(x.seen_payment ORDER BY x.k) FILTER (WHERE x.seen IS NOT NULL),
           array_agg(x.k ORDER BY x.k) FILTER (
               WHERE x.seen IS NULL AND x.found IS NOT NULL AND x.found_order = x.order_id
                 AND x.key_rank = 1 AND x.order_rank = 1),
           array_agg(x.found ORDER BY x.k) FILTER (
               WHERE x.seen IS NULL AND x.found IS NOT NULL AND x.found_order = x.order_id
                 AND x.key_rank = 1 AND x.order_rank = 1)
    INTO s_k, s_outcome, s_payment, c_k, c_payment
    FROM (
        SELECT i.k, i.order_id, w.outcome AS seen, w.payment_id AS seen_payment,
               found.id AS found, found.order_id AS found_order,
               row_number() OVER (PARTITION BY i.source, i.dedupe_key ORDER BY i.k) AS key_rank,
               row_number() OVER (PARTITION BY i.order_id ORDER BY i.k) AS order_rank
        FROM unnest(p_source, p_dedupe_key, p_order_id, p_payment_id, p_reference)
             WITH ORDINALITY AS i (source, dedupe_key, order_id, payment_id, reference, k)
        LEFT JOIN webhook_events w ON w.source = i.source AND w.dedupe_key = i.dedupe_key
        LEFT JOIN LATERAL (
            SELECT c.id, c.order_id FROM (
                SELECT payments.id, payments.order_id, 0 AS rank
                FROM payments WHERE payments.id = i.payment_id
                UNION ALL
                SELECT payments.id, payments.order_id,
                       CASE WHEN payments.provider_reference = i.reference THEN 1
                            WHEN payments.provider_transaction_id = i.reference THEN 2
                            ELSE 3 END
                FROM payments
                WHERE payments.order_id = i.order_id
                  AND (payments.provider_reference = i.reference
                       OR payments.provider_transaction_id = i.reference
                       OR payments.status = 'pending')
            ) AS c
            ORDER BY c.rank
            LIMIT 1
        ) AS found ON true
    ) AS x;

    IF s_k IS NOT NULL THEN
        FOR v_i IN 1 .. cardinality(s_k) LOOP
            IF s_outcome[v_i] <> 'unmatched' THEN
                v_outcome[s_k[v_i]] := 'duplicate';
                v_payment[s_k[v_i]] := s_payment[v_i];
            END IF;
        END LOOP;
    END IF;
    IF c_k IS NULL THEN
        RETURN QUERY SELECT o.k::integer, o.outcome, o.payment
            FROM unnest(v_outcome, v_payment) WITH ORDINALITY AS o (outcome, payment, k);
        RETURN;
    END IF;

    -- 2. and 3. Lock, order first, in ascending order id; decide on the rows as locked.
    SELECT array_agg(y.k ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.id ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.order_id ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.amount ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.currency ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.exponent ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.phone ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.transaction_id ORDER BY y.order_id) FILTER (WHERE y.common),
           array_agg(y.k ORDER BY y.order_id) FILTER (WHERE NOT y.common)
    INTO d_k, d_payment, d_order, d_amount, d_currency, d_exponent, d_phone, d_transaction, r_k
    FROM (
        SELECT l.k, l.id, l.order_id, l.amount, l.currency, l.exponent, l.phone,
               CASE WHEN p_reference[l.k] = l.id::text OR p_reference[l.k] = l.reference
                    THEN NULL ELSE p_reference[l.k] END AS transaction_id,
               coalesce(
                   l.provider = ANY (p_signing)
                   AND l.status IN ('initiated', 'pending')
                   AND p_status[l.k] IN ('succeeded', 'failed')
                   AND (p_status[l.k] <> 'succeeded' OR l.order_status = 'pending')
                   AND (p_currency[l.k] IS NULL OR p_currency[l.k] = l.currency)
                   AND l.exponent IS NOT NULL
                   AND (p_amount[l.k] IS NULL
                        OR p_amount[l.k] * 10::numeric ^ l.exponent = l.amount),
                   false) AS common
        FROM (
            SELECT c.k, payments.id, payments.order_id, payments.amount, payments.currency,
                   payments.provider, payments.provider_reference AS reference,
                   payments.status, orders.status AS order_status, customers.phone,
                   p_exponents[array_position(p_currencies, payments.currency::text)]
                       AS exponent
            FROM unnest(c_k, c_payment) AS c (k, payment_id)
            JOIN payments ON payments.id = c.payment_id
            JOIN orders ON orders.id = payments.order_id
            JOIN customers ON customers.id = orders.customer_id
            ORDER BY orders.id
            FOR UPDATE OF orders, payments
        ) AS l
    ) AS y;

    IF d_k IS NOT NULL THEN
        -- 4. The inbox rows; a copy recorded since by the ordinary path keeps its own.
        WITH recorded AS (
            INSERT INTO webhook_events (source, dedupe_key, payload, received_at, outcome,
                                        order_id, payment_id)
            SELECT p_source[d.k], p_dedupe_key[d.k], p_payload[d.k], p_now, 'processed',
                   d.order_id, d.payment_id
            FROM unnest(d_k, d_order, d_payment) AS d (k, order_id, payment_id)
            ORDER BY d.k
            ON CONFLICT (source, dedupe_key) DO NOTHING
            RETURNING source, dedupe_key
        )
        SELECT array_agg(d.k) INTO w_k
        FROM unnest(d_k) AS d (k)
        JOIN recorded ON recorded.source = p_source[d.k]
                     AND recorded.dedupe_key = p_dedupe_key[d.k];

        r_k := coalesce(r_k, ARRAY[]::integer[]) || ARRAY(
            SELECT d.k FROM unnest(d_k) AS d (k) WHERE w_k IS NULL OR NOT d.k = ANY (w_k));
    END IF;

    -- A second look at the inbox for the callbacks locked but not settled here, and those whose
    -- row did not go in: a copy that committed meanwhile (it settled the payment, or recorded
    -- the event first) makes them a `duplicate`.
    IF cardinality(r_k) > 0 THEN
        FOR v_k, v_seen, v_seen_payment IN
            SELECT r.k, w.outcome, w.payment_id
            FROM unnest(r_k) AS r (k)
            JOIN webhook_events w
              ON w.source = p_source[r.k] AND w.dedupe_key = p_dedupe_key[r.k]
        LOOP
            IF v_seen <> 'unmatched' THEN
                v_outcome[v_k] := 'duplicate';
                v_payment[v_k] := v_seen_payment;
            END IF;
        END LOOP;
    END IF;

    IF w_k IS NOT NULL THEN
        -- 5. What ledger.succeed / ledger.fail write, for the callbacks recorded above.
        UPDATE payments
        SET status = p_status[d.k],
            failure_reason = CASE WHEN p_status[d.k] = 'failed' THEN p_reason[d.k] END,
            awaiting_confirmation = false,
            provider_transaction_id = coalesce(payments.provider_transaction_id,
                                               d.transaction_id),
            lease_expires_at = NULL, updated_at = p_now
        FROM unnest(d_k, d_payment, d_transaction) AS d (k, payment_id, transaction_id)
        WHERE payments.id = d.payment_id AND d.k = ANY (w_k);

        UPDATE orders SET status = 'paid', updated_at = p_now
        FROM unnest(d_k, d_order) AS d (k, order_id)
        WHERE orders.id = d.order_id AND d.k = ANY (w_k)
          AND p_status[d.k] = 'succeeded' AND orders.status = 'pending';

        WITH queued AS (
            INSERT INTO notifications (order_id, payment_id, kind, channel, recipient, body,
                                       status, attempts, due_at, created_at, updated_at)
            SELECT d.order_id, d.payment_id, 'payment_received', p_channel,
                   coalesce(p_recipient, d.phone), '', 'pending', 0, p_now, p_now, p_now
            FROM unnest(d_k, d_order, d_payment, d_phone) AS d (k, order_id, payment_id, phone)
            WHERE d.k = ANY (w_k) AND p_status[d.k] = 'succeeded'
            ORDER BY d.k
            ON CONFLICT (payment_id, kind) WHERE refund_id IS NULL DO NOTHING
            RETURNING id, payment_id
        )
        SELECT array_agg(queued.payment_id), array_agg(queued.id) INTO n_payment, n_id
        FROM queued;

        INSERT INTO order_events (order_id, at, event, detail)
        SELECT d.order_id, p_now, e.event, e.detail
        FROM unnest(d_k, d_order, d_payment, d_amount, d_currency, d_exponent)
             AS d (k, order_id, payment_id, amount, currency, exponent)
        LEFT JOIN unnest(n_payment, n_id) AS n (payment_id, id) ON n.payment_id = d.payment_id
        CROSS JOIN LATERAL (VALUES
            (1, CASE WHEN p_status[d.k] = 'succeeded' THEN 'payment_succeeded'
                     ELSE 'payment_failed' END,
             CASE WHEN p_status[d.k] = 'succeeded' THEN
                 'payment ' || d.payment_id || ' of '
                 || round(d.amount / 10::numeric ^ d.exponent, d.exponent) || ' '
                 || d.currency || ' succeeded (' || p_source[d.k] || ' callback)'
             ELSE
                 'payment ' || d.payment_id || ' failed (' || p_source[d.k] || ' callback): '
                 || coalesce(nullif(p_reason[d.k], ''), 'no reason given')
             END),
            (2, 'order_paid',
             CASE WHEN p_status[d.k] = 'succeeded' THEN 'paid by payment ' || d.payment_id
             END),
            (3, 'notification_queued',
             CASE WHEN n.id IS NOT NULL THEN 'notification ' || n.id || ' via ' || p_channel
             END)
        ) AS e (step, event, detail)
        WHERE d.k = ANY (w_k) AND e.detail IS NOT NULL  -- a failure writes one row
        ORDER BY d.k, e.step;

        FOR v_i IN 1 .. cardinality(d_k) LOOP
            IF d_k[v_i] = ANY (w_k) THEN
                v_outcome[d_k[v_i]] := 'processed';
                v_payment[d_k[v_i]] := d_payment[v_i];
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY SELECT o.k::integer, o.outcome, o.payment
        FROM unnest(v_outcome, v_payment) WITH ORDINALITY AS o (outcome, payment, k);
END
$function$
"""


def _previous() -> Any:
    """0005's migration module: its function's text and signature are kept there only."""
    script = op.get_context().script
    assert script is not None
    revision = script.get_revision(down_revision)
    assert revision is not None
    return revision.module


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: the route keeps the ordinary path
    op.execute(FUNCTION)
    op.execute(f"DROP FUNCTION IF EXISTS orderpay_settle_callback({_previous().SIGNATURE})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_previous().FUNCTION)
    op.execute(f"DROP FUNCTION IF EXISTS orderpay_settle_callbacks({SIGNATURE})")
