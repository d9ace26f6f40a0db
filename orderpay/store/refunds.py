"""The refunds ledger: the one module that writes the refunds table, and its reads.

A refund follows a payment's rules (DESIGN.md sections 4 and 5): `initiated` (claimed with a
lease, the provider not yet known to have it) -> `pending` (the provider accepted) ->
`succeeded` | `failed`. Every transition is a compare-and-set on the status it leaves, and
writes its order event. The sum of a payment's refunds that did not fail is checked by the
caller under the payment's row lock (store/locks.py: order, then payment) before a refund is
inserted; a failed refund frees its amount again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Text, bindparam, case, func, null, select, update

from orderpay.clock import utcnow
from orderpay.domain.states import OPEN_REFUND_STATUSES, RefundStatus, refund_can_move
from orderpay.errors import RefundNotFound
from orderpay.store import order_events
from orderpay.store.db import InsertIgnoring
from orderpay.store.refund_rows import COLUMNS, Refund, from_row
from orderpay.store.schema import refunds

_r = refunds.c
_INITIATED = RefundStatus.INITIATED.value
_FAILED = RefundStatus.FAILED.value
_TERMINAL = [RefundStatus.SUCCEEDED.value, RefundStatus.FAILED.value]


# --- Claim, lease, answer ---------------------------------------------------------------------

# The key decides between two claims of one key; the payment's lock (held by the caller)
# decides between refunds of one payment under different keys.
_INSERT = InsertIgnoring(refunds, ["idempotency_key"], *COLUMNS)
_TAKE_LEASE = (
    update(refunds)
    .where(
        _r.id == bindparam("b_id"),
        _r.status == _INITIATED,
        _r.lease_expires_at.is_(None) | (_r.lease_expires_at < bindparam("b_now")),
    )
    .returning(*COLUMNS)
)
# Only the lease this run holds: a run whose provider call outlived its lease must not free
# the lease of the run that took over meanwhile.
_RELEASE_LEASE = update(refunds).where(
    _r.id == bindparam("b_id"),
    _r.status == _INITIATED,
    _r.lease_expires_at == bindparam("b_lease"),
)
_KEEP_REFERENCE = update(refunds).where(_r.id == bindparam("b_id"), _r.provider_reference.is_(None))
_MOVE = (
    update(refunds)
    .where(_r.id == bindparam("b_id"), _r.status == bindparam("b_from"))
    .values(
        status=bindparam("v_status"),
        provider_reference=func.coalesce(
            _r.provider_reference, bindparam("v_reference", type_=Text())
        ),
        provider_transaction_id=func.coalesce(
            _r.provider_transaction_id, bindparam("v_transaction", type_=Text())
        ),
        failure_reason=bindparam("v_reason", type_=Text()),
        lease_expires_at=None,
        # Settled: nothing left to ask; accepted: the check due stays.
        next_check_at=case((bindparam("v_status").in_(_TERMINAL), null()), else_=_r.next_check_at),
        updated_at=bindparam("v_now"),
    )
    .returning(*COLUMNS)
)
_CLAIM_CHECK = (
    update(refunds)
    .where(
        _r.id == bindparam("b_id"),
        _r.next_check_at == bindparam("b_due"),
        _r.next_check_at <= bindparam("b_now"),
    )
    .values(next_check_at=bindparam("v_until"))
)
_SCHEDULE_CHECK = (
    update(refunds)
    .where(_r.id == bindparam("b_id"), _r.next_check_at == bindparam("b_claim"))
    .values(next_check_at=bindparam("v_next"), checks_made=_r.checks_made + 1)
)
_NOTE_TRANSACTION = (
    update(refunds)
    .where(_r.id == bindparam("b_id"), _r.provider_transaction_id.is_(None))
    .values(provider_transaction_id=bindparam("v_transaction"))
)


def insert_refund(conn: Connection, values: dict[str, Any], detail: str) -> Refund | None:
    """A new `initiated` refund with its order event (naming the operator); None when its
    idempotency key is taken."""
    row = conn.execute(_INSERT(conn), values).first()
    if row is None:
        return None
    order_events.record_event(
        conn,
        values["order_id"],
        "refund_initiated",
        detail,
        at=values["created_at"],
        operator=values["operator"],
    )
    return from_row(row)


def take_lease(
    conn: Connection, refund_id: uuid.UUID, lease: timedelta, *, operator: str | None
) -> Refund | None:
    """Become the one process talking to the provider about an `initiated` refund, unless
    another holds an unexpired lease. `operator`: who resumed it (None: reconcile)."""
    now = utcnow()
    params = {
        "b_id": refund_id,
        "b_now": now,
        "lease_expires_at": now + lease,
        "sent_at": now,  # the lease is taken to send the request
        "updated_at": now,
    }
    row = conn.execute(_TAKE_LEASE, params).first()
    if row is None:
        return None
    taken = from_row(row)
    order_events.record_event(
        conn, taken.order_id, "refund_resumed", f"refund {taken.id}", at=now, operator=operator
    )
    return taken


def release_lease(conn: Connection, refund: Refund, why: str, *, reached: bool = True) -> None:
    """Keep the refund `initiated` but let the next run of the key resume it at once, if the
    lease is still the one this run took (`refund.lease_expires_at`). `reached`: whether the
    request may have arrived (False clears `sent_at`: it may be sent again)."""
    released = conn.execute(
        _RELEASE_LEASE,
        {
            "b_id": refund.id,
            "b_lease": refund.lease_expires_at,
            "lease_expires_at": None,
            "sent_at": refund.sent_at if reached else None,
            "updated_at": utcnow(),
        },
    )
    if released.rowcount:
        order_events.record_event(
            conn,
            refund.order_id,
            "refund_submission_failed",
            f"refund {refund.id} stays initiated: {why}",
        )


def move(
    conn: Connection,
    refund: Refund,
    target: RefundStatus,
    *,
    event: str,
    detail: str,
    reference: str | None = None,
    reason: str | None = None,
    transaction_id: str | None = None,
) -> Refund | None:
    """Compare-and-set `refund.status` -> `target` with its order event: the provider's
    receipt (`pending`, keeping its `reference`) or its outcome. None if the refund had moved
    on meanwhile (the caller reads it again)."""
    if not refund_can_move(refund.status, target):
        raise ValueError(f"refund transition {refund.status} -> {target} is not allowed")
    now = utcnow()
    row = conn.execute(
        _MOVE,
        {
            "b_id": refund.id,
            "b_from": refund.status.value,
            "v_status": target.value,
            "v_reference": reference,
            "v_transaction": transaction_id,
            "v_reason": reason,
            "v_now": now,
        },
    ).first()
    if row is None:
        return None
    order_events.record_event(conn, refund.order_id, event, detail, at=now)
    return from_row(row)


def claim_check(
    conn: Connection, refund: Refund, now: datetime, lease: timedelta
) -> datetime | None:
    """Become the one to ask the provider about a refund due for a check (as read); the
    claim, or None when another took it or it is not due."""
    until = now + lease
    params = {"b_id": refund.id, "b_due": refund.next_check_at, "b_now": now, "v_until": until}
    return until if conn.execute(_CLAIM_CHECK, params).rowcount == 1 else None


def schedule_check(
    conn: Connection, refund_id: uuid.UUID, claim: datetime, next_at: datetime | None
) -> None:
    """After a check: the next one at `next_at` (None: none), if the claim still stands."""
    conn.execute(_SCHEDULE_CHECK, {"b_id": refund_id, "b_claim": claim, "v_next": next_at})


def keep_reference(conn: Connection, refund_id: uuid.UUID, reference: str) -> None:
    """The provider's reference of a refund settled before its receipt was recorded."""
    conn.execute(
        _KEEP_REFERENCE,
        {"b_id": refund_id, "provider_reference": reference, "lease_expires_at": None},
    )


def note_transaction_id(conn: Connection, refund_id: uuid.UUID, transaction_id: str) -> None:
    """Keep the provider's transaction id of a refund, unless it already has one."""
    conn.execute(_NOTE_TRANSACTION, {"b_id": refund_id, "v_transaction": transaction_id})


# --- Reads ------------------------------------------------------------------------------------

_BY_ID = select(*COLUMNS).where(_r.id == bindparam("b_id"))
_BY_KEY = select(*COLUMNS).where(_r.idempotency_key == bindparam("b_key"))
_NOT_FAILED_TOTAL = select(func.coalesce(func.sum(_r.amount), 0)).where(
    _r.payment_id == bindparam("b_payment"), _r.status != _FAILED
)
_SUCCEEDED_TOTAL = select(func.coalesce(func.sum(_r.amount), 0)).where(
    _r.payment_id == bindparam("b_payment"), _r.status == RefundStatus.SUCCEEDED.value
)


def find_refund(conn: Connection, refund_id: uuid.UUID) -> Refund | None:
    row = conn.execute(_BY_ID, {"b_id": refund_id}).first()
    return None if row is None else from_row(row)


def get_refund(conn: Connection, refund_id: uuid.UUID) -> Refund:
    refund = find_refund(conn, refund_id)
    if refund is None:
        raise RefundNotFound(f"refund {refund_id} does not exist", refund=str(refund_id))
    return refund


def find_by_key(conn: Connection, key: str) -> Refund | None:
    row = conn.execute(_BY_KEY, {"b_key": key}).first()
    return None if row is None else from_row(row)


def committed_total(conn: Connection, payment_id: uuid.UUID) -> int:
    """Minor units of the payment's refunds that did not fail (open ones count: their money
    may be on its way). Exact only under the payment's row lock."""
    return int(conn.execute(_NOT_FAILED_TOTAL, {"b_payment": payment_id}).scalar_one())


def succeeded_total(conn: Connection, payment_id: uuid.UUID) -> int:
    """Minor units of the payment given back so far."""
    return int(conn.execute(_SUCCEEDED_TOTAL, {"b_payment": payment_id}).scalar_one())


def refunds_of(conn: Connection, order_ids: list[uuid.UUID]) -> list[Refund]:
    """The refunds of these orders, oldest first."""
    rows = conn.execute(
        select(*COLUMNS).where(_r.order_id.in_(order_ids)).order_by(_r.created_at, _r.id)
    )
    return [from_row(row) for row in rows]


def refunds_of_payment(conn: Connection, payment_id: uuid.UUID) -> list[Refund]:
    rows = conn.execute(
        select(*COLUMNS).where(_r.payment_id == payment_id).order_by(_r.created_at, _r.id)
    )
    return [from_row(row) for row in rows]


def due_for_check(conn: Connection, now: datetime, limit: int) -> list[Refund]:
    """Refunds whose provider is to be asked again now, the longest due first."""
    rows = conn.execute(
        select(*COLUMNS).where(_r.next_check_at <= now).order_by(_r.next_check_at).limit(limit)
    )
    return [from_row(row) for row in rows]


_OPEN = _r.status.in_([s.value for s in OPEN_REFUND_STATUSES])


def awaiting_answers(conn: Connection, limit: int) -> list[Refund]:
    """Refunds still `initiated` or `pending`, the longest unchanged first."""
    rows = conn.execute(select(*COLUMNS).where(_OPEN).order_by(_r.updated_at).limit(limit))
    return [from_row(row) for row in rows]


def oldest_awaiting(conn: Connection) -> datetime | None:
    """When the oldest refund still awaiting its provider's final word was made."""
    return conn.execute(select(func.min(_r.created_at)).where(_OPEN)).scalar_one()  # type: ignore[no-any-return]


def find_by_provider_reference(conn: Connection, provider: str, reference: str) -> Refund | None:
    """The refund a provider knows by `reference` (M-Pesa's ConversationID)."""
    row = conn.execute(
        select(*COLUMNS).where(_r.provider == provider, _r.provider_reference == reference)
    ).first()
    return None if row is None else from_row(row)


def find_by_our_reference(conn: Connection, provider: str, reference: str) -> Refund | None:
    """The refund we named `reference` to its provider."""
    row = conn.execute(
        select(*COLUMNS).where(_r.provider == provider, _r.our_reference == reference)
    ).first()
    return None if row is None else from_row(row)
