"""A payment's move to its outcome, as store/ledger.py writes it: what moves, and what the
order events say about it.

Both dialects and both callback paths build their writes from these records and texts, so a
text or a column has one home. Writes nothing itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Select,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from orderpay.domain.states import PaymentStatus, payment_can_move
from orderpay.store.locks import LockedPayment
from orderpay.store.notifications import NotifyTarget

SUCCEEDED = "payment_succeeded"
FAILED = "payment_failed"
ORDER_PAID = "order_paid"
NOTIFICATION_QUEUED = "notification_queued"
# Stands for the notification's id, which only the database knows, in the text sent with it.
_NOTIFICATION_ID = "\x00"


@dataclass(frozen=True, slots=True)
class PaymentMove:
    """An open payment moving to `target`, as `locked` read it (with its order's status): the
    write happens only if both are still what was read.

    `source`: who reported the outcome, for the order event's text. `transaction_id`: the
    provider's own id of the money movement, kept unless the payment has one. `unconfirmed`:
    a failure without the provider's word (an operator's forced cancel); the provider is
    still asked. `event` and `detail` replace the order event's name and text (an operator's
    cancel says so); `operator`: who acted.
    """

    locked: LockedPayment
    target: PaymentStatus
    source: str
    reason: str | None = None
    transaction_id: str | None = None
    unconfirmed: bool = False
    event: str | None = None
    detail: str | None = None
    operator: str | None = None

    def __post_init__(self) -> None:
        if not payment_can_move(self.locked.payment.status, self.target):
            raise ValueError(
                f"payment transition {self.locked.payment.status} -> {self.target} is not allowed"
            )

    @property
    def payment_id(self) -> uuid.UUID:
        return self.locked.payment.id

    @property
    def order_id(self) -> uuid.UUID:
        return self.locked.payment.order_id

    @property
    def succeeds(self) -> bool:
        return self.target is PaymentStatus.SUCCEEDED

    @property
    def failure_reason(self) -> str | None:
        return None if self.succeeds else self.reason

    def payment_event(self) -> tuple[str, str]:
        """The order event of the payment's move: (name, text)."""
        payment = self.locked.payment
        if self.succeeds:
            default = (
                SUCCEEDED,
                f"payment {payment.id} of {payment.amount} succeeded ({self.source})",
            )
        else:
            reason = self.reason or "no reason given"
            default = FAILED, f"payment {payment.id} failed ({self.source}): {reason}"
        return self.event or default[0], self.detail or default[1]

    def order_paid_detail(self) -> str | None:
        """The text of the order's `order_paid` event; None when the payment fails."""
        return f"paid by payment {self.payment_id}" if self.succeeds else None


def notification_queued_detail(notification_id: int | str, channel: str) -> str:
    return f"notification {notification_id} via {channel}"


@dataclass(frozen=True, slots=True)
class RecordedCallback:
    """The webhook event to record with a move, in the same statement: a batch's callback."""

    source: str
    dedupe_key: str
    payload: str


# The arrays of a batch of moves (one element per move): their names and SQL types. The
# callback's arrays go with them when the batch records its callbacks.
MOVE_COLUMNS: dict[str, TypeEngine[Any]] = {
    "payment_id": Uuid(),
    "order_id": Uuid(),
    "expected": Text(),
    "expected_order": Text(),
    "target": Text(),
    "reason": Text(),
    "transaction_id": Text(),
    "unconfirmed": Boolean(),
    "event": Text(),
    "detail": Text(),
    "operator": Text(),
    "paid_detail": Text(),
    "recipient": Text(),
}
CALLBACK_COLUMNS: dict[str, TypeEngine[Any]] = {
    "source": Text(),
    "dedupe_key": Text(),
    "payload": Text(),
}


def batch_of_moves(*, with_callbacks: bool) -> Any:
    """The batch's arrays as rows (a Postgres CTE `batch`, its columns named as in
    MOVE_COLUMNS, and `k`, each move's position from 1); move_arrays gives the values."""
    columns = MOVE_COLUMNS | (CALLBACK_COLUMNS if with_callbacks else {})
    arrays = (bindparam(f"b_{name}", type_=ARRAY(kind)) for name, kind in columns.items())
    rows = func.unnest(*arrays).table_valued(*columns, with_ordinality="k")
    return select(rows.render_derived("moves")).cte("batch")


def events_of_moves(moves: Any, queued: Any, now: Any) -> Select[Any]:
    """The order events of a batch's moves, as rows (order_id, at, event, detail, operator)
    in the order they are to get their ids: per move, its own event, `order_paid`, and
    `notification_queued` for each notification `queued` (a CTE of id, payment_id) holds."""
    queued_detail = (
        bindparam("v_queued_before", type_=Text())
        + cast(queued.c.id, Text())
        + bindparam("v_queued_after", type_=Text())
    )
    paid, notified = literal(ORDER_PAID, String()), literal(NOTIFICATION_QUEUED, String())
    m = moves.c
    steps = union_all(
        select(m.k, literal_column("1").label("step"), m.order_id, m.event, m.detail, m.operator),
        select(m.k, literal_column("2"), m.order_id, paid, m.paid_detail, null()),
        select(m.k, literal_column("3"), m.order_id, notified, queued_detail, null()).join_from(
            moves, queued, queued.c.payment_id == m.payment_id
        ),
    ).subquery("step")
    return (
        select(steps.c.order_id, now, steps.c.event, steps.c.detail, steps.c.operator)
        .where(steps.c.detail.is_not(None))
        .order_by(steps.c.k, steps.c.step)
    )


def move_arrays(
    moves: Sequence[PaymentMove],
    notify: NotifyTarget,
    now: datetime,
    callbacks: Sequence[RecordedCallback] | None = None,
) -> dict[str, Any]:
    """The parameters of store/ledger.py's settling statement for these moves: one array
    element per move (and per callback, which goes with the move at the same place)."""
    before, after = notification_queued_detail(_NOTIFICATION_ID, notify.channel).split(
        _NOTIFICATION_ID
    )
    events = [move.payment_event() for move in moves]
    arrays: dict[str, Any] = {
        "b_payment_id": [move.payment_id for move in moves],
        "b_order_id": [move.order_id for move in moves],
        "b_expected": [move.locked.payment.status.value for move in moves],
        "b_expected_order": [move.locked.order_status.value for move in moves],
        "b_target": [move.target.value for move in moves],
        "b_reason": [move.failure_reason for move in moves],
        "b_transaction_id": [move.transaction_id for move in moves],
        "b_unconfirmed": [move.unconfirmed for move in moves],
        "b_event": [name for name, _ in events],
        "b_detail": [detail for _, detail in events],
        "b_operator": [move.operator for move in moves],
        "b_paid_detail": [move.order_paid_detail() for move in moves],
        "b_recipient": [notify.recipient_for(move.locked.customer_phone) for move in moves],
        "v_now": now,
        "v_channel": notify.channel,
        "v_queued_before": before,
        "v_queued_after": after,
    }
    if callbacks is not None:
        arrays["b_source"] = [callback.source for callback in callbacks]
        arrays["b_dedupe_key"] = [callback.dedupe_key for callback in callbacks]
        arrays["b_payload"] = [callback.payload for callback in callbacks]
    return arrays
