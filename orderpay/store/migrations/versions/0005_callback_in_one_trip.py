"""A signed callback's common case settled in one round trip (issue 12): a database function.

`orderpay_settle_callback(...)` is called by the callback route on Postgres, in autocommit, as
one statement (store/ledger.py builds the call, payments/fast_callbacks.py makes it). It does
what payments.callbacks.apply_callback does for the common case, writing the same rows with
the same texts in the same order:

1. a copy of a recorded event is answered `duplicate` (with the payment it was about), without
   a lock and without a write, as inbox.receive does; a copy of an event kept `unmatched` is
   answered `fallback`;
2. the payment is found and locked with its order (FOR UPDATE OF orders, payments: the order's
   row first), as callbacks._locate and store/locks.py do: by our payment id, else among the
   order's payments by our reference, the sender's transaction id, or as its pending payment.
   Each lookup is an index lookup: the primary key, or the order's key then payments by
   order_id, whatever the table's size;
3. only the common case goes on: a payment of a signing provider, open (`initiated` or
   `pending`), for a success an order still `pending`, the reported amount and currency the
   payment's or absent. It records the inbox event (`processed`), moves the payment (and, on
   success, the order), writes the outbox row and the order events, and answers `processed`;
4. anything else (no payment, another order's payment, a hint, a repeated or conflicting
   outcome, a mismatch) is answered `fallback` having written nothing: the caller runs
   apply_callback in an ordinary transaction, which decides it.

It decides before it writes, so `fallback` needs no rollback (no subtransaction, no error in
the server's log). The inbox row is inserted last, with its final outcome; if a copy was
recorded since step 1 the insert does nothing, and the answer is read from the stored row.
A copy that waited for the order's lock while another settled the payment finds the event
recorded and answers `duplicate` too. The one order it takes locks in that the ordinary path
does not (the order, then the event's key; apply_callback takes the key first) only meets
itself in a copy of the same event going through both paths at the same moment: Postgres
then breaks the deadlock, the fast path's side answers `fallback` (fast_callbacks.py) and
the ordinary path finds the copy.

Parameters the Python code owns are passed in, so the rules stay in one place: the signing
providers (callbacks.SIGNING_PROVIDERS), the currencies' exponents (domain.money), the clock
(clock.utcnow, as every other write uses) and the recipient when it is not the customer's
phone (NotifyTarget.recipient_for). On SQLite this migration does nothing: the route keeps
the ordinary path there.

Revision ID: 0005_callback_in_one_trip
Revises: 0004_refunds_review
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005_callback_in_one_trip"
down_revision = "0004_refunds_review"
branch_labels = None
depends_on = None

SIGNATURE = (
    "p_source text, p_dedupe_key text, p_payload text, p_order_id uuid, p_payment_id uuid, "
    "p_reference text, p_status text, p_amount numeric, p_currency text, p_reason text, "
    "p_channel text, p_recipient text, p_now timestamptz, p_signing text[], "
    "p_currencies text[], p_exponents integer[]"
)

FUNCTION = f"""
CREATE OR REPLACE FUNCTION orderpay_settle_callback(
    {SIGNATURE},
    OUT r_outcome text, OUT r_payment uuid, OUT r_notification bigint, OUT r_event bigint
) LANGUAGE plpgsql VOLATILE AS $function$
#variable_conflict use_column
DECLARE
    v_found boolean := false;
    v_seen_outcome text;
    v_seen_payment uuid;
    v_id uuid;
    v_order uuid;
    v_amount bigint;
    v_currency text;
    v_provider text;
    v_reference text;
    v_status text;
    v_order_status text;
    v_phone text;
    v_exponent integer;
    v_transaction text;
    v_source text := p_source || ' callback';
BEGIN
    -- 1. A copy of a recorded event (inbox.receive): no lock, no write.
    SELECT outcome, payment_id INTO v_seen_outcome, v_seen_payment
    FROM webhook_events WHERE source = p_source AND dedupe_key = p_dedupe_key;
    IF FOUND THEN
        IF v_seen_outcome = 'unmatched' THEN
            r_outcome := 'fallback';  -- taken up again by the ordinary path
        ELSE
            r_outcome := 'duplicate';
            r_payment := v_seen_payment;
        END IF;
        RETURN;
    END IF;

    -- 2. The payment, locked with its order, order first (callbacks._locate, store/locks.py).
    IF p_payment_id IS NOT NULL THEN
        SELECT payments.id, payments.order_id, payments.amount, payments.currency,
               payments.provider, payments.provider_reference, payments.status, orders.status,
               customers.phone
        INTO v_id, v_order, v_amount, v_currency, v_provider, v_reference, v_status,
             v_order_status, v_phone
        FROM orders JOIN payments ON payments.order_id = orders.id
        JOIN customers ON customers.id = orders.customer_id
        WHERE payments.id = p_payment_id
        FOR UPDATE OF orders, payments;
        v_found := FOUND;
    END IF;
    IF NOT v_found THEN
        SELECT payments.id, payments.order_id, payments.amount, payments.currency,
               payments.provider, payments.provider_reference, payments.status, orders.status,
               customers.phone
        INTO v_id, v_order, v_amount, v_currency, v_provider, v_reference, v_status,
             v_order_status, v_phone
        FROM orders JOIN payments ON payments.order_id = orders.id
        JOIN customers ON customers.id = orders.customer_id
        WHERE orders.id = p_order_id
          AND (payments.provider_reference = p_reference
               OR payments.provider_transaction_id = p_reference
               OR payments.status = 'pending')
        ORDER BY CASE WHEN payments.provider_reference = p_reference THEN 0
                      WHEN payments.provider_transaction_id = p_reference THEN 1
                      ELSE 2 END
        LIMIT 1
        FOR UPDATE OF orders, payments;
        v_found := FOUND;
    END IF;

    -- 3. Only the common case goes on (settlement.classify: APPLIED; a signing provider).
    -- Not found: unmatched, or an unknown order. Another order's payment: refused there.
    v_exponent := p_exponents[array_position(p_currencies, v_currency)];
    IF NOT v_found
       OR v_order <> p_order_id
       OR NOT (v_provider = ANY (p_signing))
       OR v_status NOT IN ('initiated', 'pending')
       OR p_status NOT IN ('succeeded', 'failed')
       OR (p_status = 'succeeded' AND v_order_status <> 'pending')
       OR (p_currency IS NOT NULL AND p_currency <> v_currency)
       OR v_exponent IS NULL
       OR (p_amount IS NOT NULL AND p_amount * 10::numeric ^ v_exponent <> v_amount) THEN
        -- A copy that committed while this one waited for the order's lock (it settled the
        -- payment) is a duplicate, as the ordinary path's inbox.receive would find it.
        SELECT outcome, payment_id INTO v_seen_outcome, v_seen_payment
        FROM webhook_events WHERE source = p_source AND dedupe_key = p_dedupe_key;
        IF FOUND AND v_seen_outcome <> 'unmatched' THEN
            r_outcome := 'duplicate';
            r_payment := v_seen_payment;
        ELSE
            r_outcome := 'fallback';
        END IF;
        RETURN;
    END IF;
    -- The sender's own id of the money movement is kept; our reference or id is not one.
    IF p_reference = v_id::text OR p_reference = v_reference THEN
        v_transaction := NULL;
    ELSE
        v_transaction := p_reference;
    END IF;

    INSERT INTO webhook_events (source, dedupe_key, payload, received_at, outcome, order_id,
                                payment_id)
    VALUES (p_source, p_dedupe_key, p_payload, p_now, 'processed', v_order, v_id)
    ON CONFLICT (source, dedupe_key) DO NOTHING
    RETURNING id INTO r_event;
    IF r_event IS NULL THEN
        -- A copy recorded since by the ordinary path (which records first, then locks):
        -- nothing is written here; answer as a copy.
        SELECT outcome, payment_id INTO v_seen_outcome, v_seen_payment
        FROM webhook_events WHERE source = p_source AND dedupe_key = p_dedupe_key;
        IF FOUND AND v_seen_outcome <> 'unmatched' THEN
            r_outcome := 'duplicate';
            r_payment := v_seen_payment;
        ELSE
            r_outcome := 'fallback';
        END IF;
        RETURN;
    END IF;

    -- 4. What ledger.succeed / ledger.fail write, in the same order with the same texts.
    IF p_status = 'succeeded' THEN
        UPDATE payments SET status = 'succeeded', failure_reason = NULL,
               awaiting_confirmation = false,
               provider_transaction_id = coalesce(provider_transaction_id, v_transaction),
               lease_expires_at = NULL, updated_at = p_now
        WHERE id = v_id;
        UPDATE orders SET status = 'paid', updated_at = p_now
        WHERE id = v_order AND status = 'pending';
        INSERT INTO notifications (order_id, payment_id, kind, channel, recipient, body, status,
                                   attempts, due_at, created_at, updated_at)
        VALUES (v_order, v_id, 'payment_received', p_channel, coalesce(p_recipient, v_phone),
                '', 'pending', 0, p_now, p_now, p_now)
        ON CONFLICT (payment_id, kind) WHERE refund_id IS NULL DO NOTHING
        RETURNING id INTO r_notification;
        INSERT INTO order_events (order_id, at, event, detail)
        SELECT v_order, p_now, e.event, e.detail
        FROM (VALUES
            (1, 'payment_succeeded',
             'payment ' || v_id || ' of '
             || round(v_amount / 10::numeric ^ v_exponent, v_exponent) || ' ' || v_currency
             || ' succeeded (' || v_source || ')'),
            (2, 'order_paid', 'paid by payment ' || v_id),
            (3, 'notification_queued',
             'notification ' || r_notification || ' via ' || p_channel)
        ) AS e (k, event, detail)
        WHERE e.detail IS NOT NULL  -- no notification_queued row when none was queued
        ORDER BY e.k;
    ELSE
        UPDATE payments SET status = 'failed', failure_reason = p_reason,
               awaiting_confirmation = false,
               provider_transaction_id = coalesce(provider_transaction_id, v_transaction),
               lease_expires_at = NULL, updated_at = p_now
        WHERE id = v_id;
        INSERT INTO order_events (order_id, at, event, detail)
        VALUES (v_order, p_now, 'payment_failed',
                'payment ' || v_id || ' failed (' || v_source || '): '
                || coalesce(nullif(p_reason, ''), 'no reason given'));
    END IF;
    r_outcome := 'processed';
    r_payment := v_id;
END
$function$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: the route keeps the ordinary path
    op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS orderpay_settle_callback({SIGNATURE})")
