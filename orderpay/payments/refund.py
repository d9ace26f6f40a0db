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
from orderpay.domain.references import short_reference
from orderpay.domain.refundable import left_to_refund, refund_refusal
from orderpay.domain.reviews import FindingMoney
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
    RefundDeclined,
    RefundExceedsPayment,
    RefundUnconfirmed,
)
from orderpay.payments.life_cycle import Check, ask, check, leased_now
from orderpay.payments.mpesa_callbacks import apply_early_result
from orderpay.payments.refund_cycle import RefundCycle
from orderpay.providers.base import Provider
from orderpay.providers.capabilities import (
    ReferenceOwner,
    RefundMode,
    capabilities_of,
    refund_mode_for,
)
from orderpay.store import locks, refunds, reviews
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, get_payment
from orderpay.store.refund_rows import Refund


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
    modes = provider.refund_modes if provider is not None else None
    lease = timedelta(seconds=lease_seconds)
    claim = retrying(db, lambda conn: claim_refund(conn, ask, modes=modes, lease=lease))
    refund, queued = claim.refund, False
    if claim.must_submit:
        provider = provider or _refunding(provider_for, provider_name)
        refund = submit(db, provider, refund, claim.payment, resent=claim.replayed)
        by_callback = capabilities_of(provider.name).refund_results_by_callback
        if refund.status is RefundStatus.PENDING and by_callback:
            # No status call answers at once: a result may have come before this answer.
            pending = refund
            queued = retrying(db, lambda conn: apply_early_result(conn, pending, notify))
            with db.transaction() as conn:
                refund = refunds.get_refund(conn, refund.id)
        elif refund.status is RefundStatus.PENDING:
            confirmed = confirm_refund(db, provider, refund, claim.payment, notify, "refund", lease)
            queued = confirmed.notification_queued
            with db.transaction() as conn:
                refund = refunds.get_refund(conn, refund.id)
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
    # What the claim would refuse is refused before the operator is asked to confirm (a
    # fully refunded payment is not offered "Refund 0.00?").
    amount, _ = _refund_room(conn, payment, _requested(ask, payment))
    return RefundPreview(payment, amount, None)


def _refund_room(conn: Connection, payment: Payment, requested: Money | None) -> tuple[Money, int]:
    """The amount a new refund of `payment` gives back (`requested`, or all that is left) and
    what its refunds that did not fail already hold; PaymentNotRefundable or
    RefundExceedsPayment when it cannot."""
    _check_refundable(conn, payment)
    currency = payment.amount.currency
    committed = refunds.committed_total(conn, payment.id)
    remaining = Money(left_to_refund(payment.amount.minor_units, committed), currency)
    amount = requested if requested is not None else remaining
    if amount.minor_units <= 0 or amount.minor_units > remaining.minor_units:
        raise RefundExceedsPayment(
            f"payment {payment.id} of {payment.amount} has {remaining} left to refund (refunds "
            f"that did not fail: {Money(committed, currency)})"
            + (f"; {amount} is more" if requested is not None else ""),
            payment=str(payment.id),
            remaining=remaining.as_string(),
        )
    return amount, committed


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
    conn: Connection,
    ask: RefundAsk,
    *,
    modes: frozenset[RefundMode] | None,
    lease: timedelta,
) -> RefundClaim:
    """Step 1: insert the refund as `initiated`, or resolve the key's earlier use. `modes`:
    the refund modes the payment's provider allows here (None: a replay, which asks nothing of
    it)."""
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
    amount, committed = _refund_room(conn, payment, requested)
    if modes is not None:
        refund_mode_for(
            payment.provider,
            modes,
            payment_amount=payment.amount,
            amount=amount,
            refunded_before=committed,
            money_id=payment.provider_transaction_id,
        )
    now = utcnow()
    refund_id = uuid.uuid4()
    values = {
        "id": refund_id,
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
        # The catch-up first asks once the lease has run out, should this run not finish.
        "next_check_at": now + lease,
        "created_at": now,
        "updated_at": now,
        "sent_at": now,  # this run sends it next
    }
    if capabilities_of(payment.provider).reference_owner is ReferenceOwner.PROVIDER:
        values["our_reference"] = short_reference(refund_id)
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
    """domain.refundable's rule, on the payment and its open review items."""
    findings = reviews.open_items_of_payment(conn, payment.id)
    succeeded = payment.status is PaymentStatus.SUCCEEDED
    refusal = refund_refusal(succeeded, (item.money for item in findings))
    if refusal == "held":
        held = next(i for i in findings if i.money == FindingMoney.MAYBE_NOT_TAKEN.value)
        raise PaymentNotRefundable(
            f"payment {payment.id} is recorded {payment.status}, but its provider reported it "
            f"{held.reason} (review item {held.id}, open): no money may have been taken. Check "
            f"with {payment.provider}, resolve the item, then refund",
            payment=str(payment.id),
            review_item=held.id,
        )
    if refusal is not None:
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
    in_use = IdempotencyKeyInUse(
        f"a refund with this key is in progress (refund {existing.id}); retry shortly",
        refund=str(existing.id),
    )
    if existing.sent_at is not None and not capabilities_of(existing.provider).resend_safe:
        if leased_now(existing.lease_expires_at):
            raise in_use
        raise RefundUnconfirmed(
            f"refund {existing.id} was sent to {existing.provider} and its answer was lost; "
            f"{existing.provider} would pay it out again, so it is not re-sent: its result or "
            "the catch-up settles it, and if none comes it goes to the review queue",
            refund=str(existing.id),
        )
    # Resume an interrupted refund, one process at a time: take the lease if it is free.
    taken = refunds.take_lease(conn, existing.id, lease, operator=operator)
    if taken is None:
        raise in_use
    return RefundClaim(taken, payment, replayed=True, must_submit=True)


def submit(
    db: Transactional, provider: Provider, refund: Refund, payment: Payment, *, resent: bool
) -> Refund:
    """Steps 2 and 3 for a refund whose lease this process holds (life_cycle.ask). `resent`:
    an earlier run may have reached the provider."""
    return ask(db, provider, RefundCycle(refund, payment), resent=resent).refund


def confirm_refund(
    db: Transactional,
    provider: Provider,
    refund: Refund,
    payment: Payment,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
) -> Check:
    """Ask the provider once what became of a refund, and settle a definite answer; anything
    else leaves it as it is (the catch-up asks again)."""
    cycle = RefundCycle(refund, payment)
    return check(db, provider, cycle, notify=notify, source=source, lease=lease)
