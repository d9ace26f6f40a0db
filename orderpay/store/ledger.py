"""The ledger of payments: the one module that writes payments (DESIGN.md section 1); an
order's own writes are store/orders.py's, which settling a payment composes with its own.

Every transition of a payment is written here, once: each is a compare-and-set (`WHERE status
= :expected`) or runs under the row locks of store/locks.py (order first, then payment), and
writes its order event. Postgres and SQLite differ inside the functions only.

On Postgres a write and its order events go in one statement (data-modifying CTEs): round
trips are most of what a charge or a callback costs. Settling a payment is one statement for
any number of payments (`settling_statement`), which the listener's batches of callbacks
send as they are; on SQLite it is the same writes as steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.domain.states import PaymentStatus, payment_can_move
from orderpay.errors import ConcurrentUpdate
from orderpay.store import moves, order_events, outbox, webhook_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.moves import PaymentMove
from orderpay.store.notifications import NotifyTarget
from orderpay.store.orders import mark_paid, paid_from
from orderpay.store.payments import CLAIMED_COLUMNS, COLUMNS, Payment, from_row
from orderpay.store.schema import UTCDateTime, orders, payments

_INITIATED = PaymentStatus.INITIATED.value
_SUCCEEDED = PaymentStatus.SUCCEEDED.value
PROCESSED = "processed"  # a callback's outcome once its move is written


# --- Charges: claim, lease, answer ------------------------------------------------------------

# No conflict target: a second use of the key and a second live payment of the order are both
# conflicts, told apart afterwards.
_INSERT_PAYMENT = InsertIgnoring(payments, None, *COLUMNS)
_INSERT_PAYMENT_WITH_EVENT = order_events.with_event(
    postgresql.insert(payments)
    .values({name: bindparam(f"p_{name}", type_=payments.c[name].type) for name in CLAIMED_COLUMNS})
    .on_conflict_do_nothing()
    .returning(*COLUMNS)
)
_TAKE_LEASE = (
    update(payments)
    .where(
        payments.c.id == bindparam("b_id"),
        payments.c.status == _INITIATED,
        payments.c.lease_expires_at.is_(None) | (payments.c.lease_expires_at < bindparam("b_now")),
    )
    .returning(*COLUMNS)
)
# Only the lease this run holds: a run whose provider call outlived its lease must not free
# the lease of the run that took over meanwhile.
_RELEASE_LEASE = update(payments).where(
    payments.c.id == bindparam("b_id"),
    payments.c.status == _INITIATED,
    payments.c.lease_expires_at == bindparam("b_lease"),
)
_KEEP_REFERENCE = update(payments).where(
    payments.c.id == bindparam("b_id"), payments.c.provider_reference.is_(None)
)
_ANSWER = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.status == _INITIATED)
    .values(
        status=bindparam("v_status"),
        provider_reference=bindparam("v_reference"),
        failure_reason=bindparam("v_reason"),
        lease_expires_at=None,
        # A refusal ends the questions; an acceptance keeps the one due.
        next_check_at=case(
            (bindparam("v_status") == PaymentStatus.FAILED.value, null()),
            else_=payments.c.next_check_at,
        ),
        updated_at=bindparam("v_now"),
    )
    .returning(*COLUMNS)
)
_ANSWER_WITH_EVENT = order_events.with_event(_ANSWER)


def insert_payment(conn: Connection, values: dict[str, Any], detail: str) -> Payment | None:
    """A new `initiated` payment (the columns of CLAIMED_COLUMNS) with its order event;
    None when the key or the order's one live payment is taken."""
    now = values["created_at"]
    if conn.dialect.name == "postgresql":
        params = {f"p_{name}": value for name, value in values.items()}
        params.update(e_at=now, e_event="payment_initiated", e_detail=detail)
        row = conn.execute(_INSERT_PAYMENT_WITH_EVENT, params).first()
    else:
        row = conn.execute(_INSERT_PAYMENT(conn), values).first()
        if row is not None:
            order_events.record_event(conn, values["order_id"], "payment_initiated", detail, at=now)
    return None if row is None else from_row(row)


def take_lease(conn: Connection, payment_id: uuid.UUID, lease: timedelta) -> Payment | None:
    """Become the one process talking to the provider about an `initiated` payment, unless
    another holds an unexpired lease."""
    now = utcnow()
    params = {
        "b_id": payment_id,
        "b_now": now,
        "lease_expires_at": now + lease,
        "sent_at": now,  # the lease is taken to send the request
        "updated_at": now,
    }
    taken = conn.execute(_TAKE_LEASE, params).first()
    return None if taken is None else from_row(taken)


def release_lease(conn: Connection, payment: Payment, why: str, *, reached: bool = True) -> None:
    """Keep the payment `initiated` but let the next run of the key resume at once, if the
    lease is still the one this run took (`payment.lease_expires_at`). `reached`: whether the
    request may have arrived (False clears `sent_at`: it may be sent again)."""
    released = conn.execute(
        _RELEASE_LEASE,
        {
            "b_id": payment.id,
            "b_lease": payment.lease_expires_at,
            "lease_expires_at": None,
            "sent_at": payment.sent_at if reached else None,
            "updated_at": utcnow(),
        },
    )
    if released.rowcount:
        order_events.record_event(
            conn,
            payment.order_id,
            "payment_submission_failed",
            f"payment {payment.id} stays initiated: {why}",
        )


def record_answer(
    conn: Connection,
    payment: Payment,
    target: PaymentStatus,
    *,
    reference: str | None,
    reason: str | None,
    event: str,
    detail: str,
) -> Payment | None:
    """initiated -> target (the provider's receipt or refusal), with its order event; None if
    the payment had moved on (an outcome got here before the receipt did)."""
    if not payment_can_move(PaymentStatus.INITIATED, target):
        raise ValueError(f"payment transition initiated -> {target} is not allowed")
    now = utcnow()
    params = {
        "b_id": payment.id,
        "v_status": target.value,
        "v_reference": reference,
        "v_reason": reason,
        "v_now": now,
    }
    if conn.dialect.name == "postgresql":
        params.update(e_at=now, e_event=event, e_detail=detail)
        row = conn.execute(_ANSWER_WITH_EVENT, params).first()
        return None if row is None else from_row(row)
    row = conn.execute(_ANSWER, params).first()
    if row is None:
        return None
    order_events.record_event(conn, payment.order_id, event, detail, at=now)
    return from_row(row)


def keep_reference(conn: Connection, payment_id: uuid.UUID, reference: str) -> None:
    """The provider's reference of a payment settled before its receipt was recorded."""
    conn.execute(
        _KEEP_REFERENCE,
        {"b_id": payment_id, "provider_reference": reference, "lease_expires_at": None},
    )


# --- Settling: the provider's outcome ---------------------------------------------------------

_MOVE = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.status == bindparam("b_from"))
    .values(
        status=bindparam("v_status"),
        failure_reason=bindparam("v_reason"),
        awaiting_confirmation=bindparam("v_unconfirmed"),
        provider_transaction_id=func.coalesce(
            payments.c.provider_transaction_id, bindparam("v_transaction", type_=Text())
        ),
        lease_expires_at=None,
        next_check_at=bindparam("v_next_check", type_=UTCDateTime()),
        checks_made=0,
        updated_at=bindparam("v_now"),
    )
)
_NOTE_TRANSACTION = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.provider_transaction_id.is_(None))
    .values(provider_transaction_id=bindparam("v_transaction"))
)
_CONFIRMED = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.awaiting_confirmation)
    .values(awaiting_confirmation=False, next_check_at=None)
)
# The catch-up's claim: the one that moves the due check on by its lease asks the provider.
_CLAIM_CHECK = (
    update(payments)
    .where(
        payments.c.id == bindparam("b_id"),
        payments.c.next_check_at == bindparam("b_due"),
        payments.c.next_check_at <= bindparam("b_now"),
    )
    .values(next_check_at=bindparam("v_until"))
)
# The next one, unless its claim is gone (settled meanwhile: nothing left to ask).
_SCHEDULE_CHECK = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.next_check_at == bindparam("b_claim"))
    .values(next_check_at=bindparam("v_next"), checks_made=payments.c.checks_made + 1)
)


def settling_statement(*, record_callbacks: bool) -> Select[Any]:
    """Every write of a batch of moves (store/moves.py move_arrays) as one Postgres statement:
    lock the payments with their orders (order first, in order id order, so two batches never
    deadlock each other); go on with the moves whose payment and order are still as read;
    with `record_callbacks`, record each move's callback and go on only with those recorded
    (a copy recorded meanwhile keeps its own); then the payments, the orders paid, the
    notifications and the order events, each move's rows in the order the ordinary path
    writes them. Returns the position (from 1) of each move written."""
    now = bindparam("v_now", type_=UTCDateTime())
    batch = moves.batch_of_moves(with_callbacks=record_callbacks)
    locked = (
        select(payments.c.id, payments.c.status, orders.c.status.label("order_status"))
        .join(orders, orders.c.id == payments.c.order_id)
        .where(payments.c.id.in_(select(batch.c.payment_id)))
        .order_by(orders.c.id)
        .with_for_update(of=[orders, payments], key_share=True)
        .cte("locked")
    )
    go = (
        select(batch)
        .join(
            locked,
            and_(
                locked.c.id == batch.c.payment_id,
                locked.c.status == batch.c.expected,
                locked.c.order_status == batch.c.expected_order,
            ),
        )
        .cte("still_as_read")
    )
    if record_callbacks:
        recorded = webhook_events.record_from(
            select(
                go.c.source,
                go.c.dedupe_key,
                go.c.payload,
                now,
                literal(PROCESSED, String()),
                go.c.order_id,
                go.c.payment_id,
            ).order_by(go.c.k)
        ).cte("recorded")
        go = (
            select(go)
            .join(
                recorded,
                and_(recorded.c.source == go.c.source, recorded.c.dedupe_key == go.c.dedupe_key),
            )
            .cte("recorded_moves")
        )
    succeeding = go.c.target == _SUCCEEDED
    moved = (
        update(payments)
        .where(payments.c.id == go.c.payment_id)
        .values(
            status=go.c.target,
            failure_reason=go.c.reason,
            awaiting_confirmation=go.c.unconfirmed,
            provider_transaction_id=func.coalesce(
                payments.c.provider_transaction_id, go.c.transaction_id
            ),
            lease_expires_at=null(),
            next_check_at=case((go.c.unconfirmed, now), else_=null()),
            checks_made=0,
            updated_at=now,
        )
        .cte("moved")
    )
    paid = paid_from(go.c.order_id, succeeding, now=now).cte("paid")
    queued = outbox.insert_notification_from(
        select(
            go.c.order_id,
            go.c.payment_id,
            bindparam("v_channel", type_=String()).label("channel"),
            go.c.recipient,
        )
        .where(succeeding)
        .order_by(go.c.k)
    ).cte("queued")
    events = order_events.insert_events_from(
        moves.events_of_moves(go, queued, now), with_operator=True
    ).cte("events")
    return select(go.c.k).add_cte(moved, paid, queued, events)


_SETTLE = settling_statement(record_callbacks=False)
_NO_NOTIFICATION = NotifyTarget("log")  # for moves that queue none


def settle(conn: Connection, moves_: Sequence[PaymentMove], notify: NotifyTarget | None) -> None:
    """Write the moves (store/moves.py), each only if its payment and order are still as
    read, in the caller's transaction: on Postgres one statement, on SQLite its steps. The
    caller holds the rows' locks (store/locks.py), so a move that cannot be written means
    they changed under it: ConcurrentUpdate, and the caller's transaction is retried.
    `notify`: the channel of the notifications successes queue (None: failures only)."""
    if notify is None:
        assert not any(move.succeeds for move in moves_), "a success queues a notification"
        notify = _NO_NOTIFICATION
    now = utcnow()
    if conn.dialect.name == "postgresql":
        written = conn.execute(_SETTLE, moves.move_arrays(moves_, notify, now)).all()
        if len(written) != len(moves_):
            raise ConcurrentUpdate("a payment changed while it was being settled; retry")
        return
    for move in moves_:
        _settle_on_sqlite(conn, move, notify, now)


def _settle_on_sqlite(
    conn: Connection, move: PaymentMove, notify: NotifyTarget, now: datetime
) -> None:
    payment = move.locked.payment
    moved = conn.execute(
        _MOVE,
        {
            "b_id": payment.id,
            "b_from": payment.status.value,
            "v_status": move.target.value,
            "v_reason": move.failure_reason,
            "v_unconfirmed": move.unconfirmed,
            "v_transaction": move.transaction_id,
            # A failure without the provider's word is asked about at once, then as scheduled.
            "v_next_check": now if move.unconfirmed else None,
            "v_now": now,
        },
    )
    if moved.rowcount != 1:
        raise ConcurrentUpdate(f"payment {payment.id} changed while it was being updated; retry")
    event, detail = move.payment_event()
    order_events.record_event(conn, move.order_id, event, detail, at=now, operator=move.operator)
    paid = move.order_paid_detail()
    if paid is None:
        return
    mark_paid(conn, move.order_id, now)
    recipient = notify.recipient_for(move.locked.customer_phone)
    notification = outbox.add_notification(
        conn, order_id=move.order_id, payment_id=payment.id, recipient=recipient, target=notify
    )
    events = [(moves.ORDER_PAID, paid)]
    if notification is not None:
        detail = moves.notification_queued_detail(notification, notify.channel)
        events.append((moves.NOTIFICATION_QUEUED, detail))
    order_events.record_events(conn, move.order_id, events, at=now)


def note_transaction_id(conn: Connection, payment_id: uuid.UUID, transaction_id: str) -> None:
    """Keep the provider's transaction id of a payment, unless it already has one."""
    conn.execute(_NOTE_TRANSACTION, {"b_id": payment_id, "v_transaction": transaction_id})


def claim_check(
    conn: Connection, payment: Payment, now: datetime, lease: timedelta
) -> datetime | None:
    """Become the one to ask the provider about a payment due for a check (as read: its
    next_check_at); the claim, or None when another took it or it is not due."""
    until = now + lease
    params = {"b_id": payment.id, "b_due": payment.next_check_at, "b_now": now, "v_until": until}
    return until if conn.execute(_CLAIM_CHECK, params).rowcount == 1 else None


def schedule_check(
    conn: Connection, payment_id: uuid.UUID, claim: datetime, next_at: datetime | None
) -> None:
    """After a check: the next one at `next_at` (None: none), if the claim still stands."""
    params = {"b_id": payment_id, "b_claim": claim, "v_next": next_at}
    conn.execute(_SCHEDULE_CHECK, params)


def confirmed(conn: Connection, payment_id: uuid.UUID) -> None:
    """The provider gave its word on a payment failed without it: stop asking."""
    conn.execute(_CONFIRMED, {"b_id": payment_id})
