"""The ledger of orders and payments: the one module that writes orders, order_items and
payments (DESIGN.md section 1).

Every transition of an order or a payment is written here, once: each is a compare-and-set
(`WHERE status = :expected`) or runs under the row locks of store/locks.py (order first, then
payment), and writes its order event. Postgres and SQLite differ inside the functions only.

On Postgres a write and its order event go in one statement (data-modifying CTEs): a round
trip fewer per step, which is most of what a charge or a callback costs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.domain.money import Money
from orderpay.domain.states import (
    OrderStatus,
    PaymentStatus,
    order_can_move,
    payment_can_move,
)
from orderpay.errors import ConcurrentUpdate
from orderpay.store import order_events, outbox, webhook_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.locks import LockedPayment
from orderpay.store.notifications import NotifyTarget
from orderpay.store.orders import COLUMNS as ORDER_COLUMNS
from orderpay.store.orders import Order, order_from_row
from orderpay.store.payments import COLUMNS, Payment, from_row
from orderpay.store.schema import UTCDateTime, order_items, orders, payments

_INITIATED = PaymentStatus.INITIATED.value


# --- Orders -----------------------------------------------------------------------------------


def insert_order(
    conn: Connection,
    *,
    customer_id: int,
    total: Money,
    lines: Sequence[tuple[uuid.UUID, int, int]],
    detail: str,
) -> Order:
    """A new pending order with its lines (product, quantity, unit price) and order event."""
    now = utcnow()
    order_id = uuid.uuid4()
    conn.execute(
        insert(orders).values(
            id=order_id,
            customer_id=customer_id,
            status=OrderStatus.PENDING.value,
            currency=total.currency,
            total=total.minor_units,
            created_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        insert(order_items),
        [
            {"order_id": order_id, "product_id": pid, "quantity": qty, "unit_price": price}
            for pid, qty, price in lines
        ],
    )
    order_events.record_event(conn, order_id, "order_created", detail, at=now)
    return Order(order_id, customer_id, OrderStatus.PENDING, total, now, now)


def move_order(
    conn: Connection,
    order: Order,
    target: OrderStatus,
    event: str,
    detail: str = "",
    *,
    operator: str | None = None,
) -> Order:
    """Compare-and-set the order's status and write the order event (`operator`: who)."""
    if not order_can_move(order.status, target):
        raise ValueError(f"order transition {order.status} -> {target} is not allowed")
    now = utcnow()
    row = conn.execute(
        update(orders)
        .where(orders.c.id == order.id, orders.c.status == order.status.value)
        .values(status=target.value, updated_at=now)
        .returning(*ORDER_COLUMNS)
    ).first()
    if row is None:
        raise ConcurrentUpdate(f"order {order.id} changed while it was being updated; retry")
    order_events.record_event(conn, order.id, event, detail, at=now, operator=operator)
    return order_from_row(row)


# --- Charges: claim, lease, answer ------------------------------------------------------------

# No conflict target: a second use of the key and a second live payment of the order are both
# conflicts, told apart afterwards.
_INSERT_PAYMENT = InsertIgnoring(payments, None, *COLUMNS)
# The columns a claim gives a new payment (the rest take their defaults).
_CLAIMED_COLUMNS = (
    "id",
    "order_id",
    "idempotency_key",
    "fingerprint",
    "amount",
    "currency",
    "payer_phone",
    "provider",
    "status",
    "lease_expires_at",
    "created_at",
    "updated_at",
)
_INSERT_PAYMENT_WITH_EVENT = order_events.with_event(
    postgresql.insert(payments)
    .values(
        {name: bindparam(f"p_{name}", type_=payments.c[name].type) for name in _CLAIMED_COLUMNS}
    )
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
        updated_at=bindparam("v_now"),
    )
    .returning(*COLUMNS)
)
_ANSWER_WITH_EVENT = order_events.with_event(_ANSWER)


def insert_payment(conn: Connection, values: dict[str, Any], detail: str) -> Payment | None:
    """A new `initiated` payment (the columns of _CLAIMED_COLUMNS) with its order event;
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
    params = {"b_id": payment_id, "b_now": now, "lease_expires_at": now + lease, "updated_at": now}
    taken = conn.execute(_TAKE_LEASE, params).first()
    return None if taken is None else from_row(taken)


def release_lease(conn: Connection, payment: Payment, why: str) -> None:
    """Keep the payment `initiated` but let the next run of the key resume at once, if the
    lease is still the one this run took (`payment.lease_expires_at`)."""
    released = conn.execute(
        _RELEASE_LEASE,
        {
            "b_id": payment.id,
            "b_lease": payment.lease_expires_at,
            "lease_expires_at": None,
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
        awaiting_confirmation=bindparam("v_awaiting"),
        provider_transaction_id=func.coalesce(
            payments.c.provider_transaction_id, bindparam("v_transaction", type_=Text())
        ),
        lease_expires_at=None,
        updated_at=bindparam("v_now"),
    )
)
_MARK_PAID = (
    update(orders)
    .where(orders.c.id == bindparam("b_id"), orders.c.status == OrderStatus.PENDING.value)
    .values(status=OrderStatus.PAID.value, updated_at=bindparam("v_now"))
)
_NOTE_TRANSACTION = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.provider_transaction_id.is_(None))
    .values(provider_transaction_id=bindparam("v_transaction"))
)


_CONFIRMED = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"), payments.c.awaiting_confirmation)
    .values(awaiting_confirmation=False)
)


def _succeed_in_one_statement(with_inbox: bool) -> Select[Any]:
    """Everything a success writes, as one Postgres statement: the payment, the order, the
    outbox row, the three order events, and (`with_inbox`) the callback's outcome."""
    now = bindparam("v_now", type_=UTCDateTime())
    paid = (
        _MOVE.values(
            status=PaymentStatus.SUCCEEDED.value, failure_reason=None, awaiting_confirmation=False
        )
        .returning(payments.c.id, payments.c.order_id)
        .cte("paid")
    )
    # The order row is locked (lock_*) and the caller checked it is pending.
    order = (
        update(orders)
        .where(orders.c.id == paid.c.order_id, orders.c.status == OrderStatus.PENDING.value)
        .values(status=OrderStatus.PAID.value, updated_at=now)
        .returning(orders.c.id)
        .cte("order_paid")
    )
    queued = outbox.insert_notification_from(paid).cte("queued")
    # Numbered so the order events get their ids in this order.
    events = union_all(
        select(
            literal(1).label("k"),
            paid.c.order_id,
            literal("payment_succeeded").label("event"),
            bindparam("v_succeeded", type_=Text()).label("detail"),
        ),
        select(
            literal(2), paid.c.order_id, literal("order_paid"), bindparam("v_paid", type_=Text())
        ),
        select(
            literal(3),
            paid.c.order_id,
            literal("notification_queued"),
            literal("notification ", Text())
            + cast(queued.c.id, Text())
            + bindparam("v_via", type_=Text()),
        ).select_from(paid.join(queued, true())),
    ).subquery("e")
    rows = order_events.insert_events_from(
        select(events.c.order_id, now, events.c.event, events.c.detail).order_by(events.c.k)
    )
    ctes = [order, rows.cte("order_events")]
    if with_inbox:
        ctes.append(webhook_events.outcome_update().cte("inbox"))
    return select(paid.c.id).add_cte(*ctes)


_SUCCEED = _succeed_in_one_statement(with_inbox=False)
_SUCCEED_CALLBACK = _succeed_in_one_statement(with_inbox=True)


def succeed(
    conn: Connection,
    locked: LockedPayment,
    *,
    source: str,
    notify: NotifyTarget,
    transaction_id: str | None = None,
    event: tuple[int, str] | None = None,
) -> None:
    """An open payment succeeded: it and its order move, the notification's outbox row is
    written. `event` (id, outcome): the inbox event to settle in the same statement."""
    payment = locked.payment
    if not payment_can_move(payment.status, PaymentStatus.SUCCEEDED):
        raise ValueError(f"payment transition {payment.status} -> succeeded is not allowed")
    now = utcnow()
    succeeded = f"payment {payment.id} of {payment.amount} succeeded ({source})"
    paid = f"paid by payment {payment.id}"
    recipient = notify.recipient_for(locked.customer_phone)
    if conn.dialect.name == "postgresql":
        params = {
            "b_id": payment.id,
            "b_from": payment.status.value,
            "v_now": now,
            "v_transaction": transaction_id,
            "v_channel": notify.channel,
            "v_recipient": recipient,
            "v_succeeded": succeeded,
            "v_paid": paid,
            "v_via": f" via {notify.channel}",
        }
        if event is None:
            conn.execute(_SUCCEED, params)
        else:
            outcome = webhook_events.outcome_params(
                event[0], event[1], payment.order_id, payment.id
            )
            conn.execute(_SUCCEED_CALLBACK, params | outcome)
        return
    _move(conn, payment, PaymentStatus.SUCCEEDED, None, transaction_id, now, awaiting=False)
    conn.execute(_MARK_PAID, {"b_id": payment.order_id, "v_now": now})
    notification_id = outbox.add_notification(
        conn, order_id=payment.order_id, payment_id=payment.id, recipient=recipient, target=notify
    )
    events = [("payment_succeeded", succeeded), ("order_paid", paid)]
    if notification_id is not None:
        events.append(
            ("notification_queued", f"notification {notification_id} via {notify.channel}")
        )
    order_events.record_events(conn, payment.order_id, events, at=now)
    if event is not None:
        webhook_events.decide(conn, event[0], event[1], payment.order_id, payment.id)


def fail(
    conn: Connection,
    payment: Payment,
    *,
    reason: str | None,
    detail: str,
    transaction_id: str | None = None,
    event: str = "payment_failed",
    unconfirmed: bool = False,
    operator: str | None = None,
) -> None:
    """An open payment failed (the provider's word, or an operator's cancel); the order stays
    pending, chargeable with a new key. `unconfirmed`: without the provider's word (it is
    still asked, and a success it reports later is kept for review). `operator`: who."""
    if not payment_can_move(payment.status, PaymentStatus.FAILED):
        raise ValueError(f"payment transition {payment.status} -> failed is not allowed")
    now = utcnow()
    moved = _move(conn, payment, PaymentStatus.FAILED, reason, transaction_id, now, unconfirmed)
    if not moved:
        raise ConcurrentUpdate(f"payment {payment.id} changed while it was being updated; retry")
    order_events.record_event(conn, payment.order_id, event, detail, at=now, operator=operator)


def _move(
    conn: Connection,
    payment: Payment,
    target: PaymentStatus,
    reason: str | None,
    transaction_id: str | None,
    now: datetime,
    awaiting: bool,
) -> bool:
    moved = conn.execute(
        _MOVE,
        {
            "b_id": payment.id,
            "b_from": payment.status.value,
            "v_status": target.value,
            "v_reason": reason,
            "v_awaiting": awaiting,
            "v_transaction": transaction_id,
            "v_now": now,
        },
    )
    return bool(moved.rowcount == 1)


def note_transaction_id(conn: Connection, payment_id: uuid.UUID, transaction_id: str) -> None:
    """Keep the provider's transaction id of a payment, unless it already has one."""
    conn.execute(_NOTE_TRANSACTION, {"b_id": payment_id, "v_transaction": transaction_id})


def confirmed(conn: Connection, payment_id: uuid.UUID) -> None:
    """The provider gave its word on a payment failed without it: stop asking."""
    conn.execute(_CONFIRMED, {"b_id": payment_id})


# A batch of signed callbacks in one round trip (migration 0006; fast_callbacks.py's arrays).
_SETTLE_TYPES = "text[] text[] text[] uuid[] uuid[] text[] text[] numeric[] text[] text[] text text"
_SETTLE_TYPES += " timestamptz text[] text[] int[]"
_SETTLE_ARGS = ", ".join(f"${n}::{kind}" for n, kind in enumerate(_SETTLE_TYPES.split(), 1))
SETTLE_CALLBACKS = f"SELECT * FROM orderpay_settle_callbacks({_SETTLE_ARGS})"
