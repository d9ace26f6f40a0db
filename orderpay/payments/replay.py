"""Running a webhook event through its service again (`orderpay webhook replay`).

A signed momo callback is applied again exactly as a copy from its sender would be: the
stored payload under the stored dedupe key, through callbacks.apply_callback. So an event kept
as `unmatched` is matched once its payment awaits an outcome, and any other event is a
duplicate that changes nothing. An MTN callback is a hint: replaying it asks MTN's status
call, as the listener does (confirmation.confirm_payment). Delivery reports are not replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from orderpay.errors import EventNotReplayable, NotFound, WebhookEventNotFound
from orderpay.payments.callbacks import MOMO_SOURCE, apply_callback, parse_callback
from orderpay.payments.confirmation import confirm_payment
from orderpay.payments.hints import MTN_SOURCE
from orderpay.payments.life_cycle import Check
from orderpay.payments.mpesa_callbacks import SOURCE as MPESA_SOURCE
from orderpay.payments.mpesa_callbacks import stored_hint
from orderpay.providers.base import Provider
from orderpay.store.db import Transactional, retrying
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import find_payment
from orderpay.store.webhook_events import StoredEvent, get_event

CONFIRMED = "confirmed"  # an MTN hint replayed: MTN's answer moved the payment
UNCHANGED = "unchanged"  # an MTN hint replayed: MTN's answer changed nothing


@dataclass(frozen=True, slots=True)
class Replayed:
    event_id: int
    source: str
    outcome: str  # momo: what the listener would answer (callbacks.Answer); mtn: CONFIRMED...
    payment_id: uuid.UUID | None
    notification_queued: bool = False  # an outbox row was written: wake the relay
    error: NotFound | None = None  # still unmatched: what the listener would answer (404)
    confirmation: Check | None = None  # what the payment's provider was asked and said


# Unsigned callbacks about a payment: replaying one asks the payment's provider again.
HINT_SOURCES = frozenset({MTN_SOURCE, MPESA_SOURCE})


def replay_event(
    db: Transactional,
    event_id: int,
    *,
    notify: NotifyTarget,
    provider_for: Callable[[str], Provider],
    lease: timedelta,
) -> Replayed:
    """Apply stored event `event_id` again; see the module docstring."""
    with db.transaction() as conn:
        event = get_event(conn, event_id)
    if event is None:
        raise WebhookEventNotFound(f"no webhook event has id {event_id}", event=event_id)
    if event.source == MOMO_SOURCE:
        return _replay_callback(db, event, notify, provider_for, lease)
    if event.source in HINT_SOURCES and event.payment_id is not None:
        return _replay_hint(db, event, event.payment_id, notify, provider_for, lease)
    raise EventNotReplayable(
        f"event {event.id} is a {event.source} event: only signed momo callbacks and MTN and "
        "M-Pesa callbacks about a payment can be replayed",
        event=event.id,
    )


def _replay_callback(
    db: Transactional,
    event: StoredEvent,
    notify: NotifyTarget,
    provider_for: Callable[[str], Provider],
    lease: timedelta,
) -> Replayed:
    callback = replace(parse_callback((event.payload or "").encode()), dedupe_key=event.dedupe_key)
    result = retrying(db, lambda conn: apply_callback(conn, callback, notify))
    confirmation = None
    if result.confirm is not None:  # about an MTN payment: MTN's status call decides
        payment = result.confirm
        confirmation = confirm_payment(
            db,
            provider_for(payment.provider),
            payment,
            notify=notify,
            lease=lease,
            source=f"replayed callback {event.id}, confirmed by status",
        )
    queued = result.notification_queued or bool(confirmation and confirmation.notification_queued)
    return Replayed(
        event.id,
        event.source,
        result.answer.value,
        result.payment_id,
        notification_queued=queued,
        error=result.error,
        confirmation=confirmation,
    )


def _replay_hint(
    db: Transactional,
    event: StoredEvent,
    payment_id: uuid.UUID,
    notify: NotifyTarget,
    provider_for: Callable[[str], Provider],
    lease: timedelta,
) -> Replayed:
    with db.transaction() as conn:
        payment = find_payment(conn, payment_id)
    if payment is None:  # the event's payment row is there: its foreign key says so
        raise WebhookEventNotFound(f"webhook event {event.id} names no payment")
    confirmation = confirm_payment(
        db,
        provider_for(payment.provider),
        payment,
        notify=notify,
        lease=lease,
        source=f"replayed {event.source} callback {event.id}, confirmed by status",
        hint=stored_hint(event.payload) if event.source == MPESA_SOURCE else None,
    )
    return Replayed(
        event.id,
        event.source,
        CONFIRMED if confirmation.changed else UNCHANGED,
        payment.id,
        notification_queued=confirmation.notification_queued,
        confirmation=confirmation,
    )
