"""The catch-up (DESIGN.md section 5): every payment and refund whose provider has not given
its final word is asked again, on a schedule, until it does.

Each such row carries when it is next due (`next_check_at`: set when it is made, to when its
request's lease runs out). A worker claims a due row with a compare-and-set that moves that
time on by a lease, so each row is asked once per step however many workers run, and again
if the one asking dies; then it asks (life_cycle.check) and schedules the next step
(domain.schedule). A row past the deadline without a final answer opens a `no_final_answer`
review item. `orderpay reconcile` runs the same checks by hand, on every row awaiting an
answer, and says what it skipped and why.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection

from orderpay.clock import utcnow
from orderpay.domain.schedule import CatchUpSchedule
from orderpay.domain.times import age_text
from orderpay.errors import DatabaseUnavailable, OrderpayError
from orderpay.payments import review
from orderpay.payments.charge_cycle import ChargeCycle
from orderpay.payments.life_cycle import Action, Check, Cycle, busy, check
from orderpay.payments.mpesa_callbacks import callback_receipt
from orderpay.payments.refund_cycle import RefundCycle
from orderpay.providers.base import Provider
from orderpay.providers.capabilities import capabilities_of
from orderpay.store import ledger, locks, refunds
from orderpay.store import payments as payment_rows
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.outages import database_outage
from orderpay.store.payments import Payment, get_payment
from orderpay.store.refund_rows import Refund

log = logging.getLogger("orderpay.catch_up")

# Rows asked per round, and how long a claim lasts: longer than a provider's slowest answer.
ROUND = 50
CLAIM = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Skipped:
    kind: str
    item_id: uuid.UUID
    payment_id: uuid.UUID
    order_id: uuid.UUID
    status: str
    why: str


@dataclass(slots=True)
class Round:
    """What one round asked, and what it left alone and why."""

    checked: list[Check] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    overdue: list[uuid.UUID] = field(default_factory=list)  # given to an operator (review)

    @property
    def notification_queued(self) -> bool:
        return any(c.notification_queued for c in self.checked)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The provider calls, settlement and schedule a round of checks needs."""

    db: Transactional
    provider_for: Callable[[str], Provider]
    notify: NotifyTarget
    schedule: CatchUpSchedule
    lease: timedelta  # a resubmission holds the request's own lease this long

    def run_due(self, now: datetime | None = None, limit: int = ROUND) -> Round:
        """Ask about every payment and refund due now (at most `limit` of each)."""
        now = now or utcnow()
        done = Round()
        with self.db.transaction() as conn:
            due_payments = payment_rows.due_for_check(conn, now, limit)
            due_refunds = refunds.due_for_check(conn, now, limit)
        for payment in due_payments:
            self._due(done, payment, partial(ledger.claim_check, payment=payment))
        for refund in due_refunds:
            self._due(done, refund, partial(refunds.claim_check, refund=refund))
        return done

    def _due(
        self,
        done: Round,
        item: Payment | Refund,
        claim: Callable[..., datetime | None],
    ) -> None:
        # The claim and the next step count from when this item is asked, not from when the
        # round began: a round of slow answers outlasts a claim made at its start.
        claimed = retrying(self.db, lambda conn: claim(conn, now=utcnow(), lease=CLAIM))
        if claimed is None:
            return  # another worker asks this step
        cycle = self._cycle(item)
        asked = self._ask(done, cycle, source="catch-up", dry_run=False)
        kind, item_id = cycle.kind, cycle.item_id
        next_at = self.schedule.next_check(item.checks_made + 1, utcnow())
        schedule = ledger.schedule_check if kind == "payment" else refunds.schedule_check

        def reschedule(conn: Connection) -> None:
            schedule(conn, item_id, claimed, next_at)

        retrying(self.db, reschedule)
        overdue = self.schedule.overdue(item.created_at, utcnow())
        why = "past the deadline" if overdue else _answer_lost(cycle, item.created_at)
        if (
            asked is not None
            and not asked.definite
            and why
            and self._give_to_an_operator(cycle, asked, why)
        ):
            done.overdue.append(item_id)

    def reconcile(
        self,
        older_than: timedelta,
        limit: int,
        *,
        dry_run: bool,
        track: Callable[[Sequence[Payment | Refund]], Iterable[Payment | Refund]] = iter,
    ) -> Round:
        """`orderpay reconcile`: ask about every row awaiting an answer now, whatever its
        schedule, except those changed within `older_than` (their answer may be on its way).
        `track`: how the rows are walked (the CLI draws a progress bar)."""
        now = utcnow()
        done = Round()
        with self.db.transaction() as conn:
            items: list[Payment | Refund] = [
                *payment_rows.awaiting_answers(conn, limit),
                *refunds.awaiting_answers(conn, limit),
            ]
        for item in track(items):
            cycle = self._cycle(item)
            if item.updated_at > now - older_than:
                age = age_text(older_than)
                why = f"changed within {age} (--older-than): its answer may be coming"
                done.skipped.append(_skipped(cycle, why))
                continue
            self._ask(done, cycle, source="reconcile", dry_run=dry_run)
        return done

    def _cycle(self, item: Payment | Refund) -> Cycle:
        if isinstance(item, Payment):
            hint = None
            if capabilities_of(item.provider).receipt_from_callback:
                with self.db.transaction() as conn:
                    hint = callback_receipt(conn, item)
            return ChargeCycle(item, hint)
        with self.db.transaction() as conn:
            return RefundCycle(item, get_payment(conn, item.payment_id))

    def _ask(self, done: Round, cycle: Cycle, *, source: str, dry_run: bool) -> Check | None:
        """Check one row; None (and the reason kept) when it is not asked: its request is out
        now (that run records the answer), or its provider cannot be asked here."""
        if cycle.lease_held:
            done.skipped.append(_skipped(cycle, busy(cycle)))
            return None
        try:
            provider = self.provider_for(cycle.provider)
            if cycle.kind == "refund":
                provider.check_refunds_configured()
        except OrderpayError as error:
            done.skipped.append(_skipped(cycle, f"cannot ask {cycle.provider}: {error.message}"))
            return None
        asked = check(
            self.db,
            provider,
            cycle,
            notify=self.notify,
            source=source,
            lease=self.lease,
            dry_run=dry_run,
        )
        if asked.left_alone:
            done.skipped.append(_skipped(cycle, asked.note))
        else:
            done.checked.append(asked)
        return asked

    def _give_to_an_operator(self, cycle: Cycle, asked: Check, why: str) -> bool:
        """A `no_final_answer` item (once while open): what was asked, and the last answer."""
        reported = (
            f"{cycle.provider} asked about {cycle.kind} {cycle.item_id} ({cycle.state}) since "
            f"it was made, {why}; last answer: {asked.remote}"
            + (f" ({asked.note})" if asked.note else "")
        )

        def keep(conn: Connection) -> bool:
            locks.lock_order(conn, cycle.order_id)
            return review.keep_no_final_answer(
                conn,
                kind=cycle.kind,
                item_id=cycle.item_id,
                order_id=cycle.order_id,
                payment_id=cycle.payment_id,
                provider=cycle.provider,
                reported=reported,
            ).opened

        return retrying(self.db, keep)

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Rounds until `stop`: every `poll_seconds`, and at once while rows are due."""
        while not stop.is_set():
            began = database_outage().clock()
            try:
                done = self.run_due()
            except DatabaseUnavailable as error:  # the next round retries; said once
                database_outage().failed(f"catch-up paused: {error.message}")
                done = Round()
            except OrderpayError as error:
                log.warning("catch-up round failed: %s", error.message)
                done = Round()
            else:
                database_outage().recovered(began)
            for asked in done.checked:
                if asked.action is not Action.NONE:
                    log.info(
                        "%s %s: %s -> %s (%s)",
                        asked.kind,
                        asked.item_id,
                        asked.before,
                        asked.after,
                        asked.remote,
                    )
            if len(done.checked) + len(done.skipped) < ROUND:
                stop.wait(poll_seconds)


def oldest_awaiting(conn: Connection) -> datetime | None:
    """When the oldest payment or refund still awaiting its provider's final word was made."""
    made = [payment_rows.oldest_awaiting(conn), refunds.oldest_awaiting(conn)]
    return min((at for at in made if at is not None), default=None)


def _answer_lost(cycle: Cycle, created_at: datetime) -> str:
    """Why an item goes to an operator before the deadline: its request may have reached a
    provider that cannot take it twice, and the answer that would have come has not ("" if
    not so)."""
    capabilities = capabilities_of(cycle.provider)
    wait = capabilities.lost_answer_review_seconds
    if cycle.state != "initiated" or not cycle.sent or capabilities.resend_safe or wait is None:
        return ""
    if utcnow() - created_at < timedelta(seconds=wait):
        return ""
    return (
        f"its answer was lost and {cycle.provider} cannot take it twice, and no callback came "
        f"within {wait // 60} minutes: check the provider's portal for our reference"
    )


def _skipped(cycle: Cycle, why: str) -> Skipped:
    return Skipped(cycle.kind, cycle.item_id, cycle.payment_id, cycle.order_id, cycle.state, why)
