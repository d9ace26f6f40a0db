"""The notification outbox: the one package that writes the notifications table.

A row is inserted in the transaction that marks its payment succeeded, so there is no
notification without a payment and no payment without its notification. After that commit the
caller wakes the relay (wakeups.Nudger); the relay also polls, so a lost wake-up only delays.

A pending row is sent once `due_at` has come and no attempt holds it. An attempt claims the row
with a compare-and-set that counts it and sets `lease_until`; only the claim that holds the row
(its attempt number and lease) may record the outcome, so a second worker, a duplicate job or a
worker whose lease ran out never records over another's attempt; a message that went out is the
exception, recorded `sent` while its row is pending. `enqueued_at` is when the relay last handed
the row to RQ.
"""

from orderpay.store.outbox.attempts import (
    ANY_TRIES,
    claim_among,
    claim_next_due,
    fail_without_tries_left,
    record_outcomes,
)
from orderpay.store.outbox.rows import (
    PAYMENT_RECEIVED,
    REFUND_SENT,
    add_notification,
    insert_notification_from,
    mark_enqueued,
    mask_contacts,
    record_delivery,
    retry_notification,
    unmark_enqueued,
)

__all__ = [
    "ANY_TRIES",
    "PAYMENT_RECEIVED",
    "REFUND_SENT",
    "add_notification",
    "claim_among",
    "claim_next_due",
    "fail_without_tries_left",
    "insert_notification_from",
    "mark_enqueued",
    "mask_contacts",
    "record_delivery",
    "record_outcomes",
    "retry_notification",
    "unmark_enqueued",
]
