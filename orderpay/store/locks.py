"""Row locks on orders and payments, always taken order first, then payment.

A charge resuming a key locks its order (FOR SHARE), then takes its payment's lease; a callback
or a confirmation locks the order, then the payment (FOR UPDATE). Taken in one order
everywhere, two such transactions wait for each other instead of deadlocking. Reads only: the
writes these locks protect are in store/ledger.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.orders import COLUMNS as ORDER_COLUMNS
from orderpay.store.orders import Order, order_from_row
from orderpay.store.payments import COLUMNS, Payment, from_row
from orderpay.store.schema import customers, orders, payments, webhook_events

_PENDING = PaymentStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class LockedPayment:
    payment: Payment
    order_status: OrderStatus
    customer_phone: str


def _joined(*conditions: Any) -> Select[Any]:
    return (
        select(
            *COLUMNS,
            orders.c.status.label("order_status"),
            customers.c.phone.label("customer_phone"),
        )
        .select_from(
            orders.join(payments, payments.c.order_id == orders.c.id).join(
                customers, customers.c.id == orders.c.customer_id
            )
        )
        .where(*conditions)
    )


def _locking(*conditions: Any) -> Select[Any]:
    # FOR NO KEY UPDATE OF orders, payments: Postgres takes the row locks in this order, the
    # order's first, as a resuming charge does (FOR SHARE of the order, then its payment).
    # NO KEY: only statuses change, so a charge's insert (whose foreign key takes a key-share
    # lock on its order) never waits for them, nor they for it.
    return _joined(*conditions).with_for_update(of=[orders, payments], key_share=True)


def payment_named(order_id: Any, payment_id: Any, reference: Any) -> Select[Any]:
    """The id of the payment a callback names, as a one-row SELECT: ours, by its id (whatever
    its order: the caller checks); else among its order's payments the one whose reference, or
    sender's transaction id, the callback gives; else the order's pending one (never an
    initiated one, which the provider has not confirmed receiving). The arguments are SQL
    expressions: bound parameters for one callback, or a batch's columns (`.lateral()`)."""
    # correlate_except: in a batch, the callback's columns come from the enclosing query.
    by_id = (
        select(payments.c.id, literal_column("0").label("rank"))
        .where(payments.c.id == payment_id)
        .correlate_except(payments)
    )
    in_order = (
        select(
            payments.c.id,
            case(
                (payments.c.provider_reference == reference, literal_column("1")),
                (payments.c.provider_transaction_id == reference, literal_column("2")),
                else_=literal_column("3"),
            ),
        )
        .where(
            payments.c.order_id == order_id,
            or_(
                payments.c.provider_reference == reference,
                payments.c.provider_transaction_id == reference,
                payments.c.status == _PENDING,
            ),
        )
        .correlate_except(payments)
    )
    ranked = union_all(by_id, in_order).subquery("ranked")
    return select(ranked.c.id).order_by(ranked.c.rank).limit(1)


# Built once: these run on every callback, and building a statement costs more than running it.
_LOCK_BY_ID = _locking(payments.c.id == bindparam("b_payment"))
_PEEK_BY_ID = _joined(payments.c.id == bindparam("b_payment"))
_LOCK_NAMED = _locking(
    payments.c.id
    == payment_named(
        bindparam("b_order", type_=payments.c.order_id.type),
        bindparam("b_payment", type_=payments.c.id.type),
        bindparam("b_reference", type_=payments.c.provider_reference.type),
    ).scalar_subquery()
)
_ORDER_FOR_CHARGE = (
    select(orders.c.status, orders.c.total, orders.c.currency, customers.c.phone)
    .join(customers, customers.c.id == orders.c.customer_id)
    .where(orders.c.id == bindparam("b_order"))
    # FOR SHARE: charges of one order proceed together (the unique indexes decide between
    # them) while cancelling or settling the order waits for this claim to commit.
    .with_for_update(read=True, of=orders)
)
_ORDER_FOR_UPDATE = (
    select(*ORDER_COLUMNS)
    .where(orders.c.id == bindparam("b_order"))
    .with_for_update(key_share=True)
)


def peek_named_batch() -> Select[Any]:
    """For a batch of callbacks (arrays b_source, b_key, b_order, b_payment, b_reference, one
    element per callback), one row each in order: its position `k`; the outcome and payment of
    the webhook event already recorded under its key, if any; and what lock_named would read
    for it (the payment's columns, its order's status, the customer's phone), without locking
    anything. Postgres only (the listener's batches)."""
    batch = (
        func.unnest(
            bindparam("b_source", type_=ARRAY(Text())),
            bindparam("b_key", type_=ARRAY(Text())),
            bindparam("b_order", type_=ARRAY(UUID())),
            bindparam("b_payment", type_=ARRAY(UUID())),
            bindparam("b_reference", type_=ARRAY(Text())),
        )
        .table_valued(
            "source", "dedupe_key", "order_id", "payment_id", "reference", with_ordinality="k"
        )
        .render_derived("batch")
    )
    named = payment_named(batch.c.order_id, batch.c.payment_id, batch.c.reference).lateral("named")
    seen = webhook_events
    return (
        select(
            batch.c.k,
            seen.c.outcome.label("seen_outcome"),
            seen.c.payment_id.label("seen_payment_id"),
            *_joined().selected_columns,
        )
        .select_from(
            batch.outerjoin(
                seen,
                and_(seen.c.source == batch.c.source, seen.c.dedupe_key == batch.c.dedupe_key),
            )
            .outerjoin(named, true())
            .outerjoin(payments, payments.c.id == named.c.id)
            .outerjoin(orders, orders.c.id == payments.c.order_id)
            .outerjoin(customers, customers.c.id == orders.c.customer_id)
        )
        .order_by(batch.c.k)
    )


def _locked(row: Row[*tuple[Any, ...]] | None) -> LockedPayment | None:
    if row is None:
        return None
    extra = row._mapping
    return LockedPayment(from_row(row), OrderStatus(extra["order_status"]), extra["customer_phone"])


def lock_payment(conn: Connection, payment_id: uuid.UUID) -> LockedPayment | None:
    """The payment with its order, both locked (FOR UPDATE), order first."""
    return _locked(conn.execute(_LOCK_BY_ID, {"b_payment": payment_id}).first())


def peek_payment(conn: Connection, payment_id: uuid.UUID) -> LockedPayment | None:
    """What lock_payment reads, without locking anything: for decisions that write nothing
    (`orderpay reconcile --dry-run`), which must not hold up callbacks and charges."""
    return _locked(conn.execute(_PEEK_BY_ID, {"b_payment": payment_id}).first())


def lock_named(
    conn: Connection, order_id: uuid.UUID, payment_id: uuid.UUID | None, reference: str
) -> LockedPayment | None:
    """The payment a callback names (payment_named), locked with its order, or None."""
    params = {"b_order": order_id, "b_payment": payment_id, "b_reference": reference}
    return _locked(conn.execute(_LOCK_NAMED, params).first())


def lock_order_for_charge(conn: Connection, order_id: uuid.UUID) -> Any:
    """(status, total, currency, customer phone) of the order, FOR SHARE; None if absent."""
    return conn.execute(_ORDER_FOR_CHARGE, {"b_order": order_id}).first()


def lock_order(conn: Connection, order_id: uuid.UUID) -> Order | None:
    row = conn.execute(_ORDER_FOR_UPDATE, {"b_order": order_id}).first()
    return None if row is None else order_from_row(row)


def lock_payer(conn: Connection, provider: str, payer_phone: str) -> None:
    """Serialise charges to one payer through one provider (taken after the order's lock, and
    by nothing else: no cycle). SQLite runs one writer at a time already."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("b_key"), 0))),
            {"b_key": f"payer:{provider}:{payer_phone}"},
        )
