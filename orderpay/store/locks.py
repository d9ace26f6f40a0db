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

from sqlalchemy import Connection, Row, Select, bindparam, case, or_, select

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.orders import COLUMNS as ORDER_COLUMNS
from orderpay.store.orders import Order, order_from_row
from orderpay.store.payments import COLUMNS, Payment, from_row
from orderpay.store.schema import customers, orders, payments

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
    # FOR UPDATE OF orders, payments: Postgres takes the row locks in this order, the order's
    # first, as a resuming charge does (FOR SHARE of the order, then its payment).
    return _joined(*conditions).with_for_update(of=[orders, payments])


# Built once: these run on every callback, and building a statement costs more than running it.
_LOCK_BY_ID = _locking(payments.c.id == bindparam("b_payment"))
_PEEK_BY_ID = _joined(payments.c.id == bindparam("b_payment"))
# A sender's reference may be what we sent (provider_reference), the sender's own transaction
# id once we know it, or unknown: then the order's pending payment (never an initiated one,
# which the provider has not confirmed receiving) is the one meant.
_LOCK_FOR_REFERENCE = (
    _locking(
        orders.c.id == bindparam("b_order"),
        or_(
            payments.c.provider_reference == bindparam("b_reference"),
            payments.c.provider_transaction_id == bindparam("b_reference"),
            payments.c.status == _PENDING,
        ),
    )
    .order_by(
        case(
            (payments.c.provider_reference == bindparam("b_reference"), 0),
            (payments.c.provider_transaction_id == bindparam("b_reference"), 1),
            else_=2,
        )
    )
    .limit(1)
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
    select(*ORDER_COLUMNS).where(orders.c.id == bindparam("b_order")).with_for_update()
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


def lock_for_reference(
    conn: Connection, order_id: uuid.UUID, reference: str
) -> LockedPayment | None:
    """The order's payment `reference` names (ours or the sender's), else its pending one."""
    params = {"b_order": order_id, "b_reference": reference}
    return _locked(conn.execute(_LOCK_FOR_REFERENCE, params).first())


def lock_order_for_charge(conn: Connection, order_id: uuid.UUID) -> Any:
    """(status, total, currency, customer phone) of the order, FOR SHARE; None if absent."""
    return conn.execute(_ORDER_FOR_CHARGE, {"b_order": order_id}).first()


def lock_order(conn: Connection, order_id: uuid.UUID) -> Order | None:
    row = conn.execute(_ORDER_FOR_UPDATE, {"b_order": order_id}).first()
    return None if row is None else order_from_row(row)
