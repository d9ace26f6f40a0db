"""The charge flow (DESIGN.md section 5): claim the key, ask the provider, record the answer.

Three steps, and the provider is called between transactions, never inside one:
1. one transaction claims the key by inserting the payment as `initiated` with a lease;
2. the provider is asked to collect, with the payment id as its reference;
3. one transaction records the answer: `pending`, or `failed` with the reason.
A crash between the steps leaves `initiated`; once the lease has run out, the same key resumes
it (the provider treats the repeated reference as "already submitted").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql

from orderpay.clock import utcnow
from orderpay.db import InsertIgnoring, Transactional
from orderpay.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidAmount,
    OrderAlreadyPaid,
    OrderCancelled,
    OrderNotFound,
    PaymentDeclined,
    PaymentInProgress,
    ProviderUnavailable,
)
from orderpay.idempotency import charge_fingerprint, check_key
from orderpay.models import customers, orders, payments
from orderpay.money import Money
from orderpay.payments import COLUMNS, Payment, find_by_key, from_row, get_payment, move_payment
from orderpay.phones import mask_phone, normalise_phone
from orderpay.providers import Accepted, CollectionRequest, Provider, ProviderAnswer
from orderpay.states import LIVE_PAYMENT_STATUSES, OrderStatus, PaymentStatus, payment_can_move
from orderpay.timeline import record_event, with_event

# Built once: these run on every charge, and building a statement costs more than running it.
_ORDER_FOR_CHARGE = (
    select(orders.c.status, orders.c.total, orders.c.currency, customers.c.phone)
    .join(customers, customers.c.id == orders.c.customer_id)
    .where(orders.c.id == bindparam("b_order"))
    # FOR SHARE: charges of one order proceed together (the unique indexes decide between
    # them) while cancelling or marking the order paid waits for this claim to commit.
    .with_for_update(read=True, of=orders)
)
# No conflict target: a second use of the key and a second live payment of the order are both
# conflicts, told apart afterwards.
_INSERT_PAYMENT = InsertIgnoring(payments, None, *COLUMNS)
_LIVE_OF_ORDER = select(payments.c.id, payments.c.status).where(
    payments.c.order_id == bindparam("b_order"),
    payments.c.status.in_([s.value for s in LIVE_PAYMENT_STATUSES]),
)
_INITIATED = PaymentStatus.INITIATED.value
_TAKE_LEASE = (
    update(payments)
    .where(
        payments.c.id == bindparam("b_id"),
        payments.c.status == _INITIATED,
        payments.c.lease_expires_at.is_(None) | (payments.c.lease_expires_at < bindparam("b_now")),
    )
    .returning(*COLUMNS)
)
_RELEASE_LEASE = update(payments).where(
    payments.c.id == bindparam("b_id"), payments.c.status == _INITIATED
)
_KEEP_REFERENCE = update(payments).where(
    payments.c.id == bindparam("b_id"), payments.c.provider_reference.is_(None)
)


# On Postgres a payment's write and its timeline row go in one statement (timeline.with_event):
# a round trip fewer in each of the charge's two transactions.

# The columns claim_payment gives a new payment (the rest take their defaults).
_CLAIMED_COLUMNS = (
    "id", "order_id", "idempotency_key", "fingerprint", "amount", "currency", "payer_phone",
    "provider", "status", "lease_expires_at", "created_at", "updated_at",
)  # fmt: skip
_INSERT_PAYMENT_WITH_EVENT = with_event(
    postgresql.insert(payments)
    .values(
        {name: bindparam(f"p_{name}", type_=payments.c[name].type) for name in _CLAIMED_COLUMNS}
    )
    .on_conflict_do_nothing()
    .returning(*COLUMNS)
)
_RECORD_ANSWER_WITH_EVENT = with_event(
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


@dataclass(frozen=True, slots=True)
class ChargeResult:
    payment: Payment
    replayed: bool


@dataclass(frozen=True, slots=True)
class Claim:
    payment: Payment
    replayed: bool
    must_submit: bool  # this process holds the lease and must ask the provider


def charge_order(
    db: Transactional,
    provider: Provider,
    *,
    order_id: uuid.UUID,
    key: str | None,
    payer_phone: str | None = None,
    default_region: str,
    lease_seconds: float,
) -> ChargeResult:
    """Charge an order once per idempotency key; see the module docstring for the steps.

    Raises PaymentDeclined when the provider refused (now or on a replayed key),
    ProviderUnavailable when its answer is unknown (re-run the same key).
    """
    key = check_key(key)
    payer = normalise_phone(payer_phone, default_region) if payer_phone is not None else None
    with db.transaction() as conn:
        claim = claim_payment(
            conn, order_id=order_id, key=key, payer_phone=payer, provider=provider.name,
            lease=timedelta(seconds=lease_seconds),
        )  # fmt: skip
    payment = claim.payment
    if claim.must_submit:
        request = CollectionRequest(
            payment.id, payment.order_id, payment.amount, payment.payer_phone
        )
        try:
            answer = provider.request_payment(request)
        except ProviderUnavailable as error:
            with db.transaction() as conn:
                release_lease(conn, payment, error.message)
            raise
        except BaseException:
            # A bug or an interrupt: free the key for an immediate retry, then surface it.
            with db.transaction() as conn:
                release_lease(conn, payment, "interrupted")
            raise
        with db.transaction() as conn:
            payment = record_answer(conn, payment, answer)
    return finish(ChargeResult(payment, claim.replayed))


def finish(result: ChargeResult) -> ChargeResult:
    """A declined payment is an error for whoever charged, on a replay too."""
    payment = result.payment
    if payment.status is PaymentStatus.FAILED:
        raise PaymentDeclined(
            f"payment {payment.id} was declined: {payment.failure_reason or 'no reason given'}",
            payment=str(payment.id),
            reason=payment.failure_reason,
            replayed=result.replayed,
        )
    return result


def claim_payment(
    conn: Connection,
    *,
    order_id: uuid.UUID,
    key: str,
    payer_phone: str | None,
    provider: str,
    lease: timedelta,
) -> Claim:
    """Step 1: insert the payment as `initiated`, or resolve the key's earlier use."""
    row = conn.execute(_ORDER_FOR_CHARGE, {"b_order": order_id}).first()
    if row is None:
        raise OrderNotFound(f"order {order_id} does not exist", order=str(order_id))
    status, total, currency, customer_phone = row
    amount = Money(total, currency)
    payer = payer_phone or customer_phone
    fingerprint = charge_fingerprint(order_id, amount, payer)
    now = utcnow()

    if status != OrderStatus.PENDING:
        existing = find_by_key(conn, key)
        if existing is not None:
            return _resolve_existing(conn, existing, fingerprint, lease)
        if status == OrderStatus.PAID:
            raise OrderAlreadyPaid(f"order {order_id} is already paid", order=str(order_id))
        raise OrderCancelled(f"order {order_id} is cancelled", order=str(order_id))
    if amount.minor_units == 0:
        raise InvalidAmount(f"order {order_id} totals {amount}; there is nothing to charge")

    values = {
        "id": uuid.uuid4(),
        "order_id": order_id,
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "amount": amount.minor_units,
        "currency": amount.currency,
        "payer_phone": payer,
        "provider": provider,
        "status": PaymentStatus.INITIATED.value,
        "lease_expires_at": now + lease,
        "created_at": now,
        "updated_at": now,
    }
    detail = f"payment {values['id']} for {amount} from {mask_phone(payer)} via {provider}"
    if conn.dialect.name == "postgresql":
        params = {f"p_{name}": value for name, value in values.items()}
        params.update(e_at=now, e_event="payment_initiated", e_detail=detail)
        inserted = conn.execute(_INSERT_PAYMENT_WITH_EVENT, params).first()
    else:
        inserted = conn.execute(_INSERT_PAYMENT(conn), values).first()
        if inserted is not None:
            record_event(conn, order_id, "payment_initiated", detail, at=now)
    if inserted is not None:
        return Claim(from_row(inserted), replayed=False, must_submit=True)

    # Lost a race: either the key was claimed meanwhile, or another key holds the order.
    existing = find_by_key(conn, key)
    if existing is not None:
        return _resolve_existing(conn, existing, fingerprint, lease)
    live = conn.execute(_LIVE_OF_ORDER, {"b_order": order_id}).first()
    if live is not None and live.status == PaymentStatus.SUCCEEDED:
        raise OrderAlreadyPaid(f"order {order_id} is already paid", order=str(order_id))
    raise PaymentInProgress(
        f"order {order_id} already has a payment in progress"
        + (f" ({live.id}, {live.status})" if live is not None else "")
        + "; re-run its key to resume it, or wait for its outcome",
        order=str(order_id),
        payment=str(live.id) if live is not None else None,
    )


def _resolve_existing(
    conn: Connection, existing: Payment, fingerprint: str, lease: timedelta
) -> Claim:
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different charge "
            "(another order, amount or payer); use a new key",
            payment=str(existing.id),
        )
    if existing.status is not PaymentStatus.INITIATED:
        return Claim(existing, replayed=True, must_submit=False)
    # Resume an interrupted charge, but only one process at a time: take the lease if free.
    taken = take_lease(conn, existing.id, lease)
    if taken is None:
        raise IdempotencyKeyInUse(
            f"a charge with this key is in progress (payment {existing.id}); retry shortly",
            payment=str(existing.id),
        )
    record_event(conn, taken.order_id, "payment_resumed", f"payment {taken.id}")
    return Claim(taken, replayed=True, must_submit=True)


def take_lease(conn: Connection, payment_id: uuid.UUID, lease: timedelta) -> Payment | None:
    """Become the one process talking to the provider about an `initiated` payment, unless
    another holds an unexpired lease."""
    now = utcnow()
    params = {"b_id": payment_id, "b_now": now, "lease_expires_at": now + lease, "updated_at": now}
    taken = conn.execute(_TAKE_LEASE, params).first()
    return None if taken is None else from_row(taken)


def record_answer(conn: Connection, payment: Payment, answer: ProviderAnswer) -> Payment:
    """Step 3: `pending` if the provider accepted, `failed` if it refused."""
    if isinstance(answer, Accepted):
        target, reference, reason = PaymentStatus.PENDING, answer.provider_reference, None
        event, detail = "payment_pending", f"payment {payment.id} accepted by {payment.provider}"
    else:
        target, reference, reason = PaymentStatus.FAILED, None, answer.reason
        event, detail = "payment_failed", f"payment {payment.id} declined: {answer.reason}"
    moved = _move_answered(conn, payment, target, reference, reason, event, detail)
    if moved is None:
        # The outcome (a callback) got here before the provider's receipt did: keep the
        # provider's reference all the same.
        if isinstance(answer, Accepted):
            conn.execute(
                _KEEP_REFERENCE,
                {
                    "b_id": payment.id,
                    "provider_reference": answer.provider_reference,
                    "lease_expires_at": None,
                },
            )
        return get_payment(conn, payment.id)
    return moved


def _move_answered(
    conn: Connection,
    payment: Payment,
    target: PaymentStatus,
    reference: str | None,
    reason: str | None,
    event: str,
    detail: str,
) -> Payment | None:
    """initiated -> target, with its timeline row; None if the payment had moved on."""
    if conn.dialect.name != "postgresql":
        moved = move_payment(
            conn, payment.id, [PaymentStatus.INITIATED], target,
            provider_reference=reference, failure_reason=reason, lease_expires_at=None,
        )  # fmt: skip
        if moved is not None:
            record_event(conn, payment.order_id, event, detail)
        return moved
    if not payment_can_move(PaymentStatus.INITIATED, target):
        raise ValueError(f"payment transition initiated -> {target} is not allowed")
    now = utcnow()
    row = conn.execute(
        _RECORD_ANSWER_WITH_EVENT,
        {
            "b_id": payment.id,
            "v_status": target.value,
            "v_reference": reference,
            "v_reason": reason,
            "v_now": now,
            "e_at": now,
            "e_event": event,
            "e_detail": detail,
        },
    ).first()
    return None if row is None else from_row(row)


def release_lease(conn: Connection, payment: Payment, why: str) -> None:
    """Keep the payment `initiated` but let the next run of the key resume at once."""
    released = conn.execute(
        _RELEASE_LEASE, {"b_id": payment.id, "lease_expires_at": None, "updated_at": utcnow()}
    )
    if released.rowcount:
        record_event(
            conn, payment.order_id, "payment_submission_failed",
            f"payment {payment.id} stays initiated: {why}",
        )  # fmt: skip
