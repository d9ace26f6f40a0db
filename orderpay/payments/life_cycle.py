"""Charges and refunds: two directions of one life cycle (DESIGN.md sections 4 and 5).

claim (charge.py, refund.py) -> ask -> record -> settle -> catch up (catch_up.py). The steps
both directions share are here, once:
- `ask`: the provider is asked for an item whose lease this process holds, and its answer is
  recorded. A refusal of a re-sent request is believed only when the status call shows a
  definite failure (domain.answers): the first request may have gone through.
- `check`: its status is asked; a definite answer is settled; an `initiated` item the provider
  does not show settled is asked again under its own reference; anything else stays open.
What differs is a `Cycle`: one item's provider calls, writers and settlement (ChargeCycle in
charge.py, RefundCycle in refund.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, Self, TypeVar

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.answers import RemoteState, is_definite, refusal_stands
from orderpay.errors import ProviderUnavailable
from orderpay.payments.settlement import Settled
from orderpay.providers.base import Accepted, Declined, Provider, ProviderAnswer, StatusAnswer
from orderpay.providers.capabilities import capabilities_of
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget


class Action(StrEnum):
    """What checking an item did (or, in a dry run, would do)."""

    SETTLED = "settled"  # it took the provider's outcome (and its order moved, on success)
    RESUBMITTED = "resubmitted"  # an `initiated` item was asked of the provider again
    REVIEW = "review"  # the provider disagrees with our records: kept for review, nothing moved
    NONE = "none"  # nothing to do: no outcome yet, not asked, already settled


@dataclass(frozen=True, slots=True)
class Settling:
    """What settling an answer did: the verdict, the item's status after, a notification."""

    verdict: Settled
    after: str
    notification_queued: bool = False


class Cycle(Protocol):
    """One payment or refund as the life cycle handles it."""

    @property
    def kind(self) -> str: ...  # "payment" or "refund": how messages name it
    @property
    def provider(self) -> str: ...  # the name of its provider
    # Refunds ask the status once right after the provider accepts them; charges wait for
    # the callback (or the catch-up).
    @property
    def confirm_on_acceptance(self) -> bool: ...
    @property
    def item_id(self) -> uuid.UUID: ...
    @property
    def payment_id(self) -> uuid.UUID: ...
    @property
    def order_id(self) -> uuid.UUID: ...
    @property
    def state(self) -> str: ...  # its status's value
    @property
    def open(self) -> bool: ...  # not settled, or awaiting the provider's confirmation
    @property
    def lease_held(self) -> bool: ...  # another process is talking to its provider now
    @property
    def reference(self) -> str: ...  # what the provider knows it by
    @property
    def sent(self) -> bool: ...  # a request may have reached the provider

    def request(self, provider: Provider) -> ProviderAnswer: ...
    def status(self, provider: Provider) -> StatusAnswer: ...
    def take_lease(self, conn: Connection, lease: timedelta) -> Self | None: ...
    def release(self, conn: Connection, why: str, *, reached: bool = True) -> None: ...
    def record(self, conn: Connection, answer: ProviderAnswer) -> Self: ...
    def settle(
        self, conn: Connection, answer: StatusAnswer, notify: NotifyTarget, source: str
    ) -> Settling: ...
    def classify(self, conn: Connection, answer: StatusAnswer) -> Settled: ...


C = TypeVar("C", bound="Cycle")


def ask(db: Transactional, provider: Provider, cycle: C, *, resent: bool) -> C:
    """Ask the provider for the item (this process holds its lease) and record the answer.
    `resent`: an earlier run may have reached the provider. Raises ProviderUnavailable, the
    lease released and the item left `initiated`, when the answer is unknown."""
    try:
        answer = cycle.request(provider)
        if resent and isinstance(answer, Declined):
            answer = _unless_it_went_through(provider, cycle, answer)
    except ProviderUnavailable as error:
        why, reached = error.message, error.reached
        retrying(db, lambda conn: cycle.release(conn, why, reached=reached))
        raise
    except BaseException:
        # A bug or an interrupt: free the key for an immediate retry, then surface it.
        retrying(db, lambda conn: cycle.release(conn, "interrupted"))
        raise
    return retrying(db, lambda conn: cycle.record(conn, answer))


def _unless_it_went_through(provider: Provider, cycle: Cycle, refusal: Declined) -> ProviderAnswer:
    """A refusal of a re-sent request: a provider that checks a request before its reference
    refuses the copy of one it is acting on. The status call decides."""
    status = cycle.status(provider)
    if refusal_stands(resent=True, status=status.state):
        return Declined(status.reason or refusal.reason)
    if status.state in (RemoteState.SUCCEEDED, RemoteState.PENDING):
        return Accepted(cycle.reference)  # the first one went through; its outcome follows
    raise ProviderUnavailable(
        f"{cycle.provider} refused {cycle.kind} {cycle.item_id} sent again ({refusal.reason}) "
        f"and its status says {status.state}: the first request may yet go through, so it "
        "stays initiated and is asked again"
    )


@dataclass(frozen=True, slots=True)
class Check:
    """What checking one payment or refund found and did."""

    kind: str
    item_id: uuid.UUID
    payment_id: uuid.UUID
    order_id: uuid.UUID
    before: str
    after: str  # in a dry run: what it would be (a resubmission's is not known yet)
    remote: str  # what the provider said, or why it was not asked
    note: str = ""
    action: Action = Action.NONE
    dry_run: bool = False
    notification_queued: bool = False
    definite: bool = False  # the provider gave its final word
    left_alone: bool = False  # not asked, or its request is in progress: nothing to decide

    @property
    def changed(self) -> bool:
        return self.before != self.after


_VERDICTS = {
    Settled.APPLIED: ("", Action.SETTLED),
    Settled.UNCHANGED: ("already settled", Action.NONE),
    Settled.CONFLICT: ("provider disagrees with our records: kept for review", Action.REVIEW),
    Settled.MISMATCH: ("provider reports another amount: kept for review", Action.REVIEW),
}


def check(
    db: Transactional,
    provider: Provider,
    cycle: Cycle,
    *,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
    dry_run: bool = False,
) -> Check:
    """Ask the provider what became of an open item and act on it (see the module docstring).
    With `dry_run`, only the status call is made: the answer says what would be done."""
    if not cycle.open:
        return _not_asked(cycle, "already settled", dry_run)
    if cycle.provider != provider.name:
        # Asking MTN about a simulator payment (or the reverse) could resubmit it for real.
        return _not_asked(cycle, f"made through {cycle.provider}", dry_run)
    try:
        answer = cycle.status(provider)
    except ProviderUnavailable as error:
        return unchanged(cycle, "unavailable", error.message, dry_run)
    remote = answer.state.value
    if is_definite(answer.state):
        return _settle(db, cycle, answer, notify=notify, source=source, dry_run=dry_run)
    if cycle.state == "initiated":
        # No outcome, and we never recorded the provider's receipt: the request may never
        # have arrived. Asking again under the same reference is safe either way.
        return _resubmit(db, provider, cycle, remote, notify, source, lease, dry_run)
    said = f" (the provider says {answer.reason})" if answer.reason else ""
    return unchanged(cycle, remote, f"no outcome yet{said}", dry_run)


def _settle(
    db: Transactional,
    cycle: Cycle,
    answer: StatusAnswer,
    *,
    notify: NotifyTarget,
    source: str,
    dry_run: bool,
) -> Check:
    remote = answer.state.value
    if dry_run:  # the same decision, on the rows as they are, writing nothing
        with db.transaction() as conn:
            verdict = cycle.classify(conn, answer)
        after = remote if verdict is Settled.APPLIED else cycle.state
        settling = Settling(verdict, after)
    else:
        settling = retrying(db, lambda conn: cycle.settle(conn, answer, notify, source))
    note, action = _VERDICTS[settling.verdict]
    checked = _checked(cycle, settling.after, remote, note, action, dry_run)
    return replace(checked, notification_queued=settling.notification_queued, definite=True)


def _resubmit(
    db: Transactional,
    provider: Provider,
    cycle: Cycle,
    remote: str,
    notify: NotifyTarget,
    source: str,
    lease: timedelta,
    dry_run: bool,
) -> Check:
    """Ask the provider again for an `initiated` item, holding its lease like a resumed key.
    A dry run takes no lease and asks nothing: it says whether it would."""
    if cycle.lease_held:
        return replace(unchanged(cycle, remote, busy(cycle), dry_run), left_alone=True)
    if cycle.sent and not capabilities_of(cycle.provider).resend_safe:
        note = (
            f"its answer was lost and {cycle.provider} cannot take a request twice (the payer "
            "would be prompted again): not re-sent; waiting for its callback"
        )
        return replace(unchanged(cycle, remote, note, dry_run), left_alone=True)
    if dry_run:
        note = "would be submitted again under its own reference"
        return _checked(cycle, cycle.state, remote, note, Action.RESUBMITTED, True)
    held = retrying(db, lambda conn: cycle.take_lease(conn, lease))
    if held is None:
        return replace(unchanged(cycle, remote, busy(cycle), False), left_alone=True)
    try:
        after = ask(db, provider, held, resent=True)
    except ProviderUnavailable as error:
        return unchanged(cycle, "unavailable", error.message, False)
    if after.state == "pending" and after.confirm_on_acceptance:
        confirmed = check(db, provider, after, notify=notify, source=source, lease=lease)
        if confirmed.definite:
            return replace(confirmed, before=cycle.state, action=Action.RESUBMITTED)
    said = "declined" if after.state == "failed" else after.state
    return _checked(cycle, after.state, said, "resubmitted", Action.RESUBMITTED, False)


def busy(cycle: Cycle) -> str:
    return f"lease held: its request to {cycle.provider} is in progress"


def _not_asked(cycle: Cycle, why: str, dry_run: bool) -> Check:
    return replace(unchanged(cycle, "not asked", why, dry_run), left_alone=True)


def unchanged(cycle: Cycle, remote: str, note: str, dry_run: bool) -> Check:
    return _checked(cycle, cycle.state, remote, note, Action.NONE, dry_run)


def _checked(
    cycle: Cycle, after: str, remote: str, note: str, action: Action, dry_run: bool
) -> Check:
    return Check(
        cycle.kind,
        cycle.item_id,
        cycle.payment_id,
        cycle.order_id,
        cycle.state,
        after,
        remote,
        note,
        action,
        dry_run,
    )


def leased_now(lease_expires_at: datetime | None) -> bool:
    """Whether a lease is held now (an item's lease_expires_at)."""
    return lease_expires_at is not None and lease_expires_at >= utcnow()
