"""The refund flow (DESIGN.md section 5): claim the key, ask the payment's provider, record.

The three steps of a charge, against the provider of the payment refunded:
1. one transaction locks the order, then the payment (store/locks.py), checks that the payment
   succeeded and that the refunds that did not fail stay within it, and inserts the refund as
   `initiated` with a lease (or resolves the key's earlier use);
2. outside any transaction the provider is asked to send it, the refund id as its reference;
3. one transaction records `pending`, or `failed` with the provider's reason; a `pending`
   refund's status is asked once (confirm_refund), and `orderpay reconcile` settles the rest.
A crash between the steps leaves `initiated`; once the lease runs out the same key (or
reconcile) asks again under the same reference, which the provider deduplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.idempotency import check_key, refund_fingerprint
from orderpay.domain.money import Money, currency_code, parse_amount
from orderpay.domain.states import PaymentStatus, RefundStatus
from orderpay.domain.validation import clean_name
from orderpay.errors import (
    ConcurrentUpdate,
    CurrencyMismatch,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidAmount,
    PaymentNotFound,
    PaymentNotRefundable,
    ProviderUnavailable,
    RefundDeclined,
    RefundExceedsPayment,
)
from orderpay.payments import review
from orderpay.payments.confirmation import reference_of
from orderpay.payments.refund_settlement import SettledRefund, settle_refund
from orderpay.providers.base import (
    Accepted,
    Provider,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    RemoteState,
)
from orderpay.store import locks, refunds, reviews
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, get_payment
from orderpay.store.refunds import Refund

REMOTE_OUTCOMES = {
    RemoteState.SUCCEEDED: RefundStatus.SUCCEEDED,
    RemoteState.FAILED: RefundStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund: Refund
    replayed: bool
    notification_queued: bool = False  # the caller wakes the relay after it


@dataclass(frozen=True, slots=True)
class RefundAsk:
    """What the operator asks for, checked for form (not yet against the payment)."""

    payment_id: uuid.UUID
    key: str
    amount: str | None  # major units in the payment's currency; None: what remains
    currency: str | None  # the currency the asker expects, checked against the payment's
    reason: str
    operator: str


@dataclass(frozen=True, slots=True)
class RefundClaim:
    refund: Refund
    payment: Payment
    replayed: bool
    must_submit: bool  # this process holds the lease and must ask the provider


def ask_for(
    payment_id: uuid.UUID,
    *,
    key: str | None,
    amount: str | None,
    currency: str | None,
    reason: str,
    operator: str,
) -> RefundAsk:
    """Check the form of a refund request before anything is read or stored."""
    return RefundAsk(
        payment_id,
        check_key(key),
        amount,
        currency_code(currency) if currency else None,
        clean_name(reason, "reason"),
        operator,
    )


def refund_payment(
    db: Transactional,
    provider_for: Callable[[str], Provider],
    ask: RefundAsk,
    *,
    lease_seconds: float,
    notify: NotifyTarget,
) -> RefundResult:
    """Refund (part of) a succeeded payment once per idempotency key; see the module docstring.

    Raises RefundDeclined when the provider refused or the refund failed (now or on a replayed
    key), ProviderUnavailable when its answer is unknown (re-run the same key).
    """
    with db.transaction() as conn:
        provider_name = get_payment(conn, ask.payment_id).provider
        known = refunds.find_by_key(conn, ask.key)
    # The payment's own provider, whatever ORDERPAY_PROVIDER says now; unconfigured here: a
    # configuration error before anything is stored. A replay (of a refund past `initiated`)
    # asks the provider nothing, so it needs none of its settings.
    replay = known is not None and known.status is not RefundStatus.INITIATED
    provider = None if replay else _refunding(provider_for, provider_name)
    partial = provider.partial_refunds if provider is not None else True
    lease = timedelta(seconds=lease_seconds)
    claim = retrying(db, lambda conn: claim_refund(conn, ask, partial=partial, lease=lease))
    refund, queued = claim.refund, False
    if claim.must_submit:
        provider = provider or _refunding(provider_for, provider_name)
        refund = submit(db, provider, refund, claim.payment, resumed=claim.replayed)
        if refund.status is RefundStatus.PENDING:
            settled = confirm_refund(db, provider, refund, claim.payment, notify, "refund")
            if settled is not None:
                refund, queued = settled.refund, settled.notification_queued
    return finish(RefundResult(refund, claim.replayed, queued))


def _refunding(provider_for: Callable[[str], Provider], name: str) -> Provider:
    provider = provider_for(name)
    provider.check_refunds_configured()
    return provider


def finish(result: RefundResult) -> RefundResult:
    """A refund that failed is an error for whoever asked for it, on a replay too."""
    refund = result.refund
    if refund.status is RefundStatus.FAILED:
        raise RefundDeclined(
            f"refund {refund.id} failed: {refund.failure_reason or 'no reason given'}; its "
            "amount is refundable again with a new key",
            refund=str(refund.id),
            payment=str(refund.payment_id),
            reason=refund.failure_reason,
            replayed=result.replayed,
        )
    return result


@dataclass(frozen=True, slots=True)
class RefundPreview:
    """What a refund would give back, for the operator's confirmation (nothing is locked)."""

    payment: Payment
    amount: Money  # asked for, or what remains refundable now; a known key: its refund's
    earlier: Refund | None  # the refund this key already made, if any


def preview(conn: Connection, ask: RefundAsk) -> RefundPreview:
    """The refund `ask` would make, read without locks: claim_refund decides for real."""
    payment = get_payment(conn, ask.payment_id)
    earlier = refunds.find_by_key(conn, ask.key)
    if earlier is not None and earlier.payment_id == payment.id:
        return RefundPreview(payment, earlier.amount, earlier)
    requested = _requested(ask, payment)
    left = payment.amount.minor_units - refunds.committed_total(conn, payment.id)
    amount = requested or Money(max(left, 0), payment.amount.currency)
    return RefundPreview(payment, amount, None)


def _requested(ask: RefundAsk, payment: Payment) -> Money | None:
    """The amount asked for in the payment's currency (None: what remains), checked."""
    currency = payment.amount.currency
    if ask.currency is not None and ask.currency != currency:
        raise CurrencyMismatch(
            f"payment {payment.id} is in {currency}, not {ask.currency}", currency=currency
        )
    requested = parse_amount(ask.amount, currency) if ask.amount is not None else None
    if requested is not None and requested.minor_units == 0:
        raise InvalidAmount("a refund must be of more than zero")
    return requested


def claim_refund(
    conn: Connection, ask: RefundAsk, *, partial: bool, lease: timedelta
) -> RefundClaim:
    """Step 1: insert the refund as `initiated`, or resolve the key's earlier use."""
    locked = locks.lock_payment(conn, ask.payment_id)  # the order's row, then the payment's
    if locked is None:
        raise PaymentNotFound(
            f"payment {ask.payment_id} does not exist", payment=str(ask.payment_id)
        )
    payment = locked.payment
    currency = payment.amount.currency
    requested = _requested(ask, payment)
    fingerprint = refund_fingerprint(payment.id, requested, currency)
    existing = refunds.find_by_key(conn, ask.key)
    if existing is not None:
        return _resolve_existing(conn, existing, payment, fingerprint, lease, ask.operator)
    _check_refundable(conn, payment)
    committed = refunds.committed_total(conn, payment.id)
    remaining = Money(payment.amount.minor_units - committed, currency)
    amount = requested if requested is not None else remaining
    if amount.minor_units <= 0 or amount.minor_units > remaining.minor_units:
        raise RefundExceedsPayment(
            f"payment {payment.id} of {payment.amount} has {remaining} left to refund (refunds "
            f"that did not fail: {Money(committed, currency)})"
            + (f"; {amount} is more" if requested is not None else ""),
            payment=str(payment.id),
            remaining=remaining.as_string(),
        )
    if not partial and amount != payment.amount:
        raise InvalidAmount(
            f"{payment.provider} refunds only the whole payment ({payment.amount}) at once"
        )
    now = utcnow()
    values = {
        "id": uuid.uuid4(),
        "payment_id": payment.id,
        "order_id": payment.order_id,
        "idempotency_key": ask.key,
        "fingerprint": fingerprint,
        "amount": amount.minor_units,
        "currency": currency,
        "provider": payment.provider,
        "status": RefundStatus.INITIATED.value,
        "reason": ask.reason,
        "operator": ask.operator,
        "lease_expires_at": now + lease,
        "created_at": now,
        "updated_at": now,
    }
    detail = (
        f"refund {values['id']} of {amount} of payment {payment.id} via {payment.provider}: "
        f"{ask.reason}"
    )
    inserted = refunds.insert_refund(conn, values, detail)
    if inserted is not None:
        return RefundClaim(inserted, payment, replayed=False, must_submit=True)
    # Lost a race for the key to a claim that committed meanwhile.
    existing = refunds.find_by_key(conn, ask.key)
    if existing is None:
        raise ConcurrentUpdate("the idempotency key changed hands meanwhile; retry")
    return _resolve_existing(conn, existing, payment, fingerprint, lease, ask.operator)


def _check_refundable(conn: Connection, payment: Payment) -> None:
    """A payment can be refunded when its provider took the money: it succeeded, or it is
    recorded otherwise but its provider reported it succeeded (a review item about its outcome:
    a success after a forced cancel, for a cancelled order, or for an order another payment
    paid). Not while an open item says the provider reports a succeeded payment failed: the
    operator decides first (resolve it), as no money may have been taken."""
    about = reviews.items_about(conn, review.outcome_subject(payment.id))
    if payment.status is PaymentStatus.SUCCEEDED:
        disputed = next((item for item in about if item.is_open), None)
        if disputed is not None:
            raise PaymentNotRefundable(
                f"payment {payment.id} succeeded but its provider reported it {disputed.reason}"
                f" (review item {disputed.id}, open): check with {payment.provider} whether the "
                f"money was taken, resolve the item, then refund",
                payment=str(payment.id),
                review_item=disputed.id,
            )
        return
    if not about:
        raise PaymentNotRefundable(
            f"payment {payment.id} is {payment.status}; only a payment its provider reports "
            "succeeded can be refunded",
            payment=str(payment.id),
        )


def _resolve_existing(
    conn: Connection,
    existing: Refund,
    payment: Payment,
    fingerprint: str,
    lease: timedelta,
    operator: str,
) -> RefundClaim:
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different refund (another payment or "
            "amount); use a new key",
            refund=str(existing.id),
        )
    if existing.status is not RefundStatus.INITIATED:
        return RefundClaim(existing, payment, replayed=True, must_submit=False)
    # Resume an interrupted refund, one process at a time: take the lease if it is free.
    taken = refunds.take_lease(conn, existing.id, lease, operator=operator)
    if taken is None:
        raise IdempotencyKeyInUse(
            f"a refund with this key is in progress (refund {existing.id}); retry shortly",
            refund=str(existing.id),
        )
    return RefundClaim(taken, payment, replayed=True, must_submit=True)


def submit(
    db: Transactional, provider: Provider, refund: Refund, payment: Payment, *, resumed: bool
) -> Refund:
    """Steps 2 and 3 for a refund whose lease this process holds. `resumed`: an earlier run
    may have reached the provider."""
    request = RefundRequest(refund.id, reference_of(payment), refund.amount, refund.reason)
    try:
        answer = provider.request_refund(request)
        if resumed and not isinstance(answer, Accepted):
            answer = _unless_held(provider, refund, payment, answer)
    except ProviderUnavailable as error:
        why = error.message
        retrying(db, lambda conn: refunds.release_lease(conn, refund, why))
        raise
    except BaseException:
        # A bug or an interrupt: free the key for an immediate retry, then surface it.
        retrying(db, lambda conn: refunds.release_lease(conn, refund, "interrupted"))
        raise
    return retrying(db, lambda conn: record_answer(conn, refund, answer))


def _unless_held(
    provider: Provider, refund: Refund, payment: Payment, refusal: ProviderAnswer
) -> ProviderAnswer:
    """A refusal of a resumed refund, believed only if the provider holds no refund under its
    reference: an earlier run's request may have reached it, and a provider that checks what
    remains refundable before it checks the reference refuses the copy of a refund it is
    paying out. Freeing that refund's amount could pay the customer twice."""
    held = provider.refund_status(refund_ref(refund, payment))
    if held.state is RemoteState.UNKNOWN:
        return refusal
    return Accepted(str(refund.id))


def record_answer(conn: Connection, refund: Refund, answer: ProviderAnswer) -> Refund:
    """Step 3: `pending` if the provider accepted, `failed` if it refused."""
    if isinstance(answer, Accepted):
        moved = refunds.move(
            conn,
            refund,
            RefundStatus.PENDING,
            event="refund_pending",
            reference=answer.provider_reference,
            detail=f"refund {refund.id} accepted by {refund.provider}",
        )
    else:
        moved = refunds.move(
            conn,
            refund,
            RefundStatus.FAILED,
            event="refund_failed",
            reason=answer.reason,
            detail=f"refund {refund.id} declined by {refund.provider}: {answer.reason}; its "
            "amount is refundable again",
        )
    if moved is not None:
        return moved
    # Its outcome got here before the provider's receipt did: keep the reference all the same.
    if isinstance(answer, Accepted):
        refunds.keep_reference(conn, refund.id, answer.provider_reference)
    return refunds.get_refund(conn, refund.id)


def refund_ref(refund: Refund, payment: Payment) -> RefundRef:
    return RefundRef(
        refund.id,
        refund.provider_reference,
        reference_of(payment),
        refund.amount,
        refund.created_at,
    )


def confirm_refund(
    db: Transactional,
    provider: Provider,
    refund: Refund,
    payment: Payment,
    notify: NotifyTarget,
    source: str,
) -> SettledRefund | None:
    """Ask the provider once what became of a refund, and settle on a final answer; None
    when there is none yet (or the provider cannot say now): it stays as it is."""
    try:
        answer = provider.refund_status(refund_ref(refund, payment))
    except ProviderUnavailable:
        return None
    target = REMOTE_OUTCOMES.get(answer.state)
    if target is None:
        return None
    return retrying(
        db,
        lambda conn: settle_refund(
            conn,
            refund.id,
            target,
            reason=answer.reason,
            amount=answer.amount,
            source=source,
            notify=notify,
            transaction_id=answer.transaction_id,
        ),
    )
