"""A charge as the life cycle handles it (life_cycle.Cycle): its provider calls, writers and
settlement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import Connection

from orderpay.domain.answers import RemoteState
from orderpay.domain.states import PaymentStatus
from orderpay.payments.life_cycle import Settling, leased_now
from orderpay.payments.settlement import Report, Settled, classify, settle
from orderpay.providers.base import (
    Accepted,
    CollectionRequest,
    PaymentRef,
    Provider,
    ProviderAnswer,
    StatusAnswer,
)
from orderpay.store import ledger, locks
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment, get_payment, to_confirm

OUTCOMES = {
    RemoteState.SUCCEEDED: PaymentStatus.SUCCEEDED,
    RemoteState.FAILED: PaymentStatus.FAILED,
}


def reference_of(payment: Payment) -> PaymentRef:
    return PaymentRef(
        payment.id,
        payment.provider_reference,
        payment.order_id,
        payment.amount,
        payment.payer_phone,
        payment.created_at,
        payment.provider_transaction_id,
    )


@dataclass(frozen=True, slots=True)
class ChargeCycle:
    payment: Payment
    # What an unsigned callback said (its receipt and amount): kept once the provider's own
    # status call confirms the outcome, which M-Pesa's STK Query gives without them.
    hint: StatusAnswer | None = None
    kind: str = "payment"
    confirm_on_acceptance: bool = False

    @property
    def provider(self) -> str:
        return self.payment.provider

    @property
    def item_id(self) -> uuid.UUID:
        return self.payment.id

    @property
    def payment_id(self) -> uuid.UUID:
        return self.payment.id

    @property
    def order_id(self) -> uuid.UUID:
        return self.payment.order_id

    @property
    def state(self) -> str:
        return self.payment.status.value

    @property
    def open(self) -> bool:
        return to_confirm(self.payment)

    @property
    def lease_held(self) -> bool:
        return leased_now(self.payment.lease_expires_at)

    @property
    def reference(self) -> str:
        return self.payment.provider_reference or str(self.payment.id)

    def request(self, provider: Provider) -> ProviderAnswer:
        payment = self.payment
        return provider.request_payment(
            CollectionRequest(
                payment.id,
                payment.order_id,
                payment.amount,
                payment.payer_phone,
                payment.our_reference,
            )
        )

    def status(self, provider: Provider) -> StatusAnswer:
        answer = provider.payment_status(reference_of(self.payment))
        hint = self.hint
        if hint is not None and answer.state is hint.state is RemoteState.SUCCEEDED:
            return replace(
                answer,
                amount=answer.amount or hint.amount,
                transaction_id=answer.transaction_id or hint.transaction_id,
            )
        return answer

    def take_lease(self, conn: Connection, lease: timedelta) -> ChargeCycle | None:
        taken = ledger.take_lease(conn, self.payment.id, lease)
        return None if taken is None else ChargeCycle(taken)

    @property
    def sent(self) -> bool:
        return self.payment.sent_at is not None

    def release(self, conn: Connection, why: str, *, reached: bool = True) -> None:
        ledger.release_lease(conn, self.payment, why, reached=reached)

    def record(self, conn: Connection, answer: ProviderAnswer) -> ChargeCycle:
        """`pending` if the provider accepted, `failed` if it refused."""
        payment = self.payment
        if isinstance(answer, Accepted):
            moved = ledger.record_answer(
                conn,
                payment,
                PaymentStatus.PENDING,
                reference=answer.provider_reference,
                reason=None,
                event="payment_pending",
                detail=f"payment {payment.id} accepted by {payment.provider}",
            )
        else:
            moved = ledger.record_answer(
                conn,
                payment,
                PaymentStatus.FAILED,
                reference=None,
                reason=answer.reason,
                event="payment_failed",
                detail=f"payment {payment.id} declined: {answer.reason}",
            )
        if moved is not None:
            return ChargeCycle(moved)
        # The outcome (a callback) got here before the provider's receipt did: keep the
        # provider's reference all the same.
        if isinstance(answer, Accepted):
            ledger.keep_reference(conn, payment.id, answer.provider_reference)
        return ChargeCycle(get_payment(conn, payment.id))

    def settle(
        self, conn: Connection, answer: StatusAnswer, notify: NotifyTarget, source: str
    ) -> Settling:
        locked = locks.lock_payment(conn, self.payment.id)
        assert locked is not None, "payments are never deleted"
        verdict = settle(conn, locked, _report(answer, source), notify)
        if verdict is not Settled.APPLIED:
            return Settling(verdict, locked.payment.status.value)
        target = OUTCOMES[answer.state]
        return Settling(verdict, target.value, target is PaymentStatus.SUCCEEDED)

    def classify(self, conn: Connection, answer: StatusAnswer) -> Settled:
        # Reads without locking: a dry run must not hold up callbacks and charges.
        locked = locks.peek_payment(conn, self.payment.id)
        assert locked is not None, "payments are never deleted"
        return classify(locked, _report(answer, "reconcile"))


def _report(answer: StatusAnswer, source: str) -> Report:
    return Report(
        OUTCOMES[answer.state],
        source,
        reason=answer.reason,
        amount=answer.amount,
        transaction_id=answer.transaction_id,
    )
