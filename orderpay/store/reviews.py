"""The review queue (review_items): the one module that writes it, and its reads.

An item is a finding orderpay refused to act on (payments/review.py decides which), opened in
the transaction that records it. The schema allows one open item per subject, whatever its
reason (a partial unique index), and only domain.reviews.ReviewReason codes (a check
constraint). Resolving is a compare-and-set on `resolved_at IS NULL`; the item stays, with who
resolved it and why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from orderpay.clock import utcnow
from orderpay.errors import ReviewItemNotFound, ReviewItemResolved
from orderpay.store.db import InsertIgnoring
from orderpay.store.paging import Page, Window, page_of, windowed
from orderpay.store.schema import review_items

_r = review_items.c


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    reason: str  # a code: domain.reviews.ReviewReason
    subject: str
    order_id: uuid.UUID
    payment_id: uuid.UUID | None
    refund_id: uuid.UUID | None
    event_id: int | None
    reported: str  # what the provider said
    suggested_action: str
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    note: str | None
    money: str | None = None  # what it says of the payment's money: domain.reviews.FindingMoney

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


COLUMNS = (
    _r.id,
    _r.reason,
    _r.subject,
    _r.order_id,
    _r.payment_id,
    _r.refund_id,
    _r.event_id,
    _r.reported,
    _r.suggested_action,
    _r.opened_at,
    _r.resolved_at,
    _r.resolved_by,
    _r.note,
    _r.money,
)
_OPEN = _r.resolved_at.is_(None)
_INSERT = InsertIgnoring(review_items, ["subject"], _r.id, where=_OPEN)


def from_row(row: Row[*tuple[Any, ...]]) -> ReviewItem:
    """The item in a row of COLUMNS, whose keys are its fields' names."""
    return ReviewItem(**row._mapping)


# --- Writes -----------------------------------------------------------------------------------


def open_item(
    conn: Connection,
    *,
    reason: str,
    subject: str,
    order_id: uuid.UUID,
    reported: str,
    suggested_action: str,
    payment_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
    event_id: int | None = None,
    money: str | None = None,
) -> int | None:
    """Open an item in the caller's transaction: its id, or None when an item about this
    subject is open already, whatever its reason (the finding was reported before)."""
    values = {
        "money": money,
        "reason": reason,
        "subject": subject[:255],
        "order_id": order_id,
        "payment_id": payment_id,
        "refund_id": refund_id,
        "event_id": event_id,
        "reported": reported,
        "suggested_action": suggested_action,
        "opened_at": utcnow(),
    }
    inserted = conn.execute(_INSERT(conn), values).scalar_one_or_none()
    return None if inserted is None else int(inserted)


def resolve_item(
    conn: Connection,
    item_id: int,
    *,
    operator: str,
    note: str,
    refund_id: uuid.UUID | None = None,
) -> ReviewItem:
    """Close an open item with the operator's note (and the refund that settled it, if one
    did); ReviewItemResolved if it is closed."""
    values: dict[str, Any] = {"resolved_at": utcnow(), "resolved_by": operator, "note": note}
    if refund_id is not None:
        values["refund_id"] = refund_id
    resolved = conn.execute(
        update(review_items).where(_r.id == item_id, _OPEN).values(values).returning(*COLUMNS)
    ).first()
    if resolved is not None:
        return from_row(resolved)
    current = get_item(conn, item_id)  # not found, or resolved already
    raise ReviewItemResolved(
        f"review item {item_id} was resolved by {current.resolved_by} at "
        f"{current.resolved_at:%Y-%m-%d %H:%M:%S} UTC: {current.note}",
        item=item_id,
    )


# --- Reads ------------------------------------------------------------------------------------


def get_item(conn: Connection, item_id: int) -> ReviewItem:
    row = conn.execute(select(*COLUMNS).where(_r.id == item_id)).first()
    if row is None:
        raise ReviewItemNotFound(f"review item {item_id} does not exist", item=item_id)
    return from_row(row)


def list_items(
    conn: Connection,
    window: Window,
    *,
    open_only: bool = True,
    order_id: uuid.UUID | None = None,
) -> Page[ReviewItem]:
    """A page of items, newest opened first."""
    query = select(*COLUMNS)
    if open_only:
        query = query.where(_OPEN)
    if order_id is not None:
        query = query.where(_r.order_id == order_id)
    query = windowed(query, _r.opened_at, _r.id, window, int)
    rows = [from_row(row) for row in conn.execute(query)]
    return page_of(rows, window, lambda item: (item.opened_at, item.id))


def open_item_about(conn: Connection, subject: str) -> ReviewItem | None:
    """The open item about `subject`, whatever its reason, or None; locked until the caller's
    transaction ends. (A finding's reason may read differently when it is reported again: see
    payments/review.py.)

    Locked so that the report the caller attaches to it cannot land on an item a resolve
    closes meanwhile: on Postgres, a resolve in flight is waited for, and the row is checked
    again once it commits (a resolved item is then not returned: the caller opens a new one);
    a resolve that comes later waits for the caller's commit. SQLite runs one writer at a time
    (transactions begin IMMEDIATE), so it renders no FOR UPDATE and needs none."""
    row = conn.execute(
        select(*COLUMNS)
        .where(_r.subject == subject[:255], _OPEN)
        .order_by(_r.id)
        .limit(1)
        .with_for_update()
    ).first()
    return None if row is None else from_row(row)


def count_open(conn: Connection) -> int:
    """How many items wait for a decision (doctor, /metrics)."""
    return int(
        conn.execute(select(func.count()).select_from(review_items).where(_OPEN)).scalar_one()
    )


def open_items_of_payment(conn: Connection, payment_id: uuid.UUID) -> list[ReviewItem]:
    """The open items about a payment, whatever their subject, oldest first."""
    rows = conn.execute(select(*COLUMNS).where(_r.payment_id == payment_id, _OPEN).order_by(_r.id))
    return [from_row(row) for row in rows]


def items_about(conn: Connection, subject: str) -> list[ReviewItem]:
    """Every item about `subject`, open or resolved, oldest first."""
    rows = conn.execute(select(*COLUMNS).where(_r.subject == subject[:255]).order_by(_r.id))
    return [from_row(row) for row in rows]
