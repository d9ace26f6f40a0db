"""The charge flow (DESIGN.md section 5): claim the key, ask the provider, record the answer.

Three steps, and the provider is called between transactions, never inside one:
1. one transaction claims the key by inserting the payment as `initiated` with a lease;
2. the provider is asked to collect, with the payment id as its reference;
3. one transaction records the answer: `pending`, or `failed` with the reason.
Steps 2 and 3 are the life cycle's (life_cycle.ask). A crash between the steps leaves
`initiated`; once the lease has run out, the same key resumes it (the provider treats the
repeated reference as "already submitted"), and the catch-up asks about it meanwhile.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select

from orderpay.clock import utcnow
from orderpay.domain.idempotency import charge_fingerprint, check_key
from orderpay.domain.money import Money
from orderpay.domain.phones import mask_phone, normalise_phone
from orderpay.domain.references import short_reference
from orderpay.domain.routing import route
from orderpay.domain.states import (
    LIVE_PAYMENT_STATUSES,
    OPEN_PAYMENT_STATUSES,
    PAID_ORDER_STATUSES,
    OrderStatus,
    PaymentStatus,
)
from orderpay.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidAmount,
    OrderAlreadyPaid,
    OrderCancelled,
    OrderNotFound,
    OrderpayError,
    PaymentDeclined,
    PaymentInProgress,
    PaymentUnconfirmed,
    ProviderBusy,
)
from orderpay.payments.charge_cycle import ChargeCycle
from orderpay.payments.life_cycle import ask, leased_now
from orderpay.providers.base import Provider
from orderpay.providers.capabilities import Capabilities, ReferenceOwner, capabilities_of
from orderpay.store import ledger, locks, order_events
from orderpay.store.db import Transactional, retrying
from orderpay.store.payments import Payment, find_by_key, recent_to_payer
from orderpay.store.schema import payments

# How long a prompt to a payer stays open at a provider that prompts one payer at a time (the
# payer answers or it times out; M-Pesa's ends within about a minute).
PROMPT_OPEN_SECONDS = 90

_LIVE_OF_ORDER = select(payments.c.id, payments.c.status).where(
    payments.c.order_id == bindparam("b_order"),
    payments.c.status.in_([s.value for s in LIVE_PAYMENT_STATUSES]),
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


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """How a new charge picks its provider: `explicit` (`--provider`), else the payer's network
    through `routes` (config: ORDERPAY_PROVIDER_ROUTES), else `default` (ORDERPAY_PROVIDER).
    A key used before keeps its payment's own provider."""

    provider_for: Callable[[str], Provider]
    routes: dict[tuple[str, str], str]
    default: str
    explicit: str | None = None

    def name_for(self, payer: str) -> str:
        name = self.explicit or route(payer, self.routes, self.default)
        self.provider_for(name)  # its settings are checked before anything is stored
        return name


def _fixed(provider: Provider) -> ProviderChoice:
    return ProviderChoice(lambda name: provider, {}, provider.name, provider.name)


def charge_order(
    db: Transactional,
    provider: Provider | ProviderChoice,
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
    lease = timedelta(seconds=lease_seconds)
    choice = provider if isinstance(provider, ProviderChoice) else _fixed(provider)
    claim = retrying(
        db,
        lambda conn: claim_payment(
            conn,
            order_id=order_id,
            key=key,
            payer_phone=payer,
            provider=choice.name_for,
            lease=lease,
        ),
    )
    payment = claim.payment
    if claim.must_submit:
        payment = submit(db, choice.provider_for(payment.provider), payment, resent=claim.replayed)
    return finish(ChargeResult(payment, claim.replayed))


def submit(db: Transactional, provider: Provider, payment: Payment, *, resent: bool) -> Payment:
    """Steps 2 and 3 for a payment whose lease this process holds (life_cycle.ask).
    `resent`: an earlier run may have reached the provider."""
    return ask(db, provider, ChargeCycle(payment), resent=resent).payment


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
    provider: str | Callable[[str], str],
    lease: timedelta,
) -> Claim:
    """Step 1: insert the payment as `initiated`, or resolve the key's earlier use.
    `provider`: its name, or how to pick it from the payer (ProviderChoice.name_for)."""
    row = locks.lock_order_for_charge(conn, order_id)
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
        if status in PAID_ORDER_STATUSES:
            raise OrderAlreadyPaid(f"order {order_id} is already paid", order=str(order_id))
        raise OrderCancelled(f"order {order_id} is cancelled", order=str(order_id))
    if amount.minor_units == 0:
        raise InvalidAmount(f"order {order_id} totals {amount}; there is nothing to charge")
    try:
        capabilities = _provider_takes(conn, provider, payer, amount, now, order_id)
    except OrderpayError:
        # A key used before keeps its own payment and provider, whatever the routes and the
        # provider's rules say of a new charge now.
        existing = find_by_key(conn, key)
        if existing is None:
            raise
        return _resolve_existing(conn, existing, fingerprint, lease)
    payment_id = uuid.uuid4()

    values = {
        "id": payment_id,
        "order_id": order_id,
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "amount": amount.minor_units,
        "currency": amount.currency,
        "payer_phone": payer,
        "provider": capabilities.name,
        "status": PaymentStatus.INITIATED.value,
        "lease_expires_at": now + lease,
        # The catch-up first asks once the lease has run out, should this run not finish.
        "next_check_at": now + lease,
        "created_at": now,
        "updated_at": now,
        "our_reference": short_reference(payment_id)
        if capabilities.reference_owner is ReferenceOwner.PROVIDER
        else None,
        "sent_at": now,  # this run sends it next
    }
    detail = f"payment {values['id']} for {amount} from {mask_phone(payer)} via {capabilities.name}"
    inserted = ledger.insert_payment(conn, values, detail)
    if inserted is not None:
        return Claim(inserted, replayed=False, must_submit=True)

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
        + "; re-run its key to resume it, wait for its outcome, or cancel it "
        "(`orderpay payment cancel`)",
        order=str(order_id),
        payment=str(live.id) if live is not None else None,
    )


def _provider_takes(
    conn: Connection,
    provider: str | Callable[[str], str],
    payer: str,
    amount: Money,
    now: datetime,
    order_id: uuid.UUID,
) -> Capabilities:
    """The provider of a new charge (named, or picked by the payer), once its record says it
    can take this amount from this payer now; the error that says why not, before anything is
    stored."""
    name = provider if isinstance(provider, str) else provider(payer)
    capabilities = capabilities_of(name)
    capabilities.check_amount(amount)
    capabilities.check_payer(payer)
    if capabilities.one_prompt_per_payer:
        _wait_for_payer(conn, capabilities, payer, amount, now, order_id)
    return capabilities


def _wait_for_payer(
    conn: Connection,
    capabilities: Capabilities,
    payer: str,
    amount: Money,
    now: datetime,
    order_id: uuid.UUID,
) -> None:
    """A provider that prompts one payer at a time refuses a second prompt while one is open,
    and the same amount again within its window (M-Pesa: "unable to lock subscriber", rule
    17). Refused here, before anything is stored or sent, saying when to try again; the payer's
    lock makes two charges to one payer take turns."""
    locks.lock_payer(conn, capabilities.name, payer)
    window = max(PROMPT_OPEN_SECONDS, capabilities.same_amount_window_seconds)
    for earlier in recent_to_payer(conn, capabilities.name, payer, now - timedelta(seconds=window)):
        age = (now - earlier.created_at).total_seconds()
        if earlier.order_id == order_id and earlier.status in OPEN_PAYMENT_STATUSES:
            continue  # the order's own live payment: its key resumes it, another key conflicts
        if earlier.status in OPEN_PAYMENT_STATUSES and age < PROMPT_OPEN_SECONDS:
            wait, why = PROMPT_OPEN_SECONDS - age, "has a prompt open"
        elif (
            earlier.amount == amount
            and earlier.sent_at is not None
            and age < capabilities.same_amount_window_seconds
        ):
            wait = capabilities.same_amount_window_seconds - age
            why = (
                f"was asked for {amount} less than {capabilities.same_amount_window_seconds} s ago"
            )
        else:
            continue
        raise ProviderBusy(
            f"payer {mask_phone(payer)} {why} (payment {earlier.id}); {capabilities.name} "
            f"refuses another until then: retry with the same key in {math.ceil(wait)} s",
            retry_after=math.ceil(wait),
            payment=str(earlier.id),
        )


def not_resent(payment: Payment) -> PaymentUnconfirmed:
    """Why an `initiated` payment whose answer was lost is not sent to its provider again."""
    return PaymentUnconfirmed(
        f"payment {payment.id} was sent to {payment.provider} and its answer was lost; sending "
        "it again would prompt the payer a second time, so it is not re-sent: its callback or "
        "the catch-up settles it, and if none comes it goes to the review queue "
        "(`orderpay payment show` follows it; `orderpay payment cancel` ends it)",
        payment=str(payment.id),
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
    in_use = IdempotencyKeyInUse(
        f"a charge with this key is in progress (payment {existing.id}); retry shortly",
        payment=str(existing.id),
    )
    if existing.sent_at is not None and not capabilities_of(existing.provider).resend_safe:
        if leased_now(existing.lease_expires_at):
            raise in_use
        raise not_resent(existing)
    # Resume an interrupted charge, but only one process at a time: take the lease if free.
    taken = ledger.take_lease(conn, existing.id, lease)
    if taken is None:
        raise in_use
    order_events.record_event(conn, taken.order_id, "payment_resumed", f"payment {taken.id}")
    return Claim(taken, replayed=True, must_submit=True)
