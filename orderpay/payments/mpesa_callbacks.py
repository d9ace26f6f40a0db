"""M-Pesa's callbacks (`POST /api/webhooks/mpesa/{path_token}/`): STK results, reversal and B2C
results, and C2B confirmations. Daraja signs nothing, so each is a hint, recorded once per
result however many copies arrive, before anything moves:

- An STK result names its CheckoutRequestID, and (in the URL we gave, `?ref=`) our short
  reference. A payment whose push answer was lost is found by that reference; the callback is
  its proof of acceptance (`initiated` -> `pending`, the CheckoutRequestID kept). The outcome
  is then confirmed by STK Query (http/confirmer.py) and only that answer settles it; the
  callback's receipt and amount are kept with a confirmed success.
- A reversal's or B2C's result is believed when it names the ConversationID M-Pesa returned to
  our request for that refund (known only to M-Pesa and us): it settles the refund. One that
  comes before that answer is kept (`early`) and applied once the answer names the same
  ConversationID (apply_early_result); one naming another is kept for an operator.
- Transaction Status's answer (the catch-up asks it about a refund whose result is missing)
  comes to a URL naming the refund: "Completed" for the refund's amount settles it.
- A C2B confirmation of a payment already recorded with that receipt is the same money seen
  twice (a PayBill with C2B URLs registered reports an STK payment both ways): recognised as a
  duplicate, never counted. For an open payment it is a hint like an STK result.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection

from orderpay.domain.answers import RemoteState
from orderpay.domain.money import Money
from orderpay.domain.states import OPEN_REFUND_STATUSES, PaymentStatus, RefundStatus
from orderpay.payments.refund_settlement import settle_refund
from orderpay.providers.base import StatusAnswer
from orderpay.providers.mpesa_answers import refund_result_state
from orderpay.providers.mpesa_messages import (
    MAX_FIELD,
    C2bConfirmation,
    Callback,
    RefundResult,
    StatusResult,
    StkResult,
)
from orderpay.store import ledger, locks, refunds, webhook_events
from orderpay.store.notifications import NotifyTarget
from orderpay.store.payments import (
    Payment,
    find_by_our_reference,
    find_by_provider_reference,
    find_by_transaction,
    to_confirm,
)
from orderpay.store.refund_rows import Refund

SOURCE = "mpesa"
SUCCESS_CODE = "0"
EARLY = "early"  # a refund result that came before its request's answer
PROVIDER = "mpesa"


@dataclass(frozen=True, slots=True)
class Received:
    """What recording a callback came to: its outcome, and the payment to confirm by STK Query
    (with what the callback said), if any."""

    outcome: str
    to_confirm: Payment | None = None
    hint: StatusAnswer | None = None
    notification_queued: bool = False


def record_callback(conn: Connection, callback: Callback, notify: NotifyTarget) -> Received:
    if isinstance(callback, StkResult):
        return _record_stk(conn, callback)
    if isinstance(callback, RefundResult):
        return _apply_refund_result(conn, callback, notify)
    if isinstance(callback, StatusResult):
        return _apply_status_result(conn, callback, notify)
    return _record_c2b(conn, callback)


def stk_key(checkout_id: str, result_code: str) -> str:
    """An STK result's key: one hint per checkout and result, however many copies come."""
    return f"stk:{checkout_id}:{result_code}"


def result_key(conversation_id: str) -> str:
    """A refund result's key: M-Pesa gives one result per request (its ConversationID)."""
    return f"result:{conversation_id}"


def callback_receipt(conn: Connection, payment: Payment) -> StatusAnswer | None:
    """What the success callback of a payment said, if one was recorded (its receipt and
    amount, which STK Query does not give): kept when the catch-up confirms the success."""
    if payment.provider_reference is None or payment.provider_transaction_id is not None:
        return None
    event = webhook_events.find_event(conn, SOURCE, stk_key(payment.provider_reference, "0"))
    return stored_hint(event.payload) if event is not None else None


def stored_hint(payload: str | None) -> StatusAnswer | None:
    """What a stored STK result said (`webhook replay` confirms it again, keeping its receipt
    and amount once STK Query agrees)."""
    try:
        fields = json.loads(payload or "")
    except ValueError:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("checkout"), str):
        return None
    amount = fields.get("amount")
    return StkResult(
        fields["checkout"],
        str(fields.get("result", "")),
        "",
        None,
        fields.get("receipt") if isinstance(fields.get("receipt"), str) else None,
        Money(int(Decimal(amount) * 100), "KES") if isinstance(amount, str) else None,
    ).as_hint()


def _record_stk(conn: Connection, result: StkResult) -> Received:
    payment = find_by_provider_reference(conn, PROVIDER, result.checkout_id)
    if payment is None and result.our_reference:
        lost = find_by_our_reference(conn, PROVIDER, result.our_reference)
        if lost is not None and lost.provider_reference is None:
            payment = _accepted_after_all(conn, lost, result.checkout_id)
    fields = {"checkout": result.checkout_id, "result": result.result_code}
    if result.receipt:
        fields["receipt"] = result.receipt
    if result.amount is not None:
        fields["amount"] = result.amount.as_string()
    if payment is None:
        recorded = webhook_events.record_once(
            conn,
            source=SOURCE,
            dedupe_key=stk_key(result.checkout_id, result.result_code),
            payload=json.dumps(fields, sort_keys=True),
            outcome="unmatched",
            order_id=None,
        )
        return Received("unmatched" if recorded else "duplicate")
    recorded = webhook_events.record_once(
        conn,
        source=SOURCE,
        dedupe_key=stk_key(result.checkout_id, result.result_code),
        payload=json.dumps(fields, sort_keys=True),
        outcome="to_confirm" if to_confirm(payment) else "duplicate",
        order_id=payment.order_id,
        payment_id=payment.id,
    )
    if not recorded:
        return Received("duplicate")
    if not to_confirm(payment):
        return Received("duplicate")
    return Received("to_confirm", payment, result.as_hint())


def _accepted_after_all(conn: Connection, payment: Payment, checkout_id: str) -> Payment:
    """The push's answer was lost, but its callback names our reference: M-Pesa took it."""
    if payment.status is not PaymentStatus.INITIATED:
        return payment
    moved = ledger.record_answer(
        conn,
        payment,
        PaymentStatus.PENDING,
        reference=checkout_id,
        reason=None,
        event="payment_pending",
        detail=f"payment {payment.id}: M-Pesa's callback names its CheckoutRequestID (the "
        "push's own answer was lost)",
    )
    return moved or payment


def _apply_refund_result(conn: Connection, result: RefundResult, notify: NotifyTarget) -> Received:
    refund = refunds.find_by_provider_reference(conn, PROVIDER, result.conversation_id)
    if refund is None and result.our_reference:
        refund = refunds.find_by_our_reference(conn, PROVIDER, result.our_reference)
    if refund is not None:
        # Under the payment's lock, as the refund flow's apply_early_result: a result either
        # sees the answer recorded, or is recorded early before that flow looks for it.
        locks.lock_payment(conn, refund.payment_id)
        refund = refunds.get_refund(conn, refund.id)
    believed = refund is not None and refund.provider_reference == result.conversation_id
    fields = {
        "conversation": result.conversation_id,
        "result": result.result_code,
        "description": result.description[:MAX_FIELD],
    }
    if result.transaction_id:
        fields["transaction"] = result.transaction_id
    state, reason = refund_result_state(result.result_code, result.description)
    if refund is None:
        outcome = "unmatched"
    elif believed and state in (RemoteState.SUCCEEDED, RemoteState.FAILED):
        outcome = "processed"
    elif not believed and refund.provider_reference is None:
        # Before its request's answer (or instead of a lost one): believed once the answer
        # names the same ConversationID (apply_early_result).
        outcome = EARLY
    else:
        outcome = "review"  # another ConversationID, or "already reversed": an operator decides
    recorded = webhook_events.record_once(
        conn,
        source=SOURCE,
        dedupe_key=result_key(result.conversation_id),
        payload=json.dumps(fields, sort_keys=True),
        outcome=outcome,
        order_id=refund.order_id if refund is not None else None,
        payment_id=refund.payment_id if refund is not None else None,
    )
    if not recorded:
        return Received("duplicate")
    if refund is None or outcome != "processed" or refund.status is not RefundStatus.PENDING:
        return Received(outcome)
    queued = _settle_refund(conn, refund.id, state, reason, result.transaction_id, notify)
    return Received(outcome, notification_queued=queued)


def _apply_status_result(conn: Connection, result: StatusResult, notify: NotifyTarget) -> Received:
    """A refund M-Pesa reports completed, for its amount, settles (the catch-up asked, and the
    answer came to the URL that names the refund); anything else is kept and moves nothing."""
    refund = refunds.find_by_our_reference(conn, PROVIDER, result.our_reference)
    if refund is not None:
        locks.lock_payment(conn, refund.payment_id)
        refund = refunds.get_refund(conn, refund.id)
    settles = (
        refund is not None
        and refund.status in OPEN_REFUND_STATUSES  # initiated: a payout whose answer was lost
        and result.result_code == SUCCESS_CODE
        and result.completed
        and result.amount == refund.amount
    )
    fields = {"result": result.result_code, "completed": result.completed}
    recorded = webhook_events.record_once(
        conn,
        source=SOURCE,
        dedupe_key=f"status:{result.conversation_id}",
        payload=json.dumps({**fields, "receipt": result.receipt}, sort_keys=True),
        outcome="processed" if settles else ("unchanged" if refund else "unmatched"),
        order_id=refund.order_id if refund is not None else None,
        payment_id=refund.payment_id if refund is not None else None,
    )
    if not recorded or not settles or refund is None:
        return Received("duplicate" if not recorded else "unchanged")
    queued = _settle_refund(conn, refund.id, RemoteState.SUCCEEDED, None, result.receipt, notify)
    return Received("processed", notification_queued=queued)


def apply_early_result(conn: Connection, refund: Refund, notify: NotifyTarget) -> bool:
    """Settle `refund` (its request's answer just recorded) on a result that arrived before
    that answer and names the same ConversationID; whether a notification was queued."""
    locks.lock_payment(conn, refund.payment_id)
    refund = refunds.get_refund(conn, refund.id)
    if refund.provider_reference is None or refund.status is not RefundStatus.PENDING:
        return False
    event = webhook_events.find_event(conn, SOURCE, result_key(refund.provider_reference))
    if event is None or event.outcome != EARLY:
        return False
    fields = json.loads(event.payload or "{}")
    code, said = str(fields.get("result")), str(fields.get("description", ""))
    state, reason = refund_result_state(code, said)
    definite = state in (RemoteState.SUCCEEDED, RemoteState.FAILED)
    outcome = "processed" if definite else "review"
    webhook_events.decide(conn, event.id, outcome, refund.order_id, refund.payment_id)
    if not definite:
        return False
    transaction = fields.get("transaction")
    return _settle_refund(conn, refund.id, state, reason, transaction, notify)


def _settle_refund(
    conn: Connection,
    refund_id: uuid.UUID,
    state: RemoteState,
    reason: str | None,
    transaction_id: str | None,
    notify: NotifyTarget,
) -> bool:
    settled = settle_refund(
        conn,
        refund_id,
        RefundStatus.SUCCEEDED if state is RemoteState.SUCCEEDED else RefundStatus.FAILED,
        reason=reason,
        amount=None,
        source="mpesa result",
        notify=notify,
        transaction_id=transaction_id,
    )
    return settled.notification_queued


def _record_c2b(conn: Connection, confirmation: C2bConfirmation) -> Received:
    fields = {"receipt": confirmation.receipt, "bill_reference": confirmation.bill_reference}
    same = find_by_transaction(conn, PROVIDER, confirmation.receipt)
    payment = same or (
        find_by_our_reference(conn, PROVIDER, confirmation.bill_reference)
        if confirmation.bill_reference
        else None
    )
    if same is not None or (payment is not None and not to_confirm(payment)):
        outcome = "duplicate"  # the STK payment's own C2B record: counted once
    elif payment is not None:
        outcome = "to_confirm"
    else:
        outcome = "unmatched"
    recorded = webhook_events.record_once(
        conn,
        source=SOURCE,
        dedupe_key=f"c2b:{confirmation.receipt}",
        payload=json.dumps(fields, sort_keys=True),
        outcome=outcome,
        order_id=payment.order_id if payment is not None else None,
        payment_id=payment.id if payment is not None else None,
    )
    if not recorded or outcome != "to_confirm" or payment is None:
        return Received(outcome if recorded else "duplicate")
    if payment.provider_reference is None:
        return Received(outcome)  # nothing to ask STK Query with: its STK callback will come
    hint = StatusAnswer(RemoteState.SUCCEEDED, None, confirmation.amount, confirmation.receipt)
    return Received(outcome, payment, hint)
