"""A refund as the life cycle handles it (life_cycle.Cycle): its provider calls, writers and
settlement, against the provider of the payment it gives back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from orderpay.domain.answers import RemoteState
from orderpay.domain.states import RefundStatus
from orderpay.payments.charge_cycle import reference_of
from orderpay.payments.life_cycle import Settling, leased_now
from orderpay.payments.refund_settlement import classify_refund, settle_refund
from orderpay.payments.settlement import Settled
from orderpay.providers.base import (
    Accepted,
    Provider,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    StatusAnswer,
)
from orderpay.store import refunds
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import Payment
from orderpay.store.refund_rows import Refund

OUTCOMES = {
    RemoteState.SUCCEEDED: RefundStatus.SUCCEEDED,
    RemoteState.FAILED: RefundStatus.FAILED,
}


def refund_ref(refund: Refund, payment: Payment) -> RefundRef:
    return RefundRef(
        refund.id,
        refund.provider_reference,
        reference_of(payment),
        refund.amount,
        refund.created_at,
        refund.our_reference,
    )


@dataclass(frozen=True, slots=True)
class RefundCycle:
    refund: Refund
    payment: Payment  # the payment it gives back
    kind: str = "refund"
    confirm_on_acceptance: bool = True

    @property
    def provider(self) -> str:
        return self.refund.provider

    @property
    def item_id(self) -> uuid.UUID:
        return self.refund.id

    @property
    def payment_id(self) -> uuid.UUID:
        return self.refund.payment_id

    @property
    def order_id(self) -> uuid.UUID:
        return self.refund.order_id

    @property
    def state(self) -> str:
        return self.refund.status.value

    @property
    def open(self) -> bool:
        return self.refund.is_open

    @property
    def lease_held(self) -> bool:
        return leased_now(self.refund.lease_expires_at)

    @property
    def reference(self) -> str:
        return self.refund.provider_reference or str(self.refund.id)

    def request(self, provider: Provider) -> ProviderAnswer:
        refund = self.refund
        return provider.request_refund(
            RefundRequest(
                refund.id,
                reference_of(self.payment),
                refund.amount,
                refund.reason,
                refund.our_reference,
            )
        )

    def status(self, provider: Provider) -> StatusAnswer:
        return provider.refund_status(refund_ref(self.refund, self.payment))

    def take_lease(self, conn: Connection, lease: timedelta) -> RefundCycle | None:
        taken = refunds.take_lease(conn, self.refund.id, lease, operator=None)
        return None if taken is None else RefundCycle(taken, self.payment)

    @property
    def sent(self) -> bool:
        return self.refund.sent_at is not None

    def release(self, conn: Connection, why: str, *, reached: bool = True) -> None:
        refunds.release_lease(conn, self.refund, why, reached=reached)

    def record(self, conn: Connection, answer: ProviderAnswer) -> RefundCycle:
        """`pending` if the provider accepted, `failed` if it refused."""
        refund = self.refund
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
            return RefundCycle(moved, self.payment)
        # Its outcome got here before the provider's receipt did: keep the reference anyway.
        if isinstance(answer, Accepted):
            refunds.keep_reference(conn, refund.id, answer.provider_reference)
        return RefundCycle(refunds.get_refund(conn, refund.id), self.payment)

    def settle(
        self, conn: Connection, answer: StatusAnswer, notify: NotifyTarget, source: str
    ) -> Settling:
        settled = settle_refund(
            conn,
            self.refund.id,
            OUTCOMES[answer.state],
            reason=answer.reason,
            amount=answer.amount,
            source=source,
            notify=notify,
            transaction_id=answer.transaction_id,
        )
        return Settling(settled.verdict, settled.refund.status.value, settled.notification_queued)

    def classify(self, conn: Connection, answer: StatusAnswer) -> Settled:
        return classify_refund(self.refund, OUTCOMES[answer.state], answer.amount)
