"""Resuming a refund key, and the edges of a refund's lease, on Postgres.

A resumed refund may already be at the provider: a refusal of its copy is believed only when
the provider holds no refund under its reference. A run whose provider call outlived its lease
leaves the lease of the run that took over alone. A replay asks the provider nothing, so it
needs none of the provider's settings. One refund is settled, and its customer told, once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from orderpay import clock
from orderpay.domain.states import RefundStatus
from orderpay.errors import ConfigurationError, ProviderUnavailable, RefundDeclined
from orderpay.payments.refund import ask_for, claim_refund, refund_payment
from orderpay.payments.refund_settlement import settle_refund
from orderpay.payments.settlement import Settled
from orderpay.providers.base import (
    Declined,
    ProviderAnswer,
    RefundRef,
    RefundRequest,
    RemoteState,
    StatusAnswer,
)
from orderpay.providers.capabilities import SIMULATOR
from orderpay.store import refunds
from orderpay.store.db import Database
from orderpay.store.notifications import NotifyTarget
from orderpay.store.refund_rows import Refund
from tests.refund_helpers import (
    LEASE_SECONDS,
    RecordingProvider,
    a_paid_payment,
    refund,
    refunds_of,
    timeline_of,
)

LEASE = timedelta(seconds=LEASE_SECONDS)


@dataclass
class RefusingCopies(RecordingProvider):
    """A provider that checks what remains refundable before it checks the reference: it
    refuses any request once it holds refunds of the whole payment, the copy of a refund it
    holds included. `holds`: the references of the refunds it took."""

    holds: set[uuid.UUID] = field(default_factory=set)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # reference -> its reason

    def request_refund(self, request: RefundRequest) -> ProviderAnswer:
        with self.lock:
            self.refund_requests.append(request)
            if self.holds:
                return Declined("NOT_ALLOWED")
            self.holds.add(request.reference)
        return self.inner.request_refund(request)

    def refund_status(self, refund: RefundRef) -> StatusAnswer:
        with self.lock:
            self.status_calls.append(refund)
            if refund.reference in self.failed:
                return StatusAnswer(RemoteState.FAILED, self.failed[refund.reference])
            if refund.reference not in self.holds:
                return StatusAnswer(RemoteState.UNKNOWN)
        return StatusAnswer(RemoteState.SUCCEEDED, amount=refund.amount)


def a_claimed_refund(db: Database, payment_id: uuid.UUID, key: str = "refund-1") -> Refund:
    """Step 1 of a refund of the whole payment, its process gone before step 2 was recorded."""
    ask = ask_for(
        payment_id, key=key, amount=None, currency=None, reason="damaged", operator="tester"
    )
    with db.transaction() as conn:
        return claim_refund(conn, ask, modes=SIMULATOR.refund_modes, lease=LEASE).refund


def test_a_resumed_refund_the_provider_holds_is_not_failed_by_its_refusal_of_the_copy(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    provider = RefusingCopies()
    claimed = a_claimed_refund(db, payment.id)
    provider.holds.add(claimed.id)  # the dead process's request reached the provider
    clock.advance(LEASE + timedelta(seconds=1))

    resumed = refund(db, provider, payment.id, key="refund-1", reason="damaged").refund

    assert (resumed.id, resumed.status) == (claimed.id, RefundStatus.SUCCEEDED)
    assert [r.reference for r in provider.status_calls][:1] == [claimed.id]


def test_a_resumed_refund_refused_while_its_status_is_unknown_stays_initiated(
    db: Database,
) -> None:
    # "Not found" may be a provider that has not caught up with the first request: the
    # refusal of the copy proves nothing, and failing the refund would free its amount.
    payment = a_paid_payment(db)
    provider = RefusingCopies()
    provider.holds.add(uuid.uuid4())  # another refund of the payment, not this one
    claimed = a_claimed_refund(db, payment.id)
    clock.advance(LEASE + timedelta(seconds=1))

    with pytest.raises(ProviderUnavailable, match="may yet go through"):
        refund(db, provider, payment.id, key="refund-1", reason="damaged")

    [stored] = refunds_of(db, payment.id)
    assert (stored.id, stored.status) == (claimed.id, RefundStatus.INITIATED)
    assert stored.lease_expires_at is None  # the next run (or the catch-up) asks again


def test_a_resumed_refund_refused_whose_status_is_a_definite_failure_is_failed(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    provider = RefusingCopies()
    provider.holds.add(uuid.uuid4())
    claimed = a_claimed_refund(db, payment.id)
    provider.failed[claimed.id] = "PAYEE_NOT_FOUND"  # the first request failed there
    clock.advance(LEASE + timedelta(seconds=1))

    with pytest.raises(RefundDeclined, match="PAYEE_NOT_FOUND"):
        refund(db, provider, payment.id, key="refund-1", reason="damaged")

    [stored] = refunds_of(db, payment.id)
    assert (stored.id, stored.status) == (claimed.id, RefundStatus.FAILED)


def test_a_run_whose_lease_ran_out_leaves_the_lease_of_the_run_that_took_over(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    first_run = a_claimed_refund(db, payment.id)
    clock.advance(LEASE + timedelta(seconds=1))
    with db.transaction() as conn:
        second_run = refunds.take_lease(conn, first_run.id, LEASE, operator="tester")
    assert second_run is not None

    with db.transaction() as conn:  # the first run's provider call times out at last
        refunds.release_lease(conn, first_run, "provider timed out")

    [stored] = refunds_of(db, payment.id)
    assert stored.lease_expires_at == second_run.lease_expires_at
    events = [e.event for e in timeline_of(db, payment.order_id)]
    assert "refund_submission_failed" not in events


def test_replaying_a_settled_refund_needs_none_of_the_providers_settings(db: Database) -> None:
    payment = a_paid_payment(db)
    first = refund(db, RecordingProvider(), payment.id, key="refund-1")

    def unconfigured(name: str) -> RecordingProvider:
        raise ConfigurationError(f"{name} refunds are not configured here")

    ask = ask_for(
        payment.id,
        key="refund-1",
        amount=None,
        currency=None,
        reason="customer returned the goods",
        operator="tester",
    )
    again = refund_payment(
        db, unconfigured, ask, lease_seconds=LEASE_SECONDS, notify=NotifyTarget()
    )

    assert (again.refund.id, again.replayed) == (first.refund.id, True)


def test_a_refund_settled_twice_queues_one_notification_and_one_success_event(
    db: Database,
) -> None:
    payment = a_paid_payment(db)
    provider = RecordingProvider()
    given = refund(db, provider, payment.id).refund
    assert given.status is RefundStatus.SUCCEEDED

    with db.transaction() as conn:  # reconcile, or a late status answer, says so again
        again = settle_refund(
            conn,
            given.id,
            RefundStatus.SUCCEEDED,
            reason=None,
            amount=given.amount,
            source="reconcile",
            notify=NotifyTarget(),
        )

    assert again.verdict is Settled.UNCHANGED
    events = [e.event for e in timeline_of(db, payment.order_id)]
    assert events.count("refund_succeeded") == 1
    assert events.count("notification_queued") == 2  # the payment's, and the refund's once
